"""Answering an SSH server's keyboard-interactive questions: one-time codes, 2FA, PAM prompts.

A login node that wants more than a key (`AuthenticationMethods publickey,keyboard-interactive`)
sends a title, instructions and a list of prompts, each saying whether the answer may be echoed.
Whoever opens the connection hands the transport a `PromptHandler` that answers them:
`TerminalPrompts` asks on the controlling terminal (the headless `dinf`); the Textual app shows a
dialog (`tui.login_prompts`). A handler that can't or won't answer raises `PromptsNotAnswered`.

What it doesn't: speak SSH (`remote.ssh` calls the handler, in the thread that connects), keep
answers (they go to the server and nowhere else: not stored, not logged), or trust what the server
sends: its text is data, shown with control characters removed (no escape sequences reach a terminal).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

from remote.cluster import ClusterError

Prompt = tuple[str, bool]
"""(the text the server shows, whether the answer may be echoed)."""

PromptHandler = Callable[[str, str, list[Prompt]], list[str]]
"""(title, instructions, prompts) -> one answer per prompt, in order."""


class PromptsNotAnswered(ClusterError):
    """The server's questions got no answers: no terminal to ask on, or the user cancelled."""


def shown_text(text: str) -> str:
    """Server text fit for a terminal or a label: control characters (escape sequences) removed."""
    return "".join(ch for ch in text if ch in "\n\t" or (ch.isprintable() and ch != "\x7f"))


def needs_a_terminal(cluster: str) -> PromptsNotAnswered:
    return PromptsNotAnswered(
        f"cluster {cluster!r} asks keyboard-interactive questions (a one-time code or other second factor), "
        "and there is no terminal to ask them on. Run dinf in a terminal, or set transport = \"openssh\" in "
        f"[clusters.{cluster}] and log in once with your own ssh (ControlMaster) so dinf reuses that connection."
    )


class TerminalPrompts:
    """Asks on the controlling terminal (/dev/tty, as OpenSSH does), so piped stdin/stdout don't matter.

    Each answer is one line; for a hidden prompt (echo off) the terminal's echo is off while it is
    typed and restored afterwards, whatever happens (Ctrl-C included).
    """

    def __init__(self, cluster: str, *, tty_path: str = "/dev/tty"):
        self.cluster = cluster
        self.tty_path = tty_path

    def available(self) -> bool:
        """Whether this process has a terminal to ask on."""
        try:
            fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return False
        os.close(fd)
        return True

    def __call__(self, title: str, instructions: str, prompts: list[Prompt]) -> list[str]:
        try:
            fd = os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            raise needs_a_terminal(self.cluster) from None
        # A terminal can't seek, so not open(..., "r+"): text over the raw device, as getpass does.
        tty = io.TextIOWrapper(io.FileIO(fd, "r+"), encoding="utf-8", errors="replace", line_buffering=True)
        with tty:
            header = [f"cluster {self.cluster}: keyboard-interactive login"]
            header += [shown_text(t).strip() for t in (title, instructions) if t.strip()]
            tty.write("".join(f"{line}\n" for line in header))
            answers = []
            for text, echo in prompts:
                try:
                    line = _read_line(tty, shown_text(text)) if echo else _read_hidden(tty, shown_text(text))
                except KeyboardInterrupt:
                    line = ""
                if not line:  # end of input (Ctrl-D) or Ctrl-C
                    if echo:
                        tty.write("\n")
                    raise PromptsNotAnswered(f"keyboard-interactive login to cluster {self.cluster!r} "
                                             "cancelled at the terminal")
                answers.append(line.rstrip("\n"))
            return answers


def _read_line(tty, prompt: str) -> str:
    tty.write(prompt)
    tty.flush()
    return tty.readline()


def _read_hidden(tty, prompt: str) -> str:
    """One line from the terminal with its echo off (restored in any case), as getpass does: echo
    goes off (and what was typed ahead is dropped) BEFORE the prompt shows, so nothing typed after it is echoed."""
    import termios  # POSIX only; imported where a hidden answer is read

    fd = tty.fileno()
    before = termios.tcgetattr(fd)
    hidden = list(before)
    hidden[3] &= ~termios.ECHO  # lflag
    termios.tcsetattr(fd, termios.TCSAFLUSH, hidden)
    try:
        return _read_line(tty, prompt)
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, before)
        tty.write("\n")  # the Enter that was not echoed
