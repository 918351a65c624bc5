"""What `dinf submit|resubmit|demo --wait` prints while it waits.

A line per state change of the run (PENDING, RUNNING, COMPLETED, with Slurm's reason where it gives
one), and on a terminal one progress line rewritten in place with a carriage return: per rank its
phase, batch size and tokens done of expected, as the worker's events report them (folded by
`tui.core.logs.buffers.RankState`, the same state the app's rank rows show).

What it deliberately doesn't do: progress on a pipe (a log file would collect a line a second;
state lines are enough there), or anything at all under `--json` (the caller doesn't make one).
Headless and stdlib-only: no Textual on the CLI path. Text from outside dinf (reasons, phases,
errors) goes through `printable`, so a control character in it can't move the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from tui.core.logs.buffers import RankState
from tui.display.runs import duration, printable

PROGRESS_EVERY_S = 1.0
"""At most one redraw of the progress line a second: a terminal that scrolls back stays quiet."""


def state_line(run_id: int, state: str, at: float, reason: str | None) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(at))}  run {run_id}  {printable(state)}" + (f"  ({printable(reason)})" if reason else "")


def progress_line(record: Any, ranks: Mapping[int, RankState], *, now: float | None = None) -> str:
    """'RUNNING 00:07 · r0 measure bs=2 (2/2) 6/8 tok · r1 load'; neighbouring ranks that read the
    same are shown once ('r0-3 ...')."""
    now = time.time() if now is None else now
    started = getattr(record, "started_at", None)
    head = printable(record.state) + (f" {duration(now - started)}" if started is not None else "")
    batch_sizes = list((getattr(record, "spec", None) or {}).get("batch_sizes") or [])
    parts: list[tuple[int, int, str]] = []  # (first rank, last rank, what it does)
    for rank in range(record.num_ranks):
        state = ranks.get(rank)
        text = "no event yet" if state is None or state.phase == "waiting" else _rank_text(state, batch_sizes)
        if parts and parts[-1][2] == text and parts[-1][1] == rank - 1:
            parts[-1] = (parts[-1][0], rank, text)
        else:
            parts.append((rank, rank, text))
    shown = [(f"r{a}" if a == b else f"r{a}-{b}") + " " + text for a, b, text in parts]
    return " · ".join([head, *shown])


def _rank_text(state: RankState, batch_sizes: list[int]) -> str:
    words = [printable(state.phase)]
    if state.batch_size is not None:
        words.append(f"bs={state.batch_size}")
        if state.batch_size in batch_sizes and len(batch_sizes) > 1:
            words.append(f"({batch_sizes.index(state.batch_size) + 1}/{len(batch_sizes)})")
    if state.tokens_expected and state.phase == "measure":
        words.append(f"{state.tokens_done}/{state.tokens_expected} tok")
    if state.error:
        words.append(f"error: {printable(state.error)}")
    return " ".join(words)


class WaitReport:
    """Writes the state lines and (on a terminal) the progress line to `out`.

    `isatty` and `width` are arguments, not looked up here, so the terminal path can be tested
    on a pipe. The progress line is cut to `width - 1` columns: a line that wraps can't be
    rewritten with a carriage return.
    """

    def __init__(self, out: TextIO, *, isatty: bool, width: int = 80,
                 every_s: float = PROGRESS_EVERY_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.isatty = isatty
        self.width = max(20, width)
        self.every_s = every_s
        self._monotonic = monotonic
        self._printed = 0  # history entries already printed
        self._reason: tuple[str, str | None] | None = None  # the state and reason printed last
        self._shown = ""  # the progress line on screen now ("" when none)
        self._drawn_at: float | None = None

    def states(self, record: Any) -> None:
        """Print the history entries not printed yet (DRAFT is before the wait, never shown), and a
        new reason for the same state (PENDING Priority, then PENDING Resources): the history keeps
        state changes only, the record its latest reason."""
        history = [e for e in record.history if e.state != "DRAFT"]
        lines = [(e.state, e.at, e.reason) for e in history[self._printed:]]
        self._printed = len(history)
        if lines:
            self._reason = (lines[-1][0], lines[-1][2])
        reason = getattr(record, "state_reason", None)
        last = self._reason
        if reason and last is not None and last[0] == record.state and last[1] != reason:
            lines.append((record.state, time.time(), reason))
            self._reason = (record.state, reason)
        if not lines:
            return
        self.clear()
        for state, at, why in lines:
            self.out.write(state_line(record.id, state, at, why) + "\n")
        self.out.flush()

    def progress(self, record: Any, ranks: Mapping[int, RankState]) -> None:
        """Redraw the progress line (terminal only, at most every `every_s`, only while running)."""
        if not self.isatty or record.state != "RUNNING":
            return
        now = self._monotonic()
        if self._drawn_at is not None and now - self._drawn_at < self.every_s:
            return
        self._drawn_at = now
        line = progress_line(record, ranks)
        if len(line) > self.width - 1:
            line = line[: self.width - 2] + "…"
        if line != self._shown:
            self.out.write("\r" + line.ljust(len(self._shown)))
            self.out.flush()
            self._shown = line

    def clear(self) -> None:
        """Take the progress line off the screen (before any other line is written)."""
        if self._shown:
            self.out.write("\r" + " " * len(self._shown) + "\r")
            self.out.flush()
            self._shown = ""
            self._drawn_at = None
