"""Keyboard-interactive logins (2FA) in the paramiko transport, and the terminal that answers them.

The terminal handler is driven through a real pseudo-terminal; the logins go to the minicluster's
second sshd, which wants the key AND a one-time code (PAM), as a 2FA login node does.
"""

from __future__ import annotations

import os
import pty
import threading
import time
import uuid

import pytest

from remote.keyboard_interactive import PromptsNotAnswered, TerminalPrompts
from remote.ssh import AuthenticationFailed, SshConnection, SshOptions

# --- the terminal ------------------------------------------------------------------------------------


class Typist:
    """The person at a pseudo-terminal: waits for each prompt, types its answer, records the screen."""

    def __init__(self, answers: dict[bytes, bytes]):
        self.controller, self.terminal = pty.openpty()
        self.path = os.ttyname(self.terminal)
        self.answers = dict(answers)
        self.screen = b""
        self.thread = threading.Thread(target=self._type, daemon=True)
        self.thread.start()

    def _type(self) -> None:
        deadline = time.monotonic() + 10
        while self.answers and time.monotonic() < deadline:
            self.screen += os.read(self.controller, 1024)
            for prompt in [p for p in self.answers if p in self.screen]:
                os.write(self.controller, self.answers.pop(prompt))

    def finish(self) -> str:
        self.thread.join(5)
        time.sleep(0.1)
        os.set_blocking(self.controller, False)
        try:
            self.screen += os.read(self.controller, 4096)
        except BlockingIOError:
            pass
        os.close(self.controller)
        os.close(self.terminal)
        return self.screen.decode("utf-8", "replace")


def test_the_terminal_shows_the_questions_and_hides_what_must_not_be_echoed():
    typist = Typist({b"Username: ": b"me\n", b"Code: ": b"123456\n"})
    answers = TerminalPrompts("gpu", tty_path=typist.path)(
        "Duo \x1b]0;pwned\x07two-factor", "Enter the code from your token",
        [("Username: ", True), ("Code: ", False)],
    )
    screen = typist.finish()
    assert answers == ["me", "123456"]
    assert "cluster gpu: keyboard-interactive login" in screen
    assert "Duo ]0;pwnedtwo-factor" in screen and "\x1b" not in screen, "the server's text, without escapes"
    assert "Username: me" in screen, "an echoed prompt shows what was typed"
    assert "123456" not in screen, "a hidden answer never reaches the screen"


def test_end_of_input_at_the_terminal_cancels_the_login():
    typist = Typist({b"Code: ": b"\x04"})  # Ctrl-D
    with pytest.raises(PromptsNotAnswered, match="login to cluster 'gpu' cancelled at the terminal"):
        TerminalPrompts("gpu", tty_path=typist.path)("", "", [("Code: ", False)])
    typist.finish()


def test_without_a_terminal_the_error_names_the_cluster_and_the_way_out(tmp_path):
    prompts = TerminalPrompts("gpu", tty_path=str(tmp_path / "no-tty"))
    assert not prompts.available()
    with pytest.raises(PromptsNotAnswered) as caught:
        prompts("", "", [("Code: ", False)])
    message = str(caught.value)
    assert "cluster 'gpu'" in message and "no terminal" in message
    assert 'transport = "openssh" in [clusters.gpu]' in message


# --- logins against the 2FA sshd -------------------------------------------------------------------

pytestmark_slurm = pytest.mark.slurm


class Answers:
    """A handler that records what it was asked and answers `code` (or raises `error`)."""

    def __init__(self, code: str | None = None, error: Exception | None = None):
        self.code = code
        self.error = error
        self.asked: list[tuple[str, str, list[tuple[str, bool]]]] = []
        self.threads: list[str] = []

    def __call__(self, title, instructions, prompts):
        self.asked.append((title, instructions, prompts))
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return [self.code for _ in prompts]


def otp_connection(minicluster, answers: Answers | None) -> SshConnection:
    return SshConnection(minicluster.target(port=minicluster.otp_port),
                         SshOptions(allow_agent=False, look_for_keys=False, answer_prompts=answers,
                                    reconnect_attempts=1))


