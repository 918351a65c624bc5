"""A cluster login's keyboard-interactive questions (2FA) in the app: the dialog, driven with Pilot.

The app hands the service `ask_in_dialog` when it opens; a transport asks from a worker thread, the
dialog shows on the UI thread, and the answers (or Escape's None) come back to that thread. Against
the minicluster's real 2FA sshd: tests/tui/test_app_slurm.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pilot_wait import wait_for
from textual.widgets import Input

from tui.ui.screens.dialogs import LoginPromptDialog

SIZE = (120, 40)


def ask_from_a_worker(app, *question) -> tuple[threading.Thread, dict]:
    """Ask as a transport does: from a thread that is not the UI's, blocking until answered."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("answers", app.service.login_questions(*question)),
                              daemon=True)
    thread.start()
    return thread, result


async def test_the_questions_show_in_a_dialog_and_the_answers_reach_the_asking_thread(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the service")
        thread, result = ask_from_a_worker(app, "gpu[/]", "Duo [b]2FA", "Enter the code from your token",
                                           [("Username: ", True), ("Passcode or option (1-3): ", False)])
        await wait_for(pilot, lambda: isinstance(app.screen, LoginPromptDialog), what="the login dialog")
        dialog = app.screen
        shown = " ".join(str(widget.render()) for widget in dialog.query(".dialog-question, .login-text, .login-prompt"))
        assert "gpu[/]" in shown and "Duo [b]2FA" in shown, "the server's text is data, not markup"
        assert "Passcode or option (1-3):" in shown
        username, code = dialog.query(Input)
        assert (username.password, code.password) == (False, True), "hidden where the server says not to echo"
        assert app.focused is username

        await pilot.press(*"me", "enter")
        assert app.focused is code, "Enter moves to the next question"
        await pilot.press(*"123456", "enter")
        await wait_for(pilot, lambda: not thread.is_alive(), what="the asking thread to get its answers")
        assert result["answers"] == ["me", "123456"]
        assert not isinstance(app.screen, LoginPromptDialog)


async def test_escape_cancels_and_the_asking_thread_gets_none(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the service")
        thread, result = ask_from_a_worker(app, "gpu", "", "", [("Code: ", False)])
        await wait_for(pilot, lambda: isinstance(app.screen, LoginPromptDialog), what="the login dialog")
        await pilot.press(*"12", "escape")
        await wait_for(pilot, lambda: not thread.is_alive(), what="the asking thread to be told")
        assert result["answers"] is None
        assert not isinstance(app.screen, LoginPromptDialog)


def test_a_declined_question_stops_the_login_naming_the_cluster(tmp_path: Path):
    """The service turns the dialog's None into the error the transport ends the login with."""
    from remote.keyboard_interactive import PromptsNotAnswered
    from tui.core.service import Dinf

    config = tmp_path / "config.toml"
    config.write_text('[clusters.gpu]\nhost = "gpu-login"\n')
    asked = []
    with Dinf(data_dir=tmp_path / "data", config_path=config) as dinf:
        dinf.login_questions = lambda *question: asked.append(question)  # answers None
        answer = dinf.cluster("gpu").connection.options.answer_prompts
        with pytest.raises(PromptsNotAnswered, match=r"login to cluster 'gpu' cancelled: its keyboard-interactive"):
            answer("", "Enter the code", [("Code: ", False)])
    assert asked == [("gpu", "", "Enter the code", [("Code: ", False)])]
