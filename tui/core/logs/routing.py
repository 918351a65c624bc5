"""Turn batches of remote log chunks into per-rank lines, a merged timeline and worker events.

Headless (no Textual): the app's tail worker calls `route_chunks` on its own thread so the UI
thread only appends ready-made lines. A chunk's file is recognised by the contract's file names
(`rank{r}.log`, `rank{r}.events.jsonl`, `{job}-rank{r}.out`), so it needs nothing from the backend
beyond the path. What it does not do: keep state across batches (the caller holds the last
timestamp per file) or decide what to show (the widgets do).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from remote.cluster import LogChunk
from tui.display.runs import printable
from worker.contract import parse_event

_EVENTS_NAME = re.compile(r"rank(\d+)\.events\.jsonl$")
_WORKER_LOG_NAME = re.compile(r"rank(\d+)\.log$")
_LAUNCHER_LOG_NAME = re.compile(r"-rank(\d+)\.out$")
# A leading ISO-8601 time ("2026-11-26 20:01:02,123", "[2026-11-26T20:01:02.1]") or Unix seconds.
_LEADING_TIME = re.compile(r"^\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)")
_LEADING_EPOCH = re.compile(r"^\[?(1\d{9}(?:\.\d+)?)\b")
# The worker's own format: "20:11:47 rank 0 ..." (time of day only).
_LEADING_CLOCK = re.compile(r"^\[?(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\b")


def classify_path(path: str) -> tuple[int, str] | None:
    """(rank, kind) of a run file, kind one of "events", "log", "launcher"; None if foreign."""
    name = PurePosixPath(path).name
    for pattern, kind in (
        (_EVENTS_NAME, "events"),
        (_WORKER_LOG_NAME, "log"),
        (_LAUNCHER_LOG_NAME, "launcher"),
    ):
        match = pattern.search(name)
        if match:
            return int(match.group(1)), kind
    return None


def leading_timestamp(line: str) -> float | None:
    """Unix time written at the start of a log line, if any (naive times are local)."""
    if not line or not (line[0].isdigit() or line[0] == "["):
        return None
    match = _LEADING_TIME.match(line)
    if match:
        try:
            return datetime.fromisoformat(match.group(1).replace(",", ".")).timestamp()
        except ValueError:
            return None
    match = _LEADING_EPOCH.match(line)
    if match:
        return float(match.group(1))
    match = _LEADING_CLOCK.match(line)
    if match:
        return _today_at(*match.groups())
    return None


def _today_at(hours: str, minutes: str, seconds: str, fraction: str | None) -> float | None:
    """A time of day as Unix time: today, or yesterday if that would be in the future (midnight)."""
    now = datetime.now()
    try:
        moment = now.replace(hour=int(hours), minute=int(minutes), second=int(seconds), microsecond=0)
    except ValueError:
        return None
    ts = moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
    if ts > now.timestamp() + 3600:
        ts -= 86400
    return ts


def clean_line(line: str) -> str:
    """The line without its end-of-line and with control characters made visible."""
    return printable(line.rstrip("\r\n"))


def format_event(event: dict[str, Any]) -> str | None:
    """A log line for an error event (phases and progress are already in the worker's log and
    drive the progress bars); None for every other event."""
    if event.get("kind") != "error":
        return None
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("ts", 0))))
    return f"{stamp} ERROR (event) {printable(event.get('message', ''))}"


@dataclass
class RoutedBatch:
    """One batch of chunks, sorted out: lines per rank, merged lines, events, new offsets."""

    rank_lines: dict[int, list[str]] = field(default_factory=dict)
    merged_lines: list[str] = field(default_factory=list)
    """Every rank's lines of this batch, ordered by timestamp, prefixed with the rank."""
    events: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)
    line_count: int = 0


def route_chunks(chunks: list[LogChunk], last_time: dict[str, float]) -> RoutedBatch:
    """Sort one batch of chunks into ranks; `last_time` (path -> ts) carries times across batches.

    Lines without a timestamp take the previous line's time of the same file (or now), so a
    multi-line traceback stays together in the merged view. Ordering is exact within a batch;
    across batches it is by arrival, which the tail's short poll keeps within a fraction of a second.
    Hot path (100k lines/s): per line only C-level string calls and a cached time parse.
    """
    batch = RoutedBatch()
    per_file: list[list[tuple[float, int, str]]] = []
    arrival = time.time()
    parsed: dict[str, float | None] = {}  # timestamp text -> Unix time, for this batch
    order = 0
    for chunk in chunks:
        batch.offsets[chunk.path] = chunk.end_offset
        kind = classify_path(chunk.path)
        if kind is None:
            continue
        rank, file_kind = kind
        lines_out = batch.rank_lines.setdefault(rank, [])
        previous = last_time.get(chunk.path, arrival)
        prefix = f"[r{rank}] "
        stamped: list[tuple[float, int, str]] = []
        if file_kind == "events":
            for raw in chunk.lines:
                event = parse_event(raw)
                if event is None:
                    continue
                batch.events.append(event)
                text = format_event(event)
                if text is not None:
                    lines_out.append(text)
                    stamped.append((float(event.get("ts", previous)), order, prefix + text))
                    order += 1
        else:
            for text in chunk.lines:
                if not text.isprintable():
                    text = clean_line(text)
                key = _time_key(text)
                if key is not None:
                    ts = parsed.get(key, _MISSING)
                    if ts is _MISSING:
                        ts = parsed[key] = leading_timestamp(text)
                    if ts is not None:
                        previous = ts
                lines_out.append(text)
                stamped.append((previous, order, prefix + text))
                order += 1
            last_time[chunk.path] = previous
        if stamped:
            per_file.append(stamped)
    if len(per_file) == 1:
        batch.merged_lines = [text for _, _, text in per_file[0]]
    elif per_file:
        # Each file is already in time order, so timsort just merges the runs (in C).
        combined = [item for stamped in per_file for item in stamped]
        combined.sort()
        batch.merged_lines = [text for _, _, text in combined]
    batch.line_count = sum(len(lines) for lines in batch.rank_lines.values())
    return batch


_MISSING: Any = object()


def _time_key(line: str) -> str | None:
    """The text of a line's leading timestamp, cheaply (None when it can't start with one)."""
    if not line:
        return None
    first = line[0]
    if first == "[":
        line, first = line[1:], line[1:2]
    if not first.isdigit():
        return None
    if line[2:3] == ":" and line[5:6] == ":":  # HH:MM:SS (the worker's format)
        return line[:8]
    if line[4:5] == "-":  # ISO date and time; fractions included
        return line[:26]
    return line[:17]  # Unix seconds with a fraction
