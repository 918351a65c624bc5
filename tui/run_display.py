"""How a run record reads on screen: its state (with colour), times, elapsed time and timeline.

Pure functions over the service's `RunRecord` snapshots (attribute access only, tolerant of
fields a record does not carry), so every screen formats runs the same way. No Textual here.
"""

from __future__ import annotations

import time
from typing import Any

from remote.cluster import TERMINAL_STATES

FINISHED_STATES = frozenset(state.value for state in TERMINAL_STATES) | {"SUBMIT_FAILED", "IMPORTED"}
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"})

STATE_STYLES = {
    "DRAFT": "dim",
    "PENDING": "yellow",
    "CONFIGURING": "yellow",
    "RUNNING": "bold cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "bold green",
    "IMPORTED": "green",
    "CANCELLED": "magenta",
    "SUBMIT_FAILED": "bold red",
}


def state_of(record: Any) -> str:
    state = getattr(record, "state", "UNKNOWN")
    return str(getattr(state, "value", state))


def is_finished(record: Any) -> bool:
    return state_of(record) in FINISHED_STATES


def is_live(record: Any) -> bool:
    return state_of(record) in LIVE_STATES


def state_markup(state: str) -> str:
    style = STATE_STYLES.get(state, "bold red" if state in FINISHED_STATES else "")
    return f"[{style}]{state}[/]" if style else state


def clock(ts: float | None) -> str:
    """Local wall-clock time of a Unix timestamp; '-' when there is none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def elapsed_s(record: Any, now: float | None = None) -> float | None:
    """Running time: start (or submission) to finish, or to now while live."""
    start = getattr(record, "started_at", None) or getattr(record, "submitted_at", None)
    if start is None:
        return None
    end = getattr(record, "finished_at", None)
    if end is None:
        if is_finished(record):
            return None
        end = now if now is not None else time.time()
    return end - start


def history_of(record: Any) -> list[tuple[str, float, str | None]]:
    """The state timeline as (state, at, reason), oldest first, whatever shape the record uses."""
    entries = getattr(record, "history", None) or getattr(record, "state_history", None) or []
    timeline: list[tuple[str, float, str | None]] = []
    for entry in entries:
        if isinstance(entry, dict):
            state, at, reason = entry.get("state"), entry.get("at"), entry.get("reason")
        elif isinstance(entry, (tuple, list)):
            state, at = entry[0], entry[1]
            reason = entry[2] if len(entry) > 2 else None
        else:
            state, at, reason = getattr(entry, "state", None), getattr(entry, "at", None), getattr(entry, "reason", None)
        if state is not None and at is not None:
            timeline.append((str(state), float(at), reason))
    timeline.sort(key=lambda item: item[1])
    return timeline


def ranks_of(record: Any) -> int:
    return int(getattr(record, "num_ranks", 1) or 1)
