"""Whether a measurement can be trusted: the warnings the report and the compare views state in words.

Three things have made numbers here wrong before, and each is checked from the data alone:

- an efficiency above 1 (more GPUs alone cannot make each one faster: something else differed);
- two runs whose time windows overlapped on the same host(s): they shared the hardware they timed
  (on a 2-core laptop, cells run side by side reported S = 16 for 2 ranks);
- a timed part shorter than `MIN_TIMED_S`: launch overheads, clock reads and one slow step decide it.

A run's window is from its process start (its first timed part's start minus its load time) to its
last timed part's end, as the worker recorded them (`timed_window_unix` per measurement); runs from
a worker that recorded none fall back to the start and end the scheduler gave. Runs with neither,
or without hosts, are never called overlapping: nothing says they were.

Pure functions over `tui.studies.results.RunResult` / `tui.studies.analysis.Point`; nothing here reads a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MIN_TIMED_S = 2.0
"""A timed part (one repeat over the whole workload) shorter than this is flagged as too short to time."""
EFFICIENCY_LIMIT = 1.0
"""An efficiency above this is flagged: N GPUs cannot each be faster than one GPU alone."""


@dataclass(frozen=True)
class Flag:
    kind: str
    """'efficiency' | 'overlap' | 'short'"""
    text: str


def run_window(run: Any) -> tuple[float, float] | None:
    """(start, end) in Unix seconds of a run's work, or None when nothing recorded it."""
    windows = [p.window for p in run.points if getattr(p, "window", None)]
    if windows:
        start = min(w[0] for w in windows) - (run.load_time_s or 0.0)
        return start, max(w[1] for w in windows)
    started, finished = getattr(run, "started_at", None), getattr(run, "finished_at", None)
    if started is not None and finished is not None and finished > started:
        return float(started), float(finished)
    return None


def _label(run: Any) -> str:
    from tui.display.runs import printable

    return f"#{run.id} {printable(run.name)}"  # a run's name is outside text: every character shown as itself


def overlap_flags(runs: Sequence[Any]) -> list[Flag]:
    """Every pair of runs whose windows overlapped on at least one shared host."""
    flags = []
    ordered = sorted(runs, key=lambda r: r.id)
    for i, a in enumerate(ordered):
        wa = run_window(a)
        if wa is None:
            continue
        for b in ordered[i + 1:]:
            wb = run_window(b)
            if wb is None or a.id == b.id:
                continue
            shared = sorted(set(a.hosts) & set(b.hosts))
            together = min(wa[1], wb[1]) - max(wa[0], wb[0])
            if shared and together > 0:
                flags.append(Flag("overlap", (
                    f"{_label(a)} and {_label(b)} ran at the same time for {together:.1f} s on {', '.join(shared)}: "
                    "they shared the hardware they timed, so neither time (nor any ratio between them) holds; "
                    "run them one after the other")))
    return flags


def short_flags(runs: Iterable[Any], *, minimum_s: float = MIN_TIMED_S) -> list[Flag]:
    """Every measurement whose timed part (median wall time of one repeat) is shorter than `minimum_s`."""
    flags = []
    for run in sorted(runs, key=lambda r: r.id):
        for p in run.points:
            if p.wall_s is not None and p.wall_s < minimum_s:
                flags.append(Flag("short", (
                    f"{_label(run)} at batch {p.batch_size}: the timed part lasted {p.wall_s:.3f} s, under the "
                    f"{minimum_s:g} s a timing needs; raise num_requests or max_new_tokens")))
    return flags


def efficiency_flag(where: str, value: float | None, *, name: str = "E") -> Flag | None:
    """A flag for an efficiency above `EFFICIENCY_LIMIT`, or None."""
    if value is None or value <= EFFICIENCY_LIMIT:
        return None
    return Flag("efficiency", (
        f"{where}: {name} = {value:.2f} is above {EFFICIENCY_LIMIT:g}, which more GPUs alone cannot give; "
        "look for a difference between the runs (batching, padding, warm-up, shared hardware) before using it"))


def spread_text(samples: Sequence[float]) -> str:
    """min–max of the repeats and the 95% interval of their mean (Student t), e.g. '4.90–5.10, ±0.12'."""
    from worker.contract import stat_summary

    if not samples:
        return "–"
    s = stat_summary(list(samples))
    text = f"{s['min']:.3f}–{s['max']:.3f}"
    return text + (f", ±{s['ci95']:.3f}" if s["ci95"] is not None else ", no interval (n=1)")
