"""How a run record reads on screen: its state (with colour), times, elapsed time and timeline,
and how any text from outside dinf is shown.

Pure functions over the service's `RunRecord` snapshots (attribute access only, tolerant of
fields a record does not carry), so every screen formats runs the same way. No Textual here.

Text from outside dinf (run names, errors, log lines, host names, paths, cluster names, job ids,
reasons) is data: `plain()` makes it a `rich.text.Text`, never parsed as markup, with control
characters made visible so a string can neither restyle the screen nor move the cursor.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.text import Text

from storage.states import FINISHED_STATES, LIVE_STATES

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


CONTROL_SHOWN = "\ufffd"
"""What a control character looks like on screen (the log views use the same)."""
# C0 and C1 controls, DEL, and the bidi overrides that would reorder what the user reads. A tab
# becomes spaces so cell widths stay exact; in one-line text a newline shows as a return sign.
_CONTROLS = {c: CONTROL_SHOWN for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F),
                                        *range(0x2066, 0x206A))}
_CONTROLS[0x09] = "    "
_CONTROLS_KEEP_NEWLINES = {c: shown for c, shown in _CONTROLS.items() if c != 0x0A}
_CONTROLS[0x0A] = "\u23ce"  # ⏎


def printable(text: object, *, multiline: bool = False) -> str:
    """`text` as a string whose every character stands for itself on a terminal."""
    text = str(text)
    if text.isprintable():  # the common case, checked in C
        return text
    return text.translate(_CONTROLS_KEEP_NEWLINES if multiline else _CONTROLS)


def plain(text: object, style: str = "", *, multiline: bool = False) -> Text:
    """Outside text for a widget: shown literally, never parsed as markup."""
    # The style as a span, as markup would make it: Textual resolves a Text's base style through
    # CSS colour names (green = #008000), spans through the theme's palette.
    return Text.assemble((printable(text, multiline=multiline), style))


def state_text(state: str) -> Text:
    """A run state in its colour (the state may come from the scheduler: it is never markup)."""
    return plain(state, STATE_STYLES.get(state, "bold red" if state in FINISHED_STATES else ""))


def clock(ts: float | None) -> str:
    """Local wall-clock time of a Unix timestamp; '-' when there is none."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def short_clock(ts: float | None) -> str:
    """Local time of a Unix timestamp to the minute, without the year ('11-26 07:33'): for a column
    that must fit 80 terminal columns; '-' when there is none."""
    if ts is None:
        return "-"
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


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


class EngineFacts(Protocol):
    """A run as any layer holds it (`RunResult`, `tui.core.service.RunRecord`, `storage.models.Run`)."""

    engine_impl: str
    engine_compiled: bool
    engine_cuda_graphs: bool
    engine_capture_s: float | None


def describe_engine(run: EngineFacts) -> str:
    """The worker engine of a run in one line, e.g. 'impl fast (compiled, CUDA graphs; capture 41.2 s)'.

    Before its results are ingested a run shows what its spec asked for (no capture time yet).
    """
    settings = ["compiled" if run.engine_compiled else "eager"]
    if run.engine_cuda_graphs:
        settings.append("CUDA graphs")
    text = ", ".join(settings)
    if run.engine_capture_s is not None:
        text += f"; capture {run.engine_capture_s:.1f} s"
    quant = getattr(run, "quant_scheme", "none")  # runs from before quantization have none
    return f"impl {run.engine_impl} ({text})" + ("" if quant == "none" else f", {quant} weights")


def describe_accuracy(accuracy: dict) -> str:
    """A scored run's accuracy against the unquantized model, beside its noise floor, in one line."""
    floor = accuracy.get("noise_floor") or {}

    def part(a: dict) -> str:
        top1, kl = a.get("top1_agreement"), a.get("kl_mean")
        return (f"top-1 {top1:.1%}, KL {kl:.2e}, exact {a.get('exact_match')}/{a.get('prompts')}"
                if top1 is not None and kl is not None else "-")

    return f"{part(accuracy)} at batch {accuracy.get('batch_size')} (noise floor: {part(floor)})"
