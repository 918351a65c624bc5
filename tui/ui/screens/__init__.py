"""The app's screens: the runs list, a run's live view, the new-run form, compare, and dialogs.

A screen asks the app for work by posting a request message (`tui.ui.messages`) and receives the
outcome as a message; it never calls the app's methods."""

from __future__ import annotations

from typing import Any


class FocusesRun:
    """A screen with a run in focus (its own, or the highlighted row): the app's run commands
    (compare, cancel, open from the palette) act on it."""

    def focused_run_id(self) -> int | None:
        raise NotImplementedError


def focused_run_id(screen: Any) -> int | None:
    return screen.focused_run_id() if isinstance(screen, FocusesRun) else None
