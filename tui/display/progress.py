"""How a rank's progress reads: its stage ("batch 8 · repeat 2/3"), its share done and its ETA.

Words over a `tui.core.logs.buffers.RankState` (where the fraction and the ETA are computed), so
the run screen's rank rows and `dinf ... --wait`'s progress line say the same thing. Text only:
no Textual, no Rich. Phases and batch sizes come from the ranks' events: callers show the result
as plain text (`plain` / `printable`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tui.display.runs import duration

if TYPE_CHECKING:
    from tui.core.logs.buffers import RankState

UNKNOWN_ETA = "ETA —"


def stage_text(state: RankState, sep: str = " · ") -> str | None:
    """Where the rank is in the plan: 'batch 8 · repeat 2/3', 'batch 8 · warming up', 'scoring ...';
    None outside the measured part of the run (loading, done, ...), where the phase says it all.
    A worker that sends no plan gets the pass's tokens instead of the repeat ('batch 8 · 6/8 tok')."""
    if state.batch_size is None:
        return None
    if state.phase == "score":
        return "scoring against the unquantized model"
    if state.phase not in ("warmup", "measure"):
        return None
    words = [f"batch {state.batch_size}"]
    if state.phase == "warmup":
        words.append("warming up")
    elif state.repeat is not None and state.repeats:
        words.append(f"repeat {state.repeat}/{state.repeats}")
    elif state.fraction is None and state.tokens_expected:
        words.append(f"{state.tokens_done}/{state.tokens_expected} tok")
    return sep.join(words)


def percent_text(state: RankState) -> str | None:
    """The run's share done ('45%'); None while the plan is unknown."""
    return None if state.fraction is None else f"{int(state.fraction * 100)}%"


def run_eta_s(states: Iterable[RankState], now: float | None = None) -> float | None:
    """When the run's last rank should finish: the largest ETA, known only when every rank still at
    work has one (a rank not measuring yet could be the slowest)."""
    etas = [state.eta_s(now) for state in states if state.phase != "done"]
    if not etas or any(eta is None for eta in etas):
        return None if etas else 0.0
    return max(etas)


def eta_text(seconds: float | None) -> str:
    """'ETA 01:05', or 'ETA —' while there is not enough to estimate from."""
    return UNKNOWN_ETA if seconds is None else f"ETA {duration(seconds)}"
