"""What the app knows about one run's streams: bounded line buffers and per-rank progress.

Headless and single-threaded: the UI thread applies each `RoutedBatch` (tui.core.logs.routing) here,
and the widgets render from it. It outlives the run screen, so lines that arrive while the screen
is closed or a tab is not mounted yet are there when they are shown. Memory is bounded by
`max_lines` per buffer; lines evicted from memory are counted, never silently lost.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tui.core.logs.routing import RoutedBatch

DEFAULT_MAX_LINES = 50_000
_WIDTH_CAP = 2_000  # horizontal scroll range; longer lines are still kept whole


class LogBuffer:
    """The newest lines of one stream, plus the ones matching the current filter."""

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES) -> None:
        self.max_lines = max_lines
        self.lines: deque[str] = deque(maxlen=max_lines)
        self.matching: deque[str] = deque(maxlen=max_lines)
        self.filter: re.Pattern[str] | None = None
        self.received = 0
        """Lines ever appended (kept or evicted): the 'no line dropped' count."""
        self.width = 0

    def extend(self, lines: list[str]) -> None:
        if not lines:
            return
        self.lines.extend(lines)
        self.received += len(lines)
        widest = max(map(len, lines))
        if widest > self.width:
            self.width = min(widest, _WIDTH_CAP)
        if self.filter is not None:
            search = self.filter.search
            self.matching.extend(line for line in lines if search(line))

    def set_filter(self, pattern: re.Pattern[str] | None) -> None:
        self.filter = pattern
        self.matching.clear()
        if pattern is not None:
            search = pattern.search
            self.matching.extend(line for line in self.lines if search(line))

    @property
    def visible(self) -> deque[str]:
        return self.lines if self.filter is None else self.matching

    @property
    def dropped_from_memory(self) -> int:
        """Lines evicted to keep the bound (still on the cluster; counted, not lost silently)."""
        return self.received - len(self.lines)


FIRST_EVENT_GRACE_S = 90.0
"""A rank's first event comes after Python, torch and the model load; allow for a slow start."""
STALE_AFTER_S = 15.0
"""About three heartbeat intervals of the worker (5 s)."""


@dataclass
class RankState:
    """What the events of one rank say so far."""

    rank: int
    phase: str = "waiting"
    batch_size: int | None = None
    tokens_done: int = 0
    tokens_expected: int = 0
    last_event_ts: float | None = None
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        ts = float(event.get("ts", time.time()))
        if self.last_event_ts is None or ts > self.last_event_ts:
            self.last_event_ts = ts
        kind = event.get("kind")
        if kind == "phase":
            self.phase = str(event.get("phase", self.phase))
            if event.get("batch_size") is not None:
                self.batch_size = event["batch_size"]
        elif kind == "progress":
            self.batch_size = event.get("batch_size", self.batch_size)
            self.tokens_done = int(event.get("tokens_done", 0))
            self.tokens_expected = int(event.get("tokens_expected", 0))
        elif kind == "error":
            self.error = str(event.get("message", "error"))
            self.phase = "failed"

    def heartbeat_age(self, now: float | None = None) -> float | None:
        if self.last_event_ts is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.last_event_ts)

    def is_stale(self, now: float | None = None) -> bool:
        age = self.heartbeat_age(now)
        return age is not None and age > STALE_AFTER_S and self.phase not in ("done", "failed")

    def is_silent(self, running_since: float | None, now: float | None = None) -> bool:
        """Running for a while and not one event yet: the rank may never have started."""
        if self.last_event_ts is not None or running_since is None:
            return False
        return (now if now is not None else time.time()) - running_since > FIRST_EVENT_GRACE_S


@dataclass
class RunLogs:
    """Every buffer and rank state of one run, plus where its tail stopped (offsets per file)."""

    max_lines: int = DEFAULT_MAX_LINES
    merged: LogBuffer = field(init=False)
    ranks: dict[int, LogBuffer] = field(default_factory=dict)
    rank_states: dict[int, RankState] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    last_time: dict[str, float] = field(default_factory=dict)
    """path -> timestamp of its last line (tail-worker side, carried between batches)."""

    def __post_init__(self) -> None:
        self.merged = LogBuffer(self.max_lines)

    def rank_buffer(self, rank: int) -> LogBuffer:
        if rank not in self.ranks:
            self.ranks[rank] = LogBuffer(self.max_lines)
        return self.ranks[rank]

    def rank_state(self, rank: int) -> RankState:
        if rank not in self.rank_states:
            self.rank_states[rank] = RankState(rank)
        return self.rank_states[rank]

    def apply(self, batch: RoutedBatch) -> None:
        for rank, lines in batch.rank_lines.items():
            self.rank_buffer(rank).extend(lines)
        self.merged.extend(batch.merged_lines)
        for event in batch.events:
            rank = event.get("rank")
            if isinstance(rank, int):
                self.rank_state(rank).apply(event)
        self.offsets.update(batch.offsets)
