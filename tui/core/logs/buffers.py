"""What the app knows about one run's streams: bounded line buffers and per-rank progress.

Headless and single-threaded: the UI thread applies each `RoutedBatch` (tui.core.logs.routing) here,
and the widgets render from it. It outlives the run screen, so lines that arrive while the screen
is closed or a tab is not mounted yet are there when they are shown. Memory is bounded by
`max_lines` per buffer; lines evicted from memory are counted, never silently lost.

A rank's overall progress (`RankState.fraction`) is the share of the run's timed work it has
done, from the plan its events carry (worker.contract.make_event): with B batch sizes and R timed
repeats each, the rank makes B x R timed passes, and each pass generates the same tokens (this
rank's requests x max_new_tokens, whatever the batch size), so

    fraction = ((batch_index - 1) x R + (repeat - 1) + tokens_done / tokens_expected) / (B x R)

is timed tokens generated over timed tokens planned. At the start of batch size k (its warmup
phase) it is (k - 1) / B; at "done" it is 1. It never goes back (a repeat starting again at
token 0 is the next pass, not a reset). Warm-up passes, loading and scoring are not in it: the
worker reports no tokens for them (the stage text says what the rank is doing meanwhile).

The ETA divides the work left by the rate observed so far: from the first event with a known
fraction (the first warmup, so later warm-ups and compiles are inside the rate) to the latest
progress event, and counts down from that event. It is unknown ("ETA —") until MIN_PROGRESS_FOR_ETA
progress events have come after that start, once the countdown has run out, or when it would
exceed MAX_ETA_S. Events from a worker that predates the plan give no fraction (the bar then shows
the current pass) and no ETA.
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


MIN_PROGRESS_FOR_ETA = 2
"""Progress events after the start of the timed work before an ETA is given: one rate from one
report would be the warm-up's alone."""
MAX_ETA_S = 7 * 24 * 3600.0
"""Beyond a week the rate is too early to trust: no ETA rather than an absurd one."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


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
    batch_index: int | None = None
    """1-based position of `batch_size` in the spec's batch sizes (from the plan in the events)."""
    batch_count: int | None = None
    repeat: int | None = None
    """1-based timed pass of the current batch size; None before its first progress event."""
    repeats: int | None = None
    fraction: float | None = None
    """Share of the run's timed work done (module docstring); None while the plan is unknown."""
    # (ts, fraction) of the first event with a fraction, and of the latest progress event
    _started: tuple[float, float] | None = field(default=None, repr=False)
    _rate_at: tuple[float, float] | None = field(default=None, repr=False)
    _progress_since_start: int = field(default=0, repr=False)

    def apply(self, event: dict[str, Any]) -> None:
        ts = float(event.get("ts", time.time()))
        if self.last_event_ts is None or ts > self.last_event_ts:
            self.last_event_ts = ts
        kind = event.get("kind")
        if kind == "phase":
            self.phase = str(event.get("phase", self.phase))
            if event.get("batch_size") is not None:
                self.batch_size = event["batch_size"]
            if self.phase in ("warmup", "measure"):
                self._read_plan(event)
                self.repeat = None  # no timed pass of this batch size has reported yet
                if self.batch_index and self.batch_count:
                    self._advance((self.batch_index - 1) / self.batch_count, ts)
            elif self.phase == "done":
                self._advance(1.0, ts)
        elif kind == "progress":
            self.batch_size = event.get("batch_size", self.batch_size)
            self.tokens_done = int(event.get("tokens_done", 0))
            self.tokens_expected = int(event.get("tokens_expected", 0))
            self._read_plan(event)
            self.repeat = _int(event.get("repeat"))
            fraction = self._pass_fraction()
            if fraction is not None:
                self._advance(fraction, ts)
                if self._started is not None and ts > self._started[0]:
                    self._progress_since_start += 1
                    self._rate_at = (ts, self.fraction or 0.0)
        elif kind == "error":
            self.error = str(event.get("message", "error"))
            self.phase = "failed"

    def _read_plan(self, event: dict[str, Any]) -> None:
        for name in ("batch_index", "batch_count", "repeats"):
            if name in event:
                setattr(self, name, _int(event[name]))

    def _pass_fraction(self) -> float | None:
        index, count, repeat, repeats = self.batch_index, self.batch_count, self.repeat, self.repeats
        if None in (index, count, repeat, repeats) or not self.tokens_expected:
            return None
        within = min(1.0, self.tokens_done / self.tokens_expected)
        return min(1.0, ((index - 1) * repeats + (repeat - 1) + within) / (count * repeats))

    def _advance(self, fraction: float, ts: float) -> None:
        """Move the overall fraction forward (never back: events of a pass come in order, and a
        repeat starting over at token 0 is the next pass)."""
        if self.fraction is None or fraction > self.fraction:
            self.fraction = fraction
        if self._started is None:
            self._started = (ts, self.fraction)

    @property
    def pass_fraction(self) -> float | None:
        """Share of the current timed pass done (what an older worker's events allow)."""
        return min(1.0, self.tokens_done / self.tokens_expected) if self.tokens_expected else None

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the rate observed so far, counted down from the latest progress event;
        None when unknown (see the module docstring) and 0 once the rank is done."""
        if self.phase == "done":
            return 0.0
        if self.phase == "failed" or self._started is None or self._rate_at is None:
            return None
        if self._progress_since_start < MIN_PROGRESS_FOR_ETA:
            return None
        (t0, f0), (t1, f1) = self._started, self._rate_at
        if t1 <= t0 or f1 <= f0:
            return None
        left = (1.0 - f1) * (t1 - t0) / (f1 - f0)
        if left > MAX_ETA_S:
            return None
        now = time.time() if now is None else now
        left -= max(0.0, now - t1)
        return left if left >= 0 else None

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
