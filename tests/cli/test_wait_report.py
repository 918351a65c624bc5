"""The `--wait` report's formatter on its own: the terminal path on a string buffer (`isatty` is an
argument), with rank states folded from real contract events."""

from __future__ import annotations

import io
from types import SimpleNamespace

from tui.cli.wait_report import WaitReport, progress_line
from tui.core.logs.buffers import RankState
from tui.core.service import StateEntry
from worker.contract import make_event


def _record(state: str, history: list[StateEntry], num_ranks: int = 2):
    return SimpleNamespace(id=7, state=state, history=tuple(history), num_ranks=num_ranks,
                           spec={"batch_sizes": [1, 4]}, started_at=history[-1].at)


def _ranks(*events) -> dict[int, RankState]:
    states: dict[int, RankState] = {}
    for event in events:
        states.setdefault(event["rank"], RankState(event["rank"])).apply(event)
    return states


def test_progress_line_names_each_rank_and_joins_equal_neighbours():
    ranks = _ranks(make_event("phase", 0, phase="measure", batch_size=4),
                   make_event("progress", 0, batch_size=4, tokens_done=8, tokens_expected=32),
                   make_event("phase", 1, phase="load"), make_event("phase", 2, phase="load"))
    record = _record("RUNNING", [StateEntry("RUNNING", 1000.0)], num_ranks=4)
    line = progress_line(record, ranks, now=1065.0)
    # bs=4 is the second of the spec's two batch sizes
    assert line == "RUNNING 01:05 · r0 measure bs=4 (2/2) 8/32 tok · r1-2 load · r3 no event yet"


def test_terminal_report_throttles_and_wipes_its_line_before_a_state_line():
    clock = iter([0.0, 0.3, 1.5]).__next__
    out = io.StringIO()
    report = WaitReport(out, isatty=True, width=40, every_s=1.0, monotonic=clock)
    running = _record("RUNNING", [StateEntry("DRAFT", 1.0), StateEntry("PENDING", 2.0, "Priority"),
                                  StateEntry("RUNNING", 3.0)])
    report.states(running)
    ranks = _ranks(make_event("phase", 0, phase="warmup\x1b[2J", batch_size=1))
    report.progress(running, ranks)
    report.progress(running, ranks)  # 0.3 s later: not drawn again
    assert out.getvalue().count("\r") == 1
    report.progress(running, _ranks(make_event("phase", 0, phase="measure", batch_size=1)))
    done = _record("COMPLETED", [*running.history, StateEntry("COMPLETED", 9.0)])
    report.states(done)
    text = out.getvalue()
    assert "\x1b" not in text  # a control character from the events is shown, not obeyed
    lines = text.split("\n")
    assert [line.split()[-1] for line in lines[:2]] == ["(Priority)", "RUNNING"]
    drawn, wiped_then_completed = lines[2].rsplit("\r", 1)[0], lines[2].rsplit("\r", 1)[1]
    assert all(len(piece) <= 39 for piece in drawn.split("\r"))
    assert wiped_then_completed.split()[-1] == "COMPLETED" and lines[3] == ""


def test_a_pipe_gets_state_lines_only():
    out = io.StringIO()
    report = WaitReport(out, isatty=False)
    record = _record("RUNNING", [StateEntry("PENDING", 2.0), StateEntry("RUNNING", 3.0)])
    report.states(record)
    report.progress(record, _ranks(make_event("phase", 0, phase="load")))
    report.states(record)  # nothing new: nothing printed
    assert [line.split()[2:] for line in out.getvalue().splitlines()] == [["7", "PENDING"], ["7", "RUNNING"]]


def test_a_new_reason_for_the_same_state_gets_its_own_line():
    """Slurm changes a pending job's reason without a state change (Priority, then Resources); the
    history holds the state change only, the record its latest reason."""
    out = io.StringIO()
    report = WaitReport(out, isatty=False)
    history = [StateEntry("PENDING", 2.0, "Priority")]
    report.states(SimpleNamespace(**vars(_record("PENDING", history)), state_reason="Priority"))
    report.states(SimpleNamespace(**vars(_record("PENDING", history)), state_reason="Resources"))
    report.states(SimpleNamespace(**vars(_record("PENDING", history)), state_reason="Resources"))
    running = [*history, StateEntry("RUNNING", 5.0)]
    report.states(SimpleNamespace(**vars(_record("RUNNING", running)), state_reason=None))
    assert [line.split()[3:] for line in out.getvalue().splitlines()] == [
        ["PENDING", "(Priority)"], ["PENDING", "(Resources)"], ["RUNNING"]]
