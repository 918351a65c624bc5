"""The OpenSSH transport (`remote.openssh`): its ssh command line and error reading without a cluster,
then against the minicluster's sshd: host keys left to OpenSSH, the user's own ControlMaster reused,
and a 2FA login made once by the user (their master) serving every command after it.

The Slurm backend's own tests run over this transport too (`transport` in test_remote_slurm.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from remote.errors import AuthenticationFailed, ConnectionLost, HostKeyNotVerified, HostUnreachable
from remote.openssh import OpenSshConnection, OpenSshOptions
from remote.ssh import CommandFailed

# --- without a cluster: the command line and ssh's exit 255 --------------------------------------


class RecordedSsh:
    """Stands in for subprocess.run: records each argv and answers with the next scripted outcome."""

    def __init__(self, *outcomes: tuple[int, bytes, bytes]):
        self.outcomes = list(outcomes)
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        if "-G" in argv:  # the configuration query: no ControlPath configured
            return subprocess.CompletedProcess(argv, 0, b"user me\ncontrolpath none\n", b"")
        code, out, err = self.outcomes.pop(0)
        return subprocess.CompletedProcess(argv, code, out, err)


def connection(*outcomes, **options) -> tuple[OpenSshConnection, RecordedSsh]:
    recorded = RecordedSsh(*outcomes)
    options = {"run_process": recorded, "sleep": lambda s: None, "control_path": "/tmp/cm-%C", **options}
    return OpenSshConnection("gpu-login", OpenSshOptions(**options)), recorded


def test_the_command_line_is_one_quoted_argument_after_the_destination():
    conn, ssh = connection((0, b"ok\n", b""), ssh_config="/etc/dinf/ssh_config")
    assert conn.run(["echo", "a b", "$(touch x)"]).stdout == "ok\n"
    argv = ssh.calls[-1]
    assert argv[-3:] == ["--", "gpu-login", "echo 'a b' '$(touch x)'"]
    assert argv[argv.index("-F") + 1] == "/etc/dinf/ssh_config"
    assert "BatchMode=yes" in argv and "ControlPath=/tmp/cm-%C" in argv and "ControlMaster=auto" in argv
    assert not any("StrictHostKeyChecking" in a for a in argv), "host keys are OpenSSH's business"


def test_in_a_terminal_ssh_may_ask_and_user_at_host_port_is_understood():
    conn = OpenSshConnection("me@login.example.org:2200", OpenSshOptions(batch_mode=False, control_path="/x/%C"))
    argv = conn.ssh_argv("true")
    assert "BatchMode=yes" not in argv
    assert argv[argv.index("-p") + 1] == "2200" and argv[-2] == "me@login.example.org"


@pytest.mark.parametrize(
    ("stderr", "error", "message"),
    [
        (b"Host key verification failed.\r\n", HostKeyNotVerified, "never relaxes StrictHostKeyChecking"),
        (b"me@gpu-login: Permission denied (publickey,keyboard-interactive).\r\n", AuthenticationFailed,
         "ControlPath=/tmp/cm-%C"),
        (b"ssh: Could not resolve hostname gpu-login: Name or service not known\r\n", HostUnreachable, "gpu-login"),
        (b"ssh: connect to host 10.0.0.1 port 22: Connection refused\r\n", HostUnreachable, "Connection refused"),
    ],
)
def test_ssh_failures_are_the_transport_errors_of_paramiko(stderr, error, message):
    conn, ssh = connection((255, b"", stderr))
    with pytest.raises(error, match=re.escape(message)):
        conn.run(["squeue"])
    assert len([c for c in ssh.calls if "-G" not in c]) == 1, "a login or host-key refusal is not retried"


def test_a_command_exiting_255_is_its_own_failure_not_ssh_s():
    conn, _ = connection((255, b"", b"my tool: bad input\n"))
    with pytest.raises(CommandFailed) as caught:
        conn.run(["mytool"])
    assert caught.value.exit_code == 255 and "bad input" in str(caught.value)


def test_a_dropped_connection_repeats_a_status_query_but_never_a_submission():
    dropped = (255, b"", b"Connection closed by 10.0.0.1 port 22\r\n")
    conn, ssh = connection(dropped, (0, b"1 RUNNING\n", b""))
    assert conn.run(["squeue"]).stdout == "1 RUNNING\n"
    conn, ssh = connection(dropped, (0, b"42\n", b""))
    with pytest.raises(ConnectionLost, match="its outcome is unknown"):
        conn.run(["sbatch", "job.sbatch"], idempotent=False)
    assert len(ssh.outcomes) == 1, "sbatch was not run a second time"


# --- against the minicluster -----------------------------------------------------------------------

pytest_slurm = pytest.mark.slurm


def short_dir() -> str:
    """A fresh directory with a short path: a ControlPath must fit a unix socket's ~100 bytes."""
    return tempfile.mkdtemp(prefix="dcm-", dir="/tmp")


