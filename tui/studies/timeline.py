"""The terminal timeline of a profiled run: a few decode steps per rank, and the bubble measured from it.

A profiled measurement keeps (result.json `timeline`, see worker/contract.py) every rank's spans over
the same few decode steps of its first timed batch: compute, send, recv, wait (for sends to complete)
and comm (collectives), in seconds from the window's start. This module draws them as one row of
characters per rank, so a pipeline's bubble is visible, and measures it:

    bubble fraction (per rank) = the share of the shown steps' wall time in which the rank is not
    computing: waiting in a receive or send, or idle between calls.

Where spans nest (tp's all-reduce inside a forward), the innermost one decides what the rank was
doing. Pure functions over plain data; the run screen's widget and the report both call `render`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GLYPHS = {"compute": "█", "send": ">", "recv": "<", "wait": "~", "comm": "=", None: "·"}
NAMES = {"compute": "compute", "send": "send", "recv": "receive", "wait": "wait for sends", "comm": "collective",
         None: "idle"}
LABEL_WIDTH = 7   # "rank 0 "
TAIL_WIDTH = 13   # " bubble 100%"


@dataclass(frozen=True)
class RankSpans:
    rank: int
    spans: tuple[tuple[str, float, float], ...]


@dataclass(frozen=True)
class Timeline:
    steps: int
    window_s: float
    micro_batches: int
    ranks: tuple[RankSpans, ...]


def timeline_from(record: Any) -> Timeline | None:
    """A measurement's `timeline` record as a Timeline; None when absent or not the shape it should be."""
    if not isinstance(record, Mapping):
        return None
    try:
        window = float(record["window_s"])
        ranks = tuple(
            RankSpans(int(r["rank"]), tuple((str(k), float(a), float(b)) for k, a, b in r["spans"]))
            for r in record["ranks"]
        )
        timeline = Timeline(int(record.get("steps") or 0), window, int(record.get("micro_batches") or 1), ranks)
    except (KeyError, TypeError, ValueError):
        return None
    return timeline if window > 0 and ranks else None


def segments(spans: Sequence[tuple[str, float, float]], window_s: float) -> list[tuple[float, float, str | None]]:
    """The window cut where any span starts or ends, each piece labelled with its innermost span's kind
    (None: no span, the rank was idle)."""
    cuts = sorted({0.0, window_s, *(min(max(a, 0.0), window_s) for _, a, _ in spans),
                   *(min(max(b, 0.0), window_s) for _, _, b in spans)})
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        mid = (a + b) / 2
        inside = [s for s in spans if s[1] <= mid < s[2]]
        kind = min(inside, key=lambda s: s[2] - s[1])[0] if inside else None
        pieces.append((a, b, kind))
    return pieces


def shares(rank: RankSpans, window_s: float) -> dict[str | None, float]:
    """Share of the window spent in each state (innermost span's kind; None = idle)."""
    out: dict[str | None, float] = {}
    for a, b, kind in segments(rank.spans, window_s):
        out[kind] = out.get(kind, 0.0) + (b - a) / window_s
    return out


def bubble_fraction(rank: RankSpans, window_s: float) -> float:
    """The share of the shown steps' wall time in which the rank was not computing."""
    return 1.0 - shares(rank, window_s).get("compute", 0.0)


def _row(rank: RankSpans, window_s: float, columns: int) -> str:
    """One character per column: the state that filled most of that column's slice of time."""
    pieces = segments(rank.spans, window_s)
    chars = []
    for c in range(columns):
        lo, hi = window_s * c / columns, window_s * (c + 1) / columns
        filled: dict[str | None, float] = {}
        for a, b, kind in pieces:
            overlap = min(b, hi) - max(a, lo)
            if overlap > 0:
                filled[kind] = filled.get(kind, 0.0) + overlap
        # ties go to compute, then communication, so a short call still shows
        order = ["compute", "recv", "send", "wait", "comm", None]
        best = max(order, key=lambda k: (filled.get(k, 0.0), -order.index(k)))
        chars.append(GLYPHS[best])
    return "".join(chars)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.2f} s"


def render(timeline: Timeline, width: int = 80, *, title: str = "") -> str:
    """The timeline in `width` columns: a heading, one row per rank with its bubble fraction, the time
    axis and the key. Plain text (no markup), so it can be shown as is or put in a report."""
    columns = max(10, width - LABEL_WIDTH - TAIL_WIDTH - 2)
    micro = f" x {timeline.micro_batches} micro-batches" if timeline.micro_batches > 1 else ""
    head = f"{title}: " if title else ""
    lines = textwrap.wrap(f"{head}{timeline.steps} decode steps{micro} of the first timed batch, "
                          f"{_ms(timeline.window_s)}", width)
    for rank in sorted(timeline.ranks, key=lambda r: r.rank):
        bubble = bubble_fraction(rank, timeline.window_s)
        lines.append(f"rank {rank.rank:<2}|{_row(rank, timeline.window_s, columns)}| bubble {bubble * 100:3.0f}%")
    end = _ms(timeline.window_s)
    lines.append(" " * LABEL_WIDTH + "0" + end.rjust(columns + 1))
    used = [k for k in GLYPHS if any(segments_kind == k for r in timeline.ranks
                                      for _, _, segments_kind in segments(r.spans, timeline.window_s))]
    lines += textwrap.wrap("  ".join(f"{GLYPHS[k]} {NAMES[k]}" for k in used)
                           + "; bubble = share of these steps not computing", width)
    return "\n".join(line.rstrip() for line in lines)


def first_timeline(measurements: Sequence[Any]) -> tuple[int, Timeline] | None:
    """(batch size, timeline) of the first measurement (by batch size) that has one.

    Takes result.json measurement dicts, or storage rows and their column dicts (whose raw_json holds
    the result.json record)."""
    import json

    found = []
    for m in measurements:
        raw = m.get("raw_json") if isinstance(m, Mapping) else getattr(m, "raw_json", None)
        record = m if isinstance(m, Mapping) and raw is None else None
        if raw is not None:
            try:
                record = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                record = None
        if isinstance(record, Mapping):
            timeline = timeline_from(record.get("timeline"))
            if timeline is not None:
                found.append((int(record.get("batch_size") or 0), timeline))
    return min(found, key=lambda f: f[0]) if found else None
