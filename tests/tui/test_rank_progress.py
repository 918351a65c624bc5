"""A rank's overall progress and ETA (`RankState`) and how they read (`tui.display.progress`), folded
from event sequences shaped as the worker writes them (worker/runner.py: per batch size a warmup
phase, a measure phase, then a progress event after each batch of each timed repeat)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from tui.core.logs.buffers import MAX_ETA_S, RankState
from tui.display.progress import UNKNOWN_ETA, eta_text, percent_text, run_eta_s, stage_text
from worker.contract import make_event, parse_event

OLD_EVENTS = Path(__file__).parents[1] / "experiments/gpu/bundles/gpu-sweep/pp_r2/rank1.events.jsonl"
"""Recorded on an H200 by a worker that sent no plan: batch sizes 1, 4, 16 (and others), 3 repeats."""


def event(kind: str, ts: float, rank: int = 0, **payload) -> dict:
    record = make_event(kind, rank, **payload)
    record["ts"] = ts
    return record


def worker_events(batch_sizes=(1, 8), repeats=3, batches=(4, 1), tokens=32, warmup_s=2.0, batch_s=1.0,
                  t0=1000.0) -> list[dict]:
    """What one rank writes for a run: `batches[i]` batches per pass at batch size i, `tokens`
    tokens per pass (the same requests whatever the batch size), `batch_s` seconds a batch."""
    t = t0
    events = [event("phase", t, phase="start"), event("phase", t + 1, phase="init"),
              event("phase", t + 2, phase="load")]
    t += 10
    for position, (size, count) in enumerate(zip(batch_sizes, batches), 1):
        plan = {"batch_index": position, "batch_count": len(batch_sizes), "repeats": repeats}
        events.append(event("phase", t, phase="warmup", batch_size=size, **plan))
        t += warmup_s
        events.append(event("phase", t, phase="measure", batch_size=size, **plan))
        for repeat in range(1, repeats + 1):
            for b in range(1, count + 1):
                t += batch_s
                events.append(event("progress", t, batch_size=size, tokens_done=tokens * b // count,
                                    tokens_expected=tokens, repeat=repeat, **plan))
    events.append(event("phase", t + 1, phase="done"))
    return events


def fold(events) -> tuple[RankState, list[float | None]]:
    state = RankState(0)
    seen = []
    for e in events:
        state.apply(e)
        seen.append(state.fraction)
    return state, seen


def test_overall_progress_never_drops_across_batch_sizes_and_repeats():
    events = worker_events()
    state, seen = fold(events)
    known = [f for f in seen if f is not None]
    assert known == sorted(known) and known[-1] == 1.0
    assert seen[:3] == [None, None, None]  # loading: the plan is not known yet
    assert len(known) == len(seen) - 3
    # 2 batch sizes x 3 repeats = 6 passes of 32 tokens; batch 8 repeat 2 done: (1*3 + 1 + 1) / 6
    state = RankState(0)
    for e in events:
        state.apply(e)
        if e["kind"] == "progress" and (e["batch_size"], e["repeat"]) == (8, 2):
            break
    assert abs(state.fraction - 5 / 6) < 1e-9
    assert stage_text(state) == "batch 8 · repeat 2/3" and percent_text(state) == "83%"
    # the issue: each pass on its own went 100% -> 25% at every new repeat and batch size
    passes = []
    for e in events:
        state.apply(e)
        passes.append(state.pass_fraction)
    assert any(b is not None and a is not None and b < a for a, b in pairwise(passes))


def test_the_next_batch_size_starts_where_the_last_one_ended():
    state, _ = fold(worker_events(batch_sizes=(1, 4, 16), batches=(4, 1, 1))[:4])  # up to warmup of 1
    assert state.fraction == 0.0 and stage_text(state) == "batch 1 · warming up"
    events = worker_events(batch_sizes=(1, 4, 16), batches=(4, 1, 1))
    second_warmup = next(i for i, e in enumerate(events) if e.get("phase") == "warmup" and e["batch_size"] == 4)
    state, _ = fold(events[: second_warmup + 1])
    assert abs(state.fraction - 1 / 3) < 1e-9 and stage_text(state) == "batch 4 · warming up"
    # a progress event of an earlier pass arriving late (or again) cannot pull the bar back
    state.apply(event("progress", events[second_warmup]["ts"] + 0.1, batch_size=1, tokens_done=8,
                      tokens_expected=32, repeat=1, batch_index=1, batch_count=3, repeats=3))
    assert abs(state.fraction - 1 / 3) < 1e-9


def test_eta_waits_for_enough_progress_then_counts_down_and_never_goes_negative():
    events = worker_events(batch_sizes=(1, 8), repeats=3, batches=(4, 4), warmup_s=2.0, batch_s=1.0)
    first_warmup = next(e for e in events if e.get("phase") == "warmup")
    progress = [i for i, e in enumerate(events) if e["kind"] == "progress"]
    state, _ = fold(events[: progress[0] + 1])
    assert state.eta_s(now=events[progress[0]]["ts"]) is None  # one report: no rate yet
    assert eta_text(state.eta_s(now=events[progress[0]]["ts"])) == UNKNOWN_ETA == "ETA —"
    state, _ = fold(events[: progress[1] + 1])
    # 2 of 24 batches done 4 s after the first warmup began (2 s warmup + 2 x 1 s): 22 left at 2 s each
    at = events[progress[1]]["ts"]
    assert at - first_warmup["ts"] == 4.0
    assert abs(state.eta_s(now=at) - 44.0) < 1e-6
    assert abs(state.eta_s(now=at + 10) - 34.0) < 1e-6  # counts down between reports
    assert state.eta_s(now=at - 5) == state.eta_s(now=at)  # a laptop clock behind the node's: no growth
    assert state.eta_s(now=at + 45) is None  # overdue: unknown, not negative
    assert eta_text(state.eta_s(now=at + 10)) == "ETA 00:34"
    state, _ = fold(events)
    assert state.eta_s(now=events[-1]["ts"] + 100) == 0.0  # done


def test_an_absurd_eta_is_not_shown():
    state = RankState(0)
    plan = {"batch_index": 1, "batch_count": 1, "repeats": 1}
    state.apply(event("phase", 0.0, phase="warmup", batch_size=1, **plan))
    for i, ts in enumerate((3600.0, 7200.0), 1):  # 2 of 10 000 tokens in two hours
        state.apply(event("progress", ts, batch_size=1, tokens_done=i, tokens_expected=10_000, repeat=1, **plan))
    assert (1 - state.fraction) * 7200 / state.fraction > MAX_ETA_S
    assert state.eta_s(now=7200.0) is None


def test_the_run_eta_is_its_slowest_rank_once_every_working_rank_has_one():
    fast = worker_events(batch_s=1.0)
    slow = worker_events(batch_s=2.0)
    a, _ = fold(fast[:20])
    b, _ = fold(slow[:20])
    now = min(fast[19]["ts"], slow[19]["ts"])
    assert a.eta_s(now) is not None and b.eta_s(now) is not None
    assert run_eta_s([a, b], now) == max(a.eta_s(now), b.eta_s(now))
    loading, _ = fold(fast[:3])
    assert run_eta_s([a, loading], now) is None
    done, _ = fold(fast)
    assert run_eta_s([a, done], now) == a.eta_s(now)


def test_events_of_a_worker_without_the_plan_still_show_the_current_pass():
    """Recorded GPU events from before the plan was sent: no overall share and no ETA, but the pass
    (the old bar) and the batch size; 'done' fills the bar."""
    events = [e for e in map(parse_event, OLD_EVENTS.read_text().splitlines()) if e]
    state = RankState(1)
    for e in events:
        state.apply(e)
        if e["kind"] == "progress" and e["tokens_done"] == 544:
            break
    assert state.fraction is None and state.eta_s() is None and percent_text(state) is None
    assert stage_text(state) == "batch 1 · 544/1024 tok" and state.pass_fraction == 544 / 1024
    for e in events:
        state.apply(e)
    assert state.phase == "done" and state.fraction == 1.0


def test_events_as_the_worker_writes_them_round_trip():
    """The plan travels through JSON lines unchanged (the tail parses what the worker wrote)."""
    e = event("progress", 5.0, batch_size=8, tokens_done=16, tokens_expected=32, repeat=2, repeats=3,
              batch_index=2, batch_count=2)
    state = RankState(0)
    state.apply(parse_event(json.dumps(e)))
    assert (state.batch_index, state.batch_count, state.repeat, state.repeats) == (2, 2, 2, 3)
    assert abs(state.fraction - (3 + 1 + 0.5) / 6) < 1e-9
