"""The app's headless pieces: routing log chunks by rank, the merged order, bounded buffers with
filters, rank progress and staleness, and the new-run form's checks."""

from __future__ import annotations

import json
import re
import time

from remote.cluster import LogChunk
from tui.core.logs.buffers import LogBuffer, RankState, RunLogs
from tui.core.logs.routing import classify_path, leading_timestamp, route_chunks
from tui.core.run_form import RunForm, check_form
from worker import contract


def chunk(path: str, lines: list[str]) -> LogChunk:
    return LogChunk(path, 0, sum(len(line) + 1 for line in lines), lines)


def test_files_are_recognised_by_the_contract_names():
    assert classify_path("/o/" + contract.events_file(3)) == (3, "events")
    assert classify_path("/o/" + contract.log_file(0)) == (0, "log")
    assert classify_path("/l/" + contract.launcher_log_file("1234", 7)) == (7, "launcher")
    assert classify_path("/o/result.json") is None


def test_timestamps_in_the_formats_seen():
    assert leading_timestamp("[2026-11-26T20:00:01.5] x") == time.mktime((2026, 11, 26, 20, 0, 1, 0, 0, -1)) + 0.5
    assert leading_timestamp("1795723907.25 rank 0") == 1795723907.25
    today = time.strftime("%H:%M:%S")
    assert abs(leading_timestamp(f"{today} rank 0 phase init") - time.time()) < 2
    assert leading_timestamp("Traceback (most recent call last):") is None


def test_merged_view_orders_ranks_by_time_and_keeps_untimed_lines_with_their_file():
    batch = route_chunks(
        [
            chunk("/l/9-rank0.out", ["1795723900.0 a0", "1795723902.0 c0", "  continuation of c0"]),
            chunk("/l/9-rank1.out", ["1795723901.0 b1", "1795723903.0 d1"]),
        ],
        {},
    )
    assert batch.merged_lines == [
        "[r0] 1795723900.0 a0", "[r1] 1795723901.0 b1", "[r0] 1795723902.0 c0",
        "[r0]   continuation of c0", "[r1] 1795723903.0 d1",
    ]
    assert batch.rank_lines[1] == ["1795723901.0 b1", "1795723903.0 d1"]
    assert batch.offsets["/l/9-rank0.out"] > 0


def test_events_drive_progress_and_errors_show_in_the_log():
    lines = [
        json.dumps(contract.make_event("progress", 1, batch_size=4, tokens_done=3, tokens_expected=16)),
        "{partial",
        json.dumps(contract.make_event("error", 1, message="peer lost", traceback="...")),
    ]
    batch = route_chunks([chunk("/o/" + contract.events_file(1), lines)], {})
    assert [event["kind"] for event in batch.events] == ["progress", "error"]
    assert batch.rank_lines[1][0].endswith("ERROR (event) peer lost")
    logs = RunLogs()
    logs.apply(batch)
    state = logs.rank_state(1)
    assert (state.batch_size, state.tokens_done, state.tokens_expected) == (4, 3, 16)
    assert state.phase == "failed" and state.error == "peer lost"


def test_control_characters_are_made_harmless():
    batch = route_chunks([chunk("/l/9-rank0.out", ["red \x1b[31mtext\x07\tend"])], {})
    line = batch.rank_lines[0][0]
    assert "\x1b" not in line and "\x07" not in line and "\t" not in line


def test_buffer_is_bounded_counts_everything_and_filters():
    buffer = LogBuffer(max_lines=1000)
    for start in range(0, 100_000, 500):
        buffer.extend([f"line {i} {'WARN' if i % 10 == 0 else 'ok'}" for i in range(start, start + 500)])
    assert len(buffer.lines) == 1000 and buffer.received == 100_000
    assert buffer.lines[-1] == "line 99999 ok" and buffer.dropped_from_memory == 99_000
    buffer.set_filter(re.compile("WARN"))
    assert len(buffer.visible) == 100 and all("WARN" in line for line in buffer.visible)
    buffer.extend(["line 100000 WARN", "line 100001 ok"])
    assert buffer.visible[-1] == "line 100000 WARN"
    buffer.set_filter(None)
    assert buffer.visible[-1] == "line 100001 ok"


def test_a_rank_is_stale_after_three_missed_heartbeats_unless_done():
    state = RankState(0)
    state.apply({"kind": "heartbeat", "ts": 1000.0, "rank": 0})
    assert not state.is_stale(now=1010.0)
    assert state.is_stale(now=1016.0)
    state.apply({"kind": "phase", "phase": "done", "ts": 1001.0, "rank": 0})
    assert not state.is_stale(now=2000.0)
    never_started = RankState(1)
    assert not never_started.is_silent(running_since=1000.0, now=1030.0)
    assert never_started.is_silent(running_since=1000.0, now=1100.0)


def test_form_problems_land_under_their_fields():
    checked = check_form(RunForm(nodes="0", batch_sizes="1,two", time_limit="1h", account="a b"))
    assert set(checked.problems) == {"nodes", "batch_sizes", "time_limit", "account"}
    # The worker's own rules (RunSpec.problems) map to form fields too.
    checked = check_form(RunForm(mode="single", ranks_per_node="2"))
    assert "exactly one rank" in checked.problems["mode"]
    checked = check_form(RunForm(mode="pp", nodes="1", ranks_per_node="8", model_config="tiny"))
    assert "only 4 layers" in checked.problems["ranks_per_node"]
    checked = check_form(RunForm(mode="tp", ranks_per_node="3"))
    assert "do not divide" in checked.problems["ranks_per_node"]
    checked = check_form(RunForm(source="checkpoint", checkpoint=""))
    assert "checkpoint" in checked.problems


def test_a_valid_form_gives_the_spec_and_resources():
    checked = check_form(RunForm(
        name="pp-four", mode="pp", nodes="2", ranks_per_node="2", gpus_per_node="2", batch_sizes="1, 2 4",
        micro_batches="1", partition="gpu", time_limit="0:30:00", container_image="/img/dinf.sif",
    ))
    assert checked.ok, checked.problems
    assert checked.spec.batch_sizes == [1, 2, 4] and checked.spec.mode == "pp"
    r = checked.resources
    assert (r.nodes, r.tasks_per_node, r.gpus_per_node, r.partition, r.time_limit, r.container_image) == (
        2, 2, 2, "gpu", "0:30:00", "/img/dinf.sif")
