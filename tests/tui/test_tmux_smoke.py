"""`dinf-tui` in a real terminal: a private tmux server, real keys, the screen read with capture-pane.

The first test walks the screens of a first launch; the second is the README's first command
(`dinf-tui --demo`) watched from submit to results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")

DINF_TUI = str(Path(sys.executable).with_name("dinf-tui"))


class Terminal:
    def __init__(self, command: str, env: dict[str, str], size: tuple[int, int] = (130, 40)) -> None:
        self.server = f"dinf-smoke-{uuid.uuid4().hex[:8]}"
        envs = " ".join(f"{key}={value}" for key, value in env.items())
        # The pane outlives the app so an exit (or a traceback) can still be read.
        # COLUMNS/LINES from the calling shell would override the pane size the app sees.
        shell = f"env -u COLUMNS -u LINES {envs} {command}; echo DINF-TUI-EXITED rc=$?; sleep 30"
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), shell)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def press(self, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", key)
            time.sleep(0.15)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "dinf-home"


def test_first_launch_screens_and_quit(home: Path):
    term = Terminal(DINF_TUI, {"DINF_HOME": str(home), "TERM": "xterm-256color"})
    try:
        screen = term.wait_for("No runs yet")
        assert "local" in screen and "d Demo" in screen  # connection bar and footer
        term.press("n")
        term.wait_for("Run name")
        screen = term.wait_for("Time limit")  # the whole form, Slurm options included
        assert "Parallel mode" in screen
        term.press("Escape")
        term.wait_for("No runs yet")
        term.press("C-p")
        term.wait_for("Demo run")  # the command palette lists dinf's commands
        term.press("Escape", "q")
        screen = term.wait_for("DINF-TUI-EXITED", timeout=15)
        assert "rc=0" in screen and "Traceback" not in screen
    finally:
        term.close()


@pytest.mark.slow
@pytest.mark.dist
def test_demo_from_the_readme_runs_to_results(home: Path):
    env = {"DINF_HOME": str(home), "TERM": "xterm-256color", "OMP_NUM_THREADS": "1"}
    term = Terminal(f"{DINF_TUI} --demo", env)
    try:
        term.wait_for("run 1", timeout=60)
        term.wait_for("[r1]", timeout=240)  # rank 1's log lines stream in
        screen = term.wait_for("COMPLETED", timeout=240)
        screen = term.wait_for("measurements", timeout=60)
        assert "output tok/s" in screen
        term.press("q")
        term.wait_for("DINF-TUI-EXITED rc=0", timeout=15)
    finally:
        term.close()
    assert os.path.exists(home / "dinf.db")


@pytest.mark.slow
@pytest.mark.dist
def test_quitting_leaves_the_job_running_and_a_restart_reattaches(home: Path):
    env = {"DINF_HOME": str(home), "TERM": "xterm-256color", "OMP_NUM_THREADS": "1"}
    term = Terminal(f"{DINF_TUI} --demo", env)
    try:
        term.wait_for("[r0]", timeout=240)  # the job is producing output
        term.press("q")
        term.wait_for("DINF-TUI-EXITED rc=0", timeout=15)
    finally:
        term.close()
    # dinf-tui is gone (a real process exit); start it again on the same home.
    term = Terminal(DINF_TUI, env)
    try:
        term.wait_for("demo", timeout=60)
        screen = term.wait_for("COMPLETED", timeout=240)  # reconciled, and ingested when it finished
        assert "CANCELLED" not in screen and "FAILED" not in screen
        term.press("Enter")
        term.wait_for("measurements", timeout=60)
        term.press("m")
        screen = term.wait_for("[r1]", timeout=30)  # the logs, read again from the start
    finally:
        term.close()
