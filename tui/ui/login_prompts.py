"""The app's answer to a cluster login's keyboard-interactive questions (2FA): a dialog, asked from a worker.

`ask_in_dialog(app)` is what `Dinf.login_questions` takes: (cluster, title, instructions, prompts)
-> the answers, or None. The transport calls it in the thread that connects (a thread worker, never
the UI thread); it blocks that thread while `LoginPromptDialog` is shown on the UI thread
(`app.call_from_thread`) and returns what was typed, or None when the user pressed Escape (the
service turns that into a failed login naming the cluster). Answers are kept nowhere.

What it doesn't: connect, or decide what follows a cancelled login (the app's SSH-trouble handling
shows it like any failed login).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tui.ui.screens.dialogs import LoginPromptDialog

LoginQuestions = Callable[[str, str, str, list[tuple[str, bool]]], "list[str] | None"]


def ask_in_dialog(app: Any) -> LoginQuestions:
    """A `Dinf.login_questions` that shows each cluster's questions in a dialog of `app`."""

    def ask(cluster: str, title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str] | None:
        async def show() -> list[str] | None:
            answered: asyncio.Future = asyncio.get_running_loop().create_future()

            def dismissed(answers: list[str] | None) -> None:
                if not answered.done():
                    answered.set_result(answers)

            app.push_screen(LoginPromptDialog(cluster, title, instructions, prompts), dismissed)
            return await answered

        try:
            return app.call_from_thread(show)
        except Exception:  # noqa: BLE001 - the app is closing: nobody is there to answer
            return None

    return ask