def end_master(conn: OpenSshConnection) -> None:
    """Stop a master this test started (by its socket; never anyone else's)."""
    argv = [conn.options.ssh, *conn._config_args(), *conn.control_options(), "-O", "exit", "--", conn.destination]
    subprocess.run(argv, capture_output=True, timeout=20, check=False)


@pytest_slurm
def test_an_unknown_host_key_is_refused_by_openssh_and_nothing_recorded(minicluster):
    known = Path(short_dir()) / "known_hosts"
    known.write_text("")
    conn = minicluster.openssh(known_hosts=str(known), control_path=f"{known.parent}/%C")
    with pytest.raises(HostKeyNotVerified, match=r"run `ssh mini` in a terminal"):
        conn.run(["true"])
    assert known.read_text() == ""
    shutil.rmtree(known.parent)


@pytest_slurm
def test_a_refused_key_is_an_authentication_error(minicluster, tmp_path):
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    config = Path(short_dir())
    (config / "ssh_config").write_text(
        f"Host mini\n  HostName {minicluster.host}\n  Port {minicluster.port}\n  User {minicluster.user}\n"
        f"  IdentityFile {wrong}\n  IdentitiesOnly yes\n  UserKnownHostsFile {minicluster.known_hosts}\n"
    )
    conn = OpenSshConnection("mini", OpenSshOptions(ssh_config=str(config / "ssh_config"),
                                                    control_path=f"{config}/%C"))
    with pytest.raises(AuthenticationFailed, match=r"mini refused the login through ssh:\n.*Permission denied"):
        conn.run(["true"])
    shutil.rmtree(config)


@pytest_slurm
def test_an_unreachable_port_is_host_unreachable(minicluster):
    sockets = short_dir()
    conn = minicluster.openssh(port=1, control_path=f"{sockets}/%C")
    with pytest.raises(HostUnreachable, match="Connection refused"):
        conn.run(["true"])
    shutil.rmtree(sockets)


@pytest_slurm
def test_the_users_own_control_master_is_used_untouched(minicluster):
    sockets = short_dir()
    config = Path(sockets) / "ssh_config"
    minicluster.write_ssh_config(config, extra=f"  ControlMaster auto\n  ControlPath {sockets}/user-%C\n"
                                               "  ControlPersist 60\n")
    conn = OpenSshConnection("mini", OpenSshOptions(ssh_config=str(config)))
    try:
        assert conn.control_options() == [], "dinf adds no ControlPath of its own"
        assert conn.run(["whoami"]).stdout.strip() == minicluster.user
        assert [p.name for p in Path(sockets).iterdir() if p.name.startswith("user-")], "the user's socket"
        assert conn.is_connected
    finally:
        end_master(conn)
        shutil.rmtree(sockets)


@pytest_slurm
def test_a_2fa_login_made_once_with_the_users_master_serves_every_command(otp_minicluster, tmp_path):
    """BatchMode can't answer a one-time code: the error says which command opens a master. The user
    runs it (here ssh asks SSH_ASKPASS for the code, as a terminal would ask them); from then on dinf's
    ssh commands ride that master without another question, a Slurm job included."""
    from remote.cluster import JobState, Resources, RunBundle
    from remote.slurm_cluster import SlurmCluster

    sockets = short_dir()
    conn = otp_minicluster.openssh(port=otp_minicluster.otp_port, control_path=f"{sockets}/%C")
    try:
        with pytest.raises(AuthenticationFailed, match="keyboard-interactive") as caught:
            conn.run(["true"])
        hint = str(caught.value).split("connection: `", 1)[1].split("`", 1)[0]
        assert f"ControlPath={sockets}/%C" in hint

        askpass = tmp_path / "askpass"
        askpass.write_text(f"#!/bin/sh\ncat {otp_minicluster.otp_code_file}\n")
        askpass.chmod(0o700)
        login = subprocess.run(hint, shell=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
                               env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"})
        assert login.returncode == 0, login.stderr

        cluster = SlurmCluster(conn, name="otp", workdir=f"{otp_minicluster.home}/t-{uuid.uuid4().hex[:8]}",
                               job_command=["bash", "-c", 'echo "ran on $(hostname)" > "$1"/ran.txt', "x",
                                            "{output_dir}"])
        bundle = RunBundle(run_id=f"otp{uuid.uuid4().hex[:8]}", job_name="dinf-otp", spec_json="{}",
                           prompts_jsonl=None, resources=Resources(nodes=1, tasks_per_node=1))
        prepared = cluster.prepare(bundle)
        job_id = cluster.submit(prepared, bundle)
        deadline = time.monotonic() + 120
        while not (status := cluster.status([job_id])[job_id]).state.is_terminal and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.state == JobState.COMPLETED, status
        assert cluster.read_text(f"{prepared.output_dir}/ran.txt").startswith("ran on node")
    finally:
        end_master(conn)
        shutil.rmtree(sockets)