@pytestmark_slurm
def test_the_right_code_logs_in_and_slurm_answers(otp_minicluster):
    from remote.slurm_cluster import SlurmCluster

    answers = Answers(otp_minicluster.otp_code())
    cluster = SlurmCluster(otp_connection(otp_minicluster, answers), name="otp",
                           workdir=f"{otp_minicluster.home}/t-{uuid.uuid4().hex[:8]}")
    try:
        assert cluster.partitions() == [otp_minicluster.partition]
        assert cluster.connection.run(["whoami"]).stdout.strip() == otp_minicluster.user
        (_, _, prompts), = answers.asked  # one login, one question, for both commands
        assert len(prompts) == 1 and prompts[0][1] is False, "the code is asked hidden"
        assert "one-time code" in prompts[0][0]
        assert answers.threads == [threading.current_thread().name], "asked in the thread that connects"
    finally:
        cluster.close()


@pytestmark_slurm
def test_a_wrong_code_is_a_clear_authentication_error(otp_minicluster):
    answers = Answers("000000" if otp_minicluster.otp_code() != "000000" else "111111")
    with pytest.raises(AuthenticationFailed, match="refused the answers to its keyboard-interactive questions as "
                                                   "slurmtest: .*Check the one-time code"):
        otp_connection(otp_minicluster, answers).run(["true"])
    assert len(answers.asked) == 1, "asked once, not again behind the user's back"


@pytestmark_slurm
def test_a_cancelled_question_stops_the_login_with_the_handlers_reason(otp_minicluster):
    answers = Answers(error=PromptsNotAnswered("login to cluster 'otp' cancelled"))
    with pytest.raises(AuthenticationFailed, match="login to .* stopped: login to cluster 'otp' cancelled"):
        otp_connection(otp_minicluster, answers).run(["true"])
    assert len(answers.asked) == 1


@pytestmark_slurm
def test_without_a_handler_the_login_says_it_needs_one(otp_minicluster):
    with pytest.raises(AuthenticationFailed, match="asks keyboard-interactive questions .* nothing was given"):
        otp_connection(otp_minicluster, None).run(["true"])


@pytestmark_slurm
def test_a_key_only_login_asks_nothing(minicluster):
    answers = Answers("never used")
    conn = SshConnection(minicluster.target(), SshOptions(allow_agent=False, look_for_keys=False,
                                                          answer_prompts=answers))
    with conn:
        assert conn.run(["true"]).ok
    assert answers.asked == []


@pytestmark_slurm
def test_where_the_server_wants_the_code_alone_it_is_asked_without_a_key(otp_minicluster):
    """Password + OTP sites: keyboard-interactive is the only method. Keys offered first are refused
    (or there are none); the questions then log in, as `ssh` would go on to them."""
    for key_files in ((otp_minicluster.key,), ()):
        answers = Answers(otp_minicluster.otp_code())
        conn = SshConnection(otp_minicluster.target(port=otp_minicluster.otp_only_port, key_files=key_files),
                             SshOptions(allow_agent=False, look_for_keys=False, answer_prompts=answers))
        with conn:
            assert conn.run(["whoami"]).stdout.strip() == otp_minicluster.user
        assert len(answers.asked) == 1, key_files


@pytestmark_slurm
def test_a_refused_key_on_the_2fa_server_is_the_keys_error_and_asks_nothing(otp_minicluster, tmp_path):
    """Key first, then the code: a wrong key never reaches the question (and says it was the key)."""
    import subprocess

    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    answers = Answers(otp_minicluster.otp_code())
    conn = SshConnection(otp_minicluster.target(port=otp_minicluster.otp_port, key_files=(str(wrong),)),
                         SshOptions(allow_agent=False, look_for_keys=False, answer_prompts=answers))
    with pytest.raises(AuthenticationFailed, match=f"refused authentication as slurmtest \\(tried {wrong}\\)"):
        conn.run(["true"])
    assert answers.asked == []


@pytestmark_slurm
def test_without_a_handler_a_code_only_server_reports_the_keys_failure(otp_minicluster):
    conn = SshConnection(otp_minicluster.target(port=otp_minicluster.otp_only_port),
                         SshOptions(allow_agent=False, look_for_keys=False, reconnect_attempts=1))
    with pytest.raises(AuthenticationFailed, match="refused authentication as slurmtest") as caught:
        conn.run(["true"])
    assert "keyboard-interactive" in str(caught.value), "paramiko's reason names the method the server wants"
