"""One row per rank: progress bar fed by the worker's events, phase, heartbeat age, stale warning.

The state it shows (`RankState`) is folded from events in `tui.core.logs.buffers`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from tui.core.logs.buffers import RankState
from tui.display.runs import plain
from tui.ui.widgets.fixed_text import FixedText

PHASE_TEXT = {
    "start": "started, setting up",
    "init": "joining the other ranks",
    "load": "loading weights",
    "warmup": "warming up",
    "measure": "measuring",
}
"""What a rank is doing in each phase of its events (worker.contract.PHASES), in words."""


def phase_text(phase: str, *, started: bool) -> str:
    """Before its first event a started rank is loading Python and torch (the worker's first event
    comes once torch is imported, ~10 s on a cold node); before the job starts it waits."""
    if phase == "waiting":
        return "loading Python and torch" if started else "waiting for the job to start"
    return PHASE_TEXT.get(phase, phase)


class RankProgressRow(Horizontal):
    """rank label · progress bar · phase and heartbeat."""

    DEFAULT_CSS = """
    RankProgressRow { height: 1; }
    RankProgressRow .rank-name { width: 8; }
    RankProgressRow ProgressBar { width: 44; }
    RankProgressRow .rank-detail { width: 1fr; height: 1; }
    RankProgressRow.-stale .rank-detail { color: $warning; text-style: bold; }
    RankProgressRow.-failed .rank-detail { color: $error; }
    """

    def __init__(self, rank: int) -> None:
        super().__init__(id=f"rank-progress-{rank}")
        self.rank = rank
        self._shown = ""

    def compose(self) -> ComposeResult:
        yield Label(f"rank {self.rank}", classes="rank-name")
        # A known total from the start: an unknown one animates (a repaint every frame).
        yield ProgressBar(total=100, show_eta=False, id=f"rank-bar-{self.rank}")
        yield FixedText("waiting for the first event", classes="rank-detail")

    def show(
        self,
        state: RankState,
        *,
        live: bool,
        now: float | None = None,
        running_since: float | None = None,
        ended: str | None = None,
    ) -> None:
        """`ended`: the run's final state once it has finished (a rank that never reported then
        says how the run ended, not "waiting")."""
        bar = self.query_one(ProgressBar)
        imported = ended == "IMPORTED" and state.phase == "waiting"  # results from disk, no live events
        if state.tokens_expected:
            if (bar.total, bar.progress) != (state.tokens_expected, state.tokens_done):
                bar.update(total=state.tokens_expected, progress=state.tokens_done)
        elif (state.phase == "done" or imported) and bar.progress != bar.total:
            bar.update(total=1, progress=1)
        # phase and error come from the rank's events: shown as plain text
        parts = [phase_text(state.phase, started=running_since is not None) if live else state.phase]
        if imported:
            parts = ["imported results: no live events (see the results tab)"]
        elif ended is not None and state.phase not in ("done", "failed"):
            parts = [f"run ended {ended}" + (" before this rank reported" if state.phase == "waiting"
                                             else f" in phase {state.phase}")]
        if state.batch_size is not None:
            parts.append(f"bs={state.batch_size}")
        if state.tokens_expected:
            parts.append(f"{state.tokens_done}/{state.tokens_expected} tok")
        age = state.heartbeat_age(now)
        silent = live and state.is_silent(running_since, now)
        stale = live and (state.is_stale(now) or silent)
        if state.error:
            parts.append(f"error: {state.error}")
        elif silent:
            parts.append("⚠ running, but no event from this rank yet (see its log tab)")
        elif stale:
            parts.append(f"⚠ no heartbeat for {age:.0f} s")
        elif age is not None and live:
            parts.append(f"beat {age:.0f} s ago")
        self.set_class(stale, "-stale")
        self.set_class(state.error is not None, "-failed")
        text = " · ".join(parts)
        if text != self._shown:  # an update costs a layout pass; skip when nothing changed
            self._shown = text
            self.query_one(".rank-detail", FixedText).update(plain(text))
