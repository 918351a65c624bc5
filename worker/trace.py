"""Per-rank timelines of a profiled run: the rank's trace-event file and the few steps result.json keeps.

With `profile=True`, `StageTimer` keeps a span for every timed call (compute, send, recv, wait,
comm) and for the blocks around them (measure, repeat, batch, step). This module turns one rank's
spans into a Chrome / Perfetto trace-event file (`rank<r>.trace.json`: complete events "X" in
microseconds of Unix time, pid = rank, tid = 0, so every rank is one track and files from several
ranks merge by concatenation), and cuts the window of a few decode steps that the terminal timeline
draws (`timeline` in each profiled measurement of result.json).

Standard library only; it reads spans, never a device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

LEAF_KINDS = ("compute", "send", "recv", "wait", "comm")
"""Spans of one timed call; the others (measure, repeat, batch, step) are blocks around them."""
TIMELINE_STEPS = 4
"""Decode steps the terminal timeline shows: enough to see the bubble repeat, few enough to read."""

Span = tuple  # (kind, start_ns, end_ns, where: dict | None)


def trace_events(spans: Iterable[Span], *, rank: int, offset_ns: int, label: str,
                 extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Complete ("X") events of one rank, plus the metadata that names its track.

    `offset_ns` turns the spans' perf_counter_ns into Unix nanoseconds (time.time_ns() - perf_counter_ns()
    read once in the process), so ranks on one host (and NTP-synchronised hosts) share a time axis.
    """
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": label}},
        {"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0, "args": {"sort_index": rank}},
        {"name": "thread_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": f"rank {rank}"}},
    ]
    for kind, start, end, where in spans:
        args = {k: v for k, v in (where or {}).items() if v is not None}
        if extra:
            args.update(extra)
        events.append({
            "name": kind, "cat": "comm" if kind in ("send", "recv", "wait", "comm") else
            ("compute" if kind == "compute" else "block"),
            "ph": "X", "pid": rank, "tid": 0,
            "ts": round((start + offset_ns) / 1e3, 3), "dur": round(max(end - start, 0) / 1e3, 3),
            "args": args,
        })
    return events


def write_trace(path: Path, events: list[dict[str, Any]], *, dropped: int = 0) -> None:
    """One rank's trace file (atomically: a reader never sees half of it)."""
    record = {"traceEvents": events, "displayTimeUnit": "ms",
              "otherData": {"writer": "dinf worker", "dropped_spans": dropped}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def first_batch(spans: Sequence[Span]) -> list[Span]:
    """The leaf spans inside the first timed batch (repeat 0, batch 0), in time order."""
    block = next((s for s in spans if s[0] == "batch" and (s[3] or {}).get("repeat") == 0
                  and (s[3] or {}).get("index") == 0), None)
    if block is None:
        return []
    return sorted((s for s in spans if s[0] in LEAF_KINDS and block[1] <= s[1] and s[2] <= block[2]),
                  key=lambda s: (s[1], -s[2]))


def window(spans: Sequence[Span], *, prefill_calls: int, steps: int = TIMELINE_STEPS) -> tuple[int, int] | None:
    """(start, end) in ns of `steps` decode steps on this rank: from its first decode compute call
    (after `prefill_calls` prefill calls, one per micro-batch) to the start of the compute call
    `steps` steps later (or the end of its last call)."""
    compute = [s for s in spans if s[0] == "compute"]
    if len(compute) <= prefill_calls:
        return None
    start = compute[prefill_calls][1]
    later = prefill_calls + steps * prefill_calls
    end = compute[later][1] if later < len(compute) else max(s[2] for s in spans)
    return (start, end) if end > start else None


def clip(spans: Sequence[Span], start: int, end: int) -> list[list]:
    """Leaf spans within [start, end], cut to it, as [kind, start_s, end_s] from the window's start."""
    kept = []
    for kind, a, b, _ in spans:
        a, b = max(a, start), min(b, end)
        if b > a:
            kept.append([kind, round((a - start) / 1e9, 9), round((b - start) / 1e9, 9)])
    return kept
