"""Suite-wide fixtures: the real minicluster (Slurm + sshd on this machine), for any test folder.

`tests/cluster/minicluster up` writes `<state dir>/connection.json`; tests find it through
$MINICLUSTER_STATE_DIR (set by sourcing `<state dir>/env.sh`) or the default /tmp/minicluster.
Without a running cluster, tests marked `slurm` are skipped — unless DINF_REQUIRE_SLURM=1 (CI),
where they fail instead, so a broken cluster can never turn the suite green.

`transport` parametrizes a test over both ways dinf reaches a cluster: paramiko in-process, and the
OpenSSH binary (`remote.openssh`). `otp_minicluster` is the same cluster through its second sshd,
which wants a keyboard-interactive one-time code after the key (2FA).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Minicluster:
    """What `connection.json` says about the running minicluster."""

    host: str
    port: int
    user: str
    key: str
    known_hosts: str
    home: str
    state_dir: str
    nodes: int
    gpus_per_node: int
    partition: str
    cgroups: bool
    otp_port: int | None = None
    """The 2FA sshd's port (key, then a one-time code); None on a cluster started before it existed."""
    otp_only_port: int | None = None
    """The same sshd on another port, where the one-time code alone logs in (no key)."""
    otp_code_file: str | None = None

    def otp_code(self) -> str:
        return Path(self.otp_code_file).read_text().strip()

    def target(self, **overrides):
        from remote.ssh import SshTarget

        fields = dict(alias=self.host, hostname=self.host, port=self.port, user=self.user,
                      key_files=(self.key,), known_hosts=self.known_hosts)
        return SshTarget(**{**fields, **overrides})

    def connection(self, **options):
        from remote.ssh import SshConnection, SshOptions

        # Only the minicluster's own key: never the agent or ~/.ssh keys of whoever runs the tests.
        return SshConnection(self.target(), SshOptions(allow_agent=False, look_for_keys=False, **options))

    def write_ssh_config(self, path: Path, alias: str = "mini", *, port: int | None = None,
                         known_hosts: str | None = None, extra: str = "") -> str:
        """An ssh_config file naming the minicluster `alias` (for code that takes a host alias)."""
        Path(path).write_text(
            f"Host {alias}\n  HostName {self.host}\n  Port {port or self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known_hosts or self.known_hosts}\n"
            + extra
        )
        return str(path)

    def openssh(self, *, port: int | None = None, known_hosts: str | None = None, **options):
        """An OpenSshConnection to the minicluster: ssh -F a config of its own, BatchMode (tests never prompt)."""
        from remote.openssh import OpenSshConnection, OpenSshOptions

        config = _scratch_dir() / f"ssh_config-{port or self.port}-{uuid.uuid4().hex[:8]}"
        self.write_ssh_config(config, port=port, known_hosts=known_hosts)
        return OpenSshConnection("mini", OpenSshOptions(ssh_config=str(config), batch_mode=True, **options))

    def python_environment(self):
        """This checkout's interpreter (the minicluster made its directories reachable for the test user)."""
        from remote.cluster import PythonEnvironment

        return PythonEnvironment(python=sys.executable, env={"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})

    def cluster(self, job_command: list[str] | None = None, *, transport: str = "paramiko", **options):
        """A SlurmCluster with a fresh remote work directory of its own, over either transport."""
        from remote.slurm_cluster import SlurmCluster

        connection = self.openssh(**options) if transport == "openssh" else self.connection(**options)
        return SlurmCluster(connection, name="mini", workdir=f"{self.home}/t-{uuid.uuid4().hex[:8]}",
                            python=self.python_environment(), job_command=job_command)


@functools.cache
def _scratch_dir() -> Path:
    """One directory per test process for the ssh_config files of `Minicluster.openssh` (removed at exit)."""
    path = tempfile.mkdtemp(prefix="dinf-test-ssh-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return Path(path)


def _load_minicluster() -> Minicluster | str:
    state_dir = Path(os.environ.get("MINICLUSTER_STATE_DIR", "/tmp/minicluster"))
    path = state_dir / "connection.json"
    if not path.is_file():
        return f"no {path}: start it with `bash tests/cluster/minicluster up`"
    data = json.loads(path.read_text())
    pidfile = state_dir / "run" / "sshd.pid"
    if not pidfile.is_file() or not Path(f"/proc/{pidfile.read_text().strip()}").exists():
        return f"the minicluster at {state_dir} is down: `bash tests/cluster/minicluster up`"
    return Minicluster(
        host=data["host"], port=int(data["port"]), user=data["user"], key=data["key"],
        known_hosts=data["known_hosts"], home=data["home"], state_dir=data["state_dir"],
        nodes=int(data["nodes"]), gpus_per_node=int(data["gpus_per_node"]), partition=data["partition"],
        cgroups=bool(data.get("cgroups")), otp_port=data.get("otp_port"), otp_only_port=data.get("otp_only_port"),
        otp_code_file=data.get("otp_code_file"),
    )


@pytest.fixture(scope="session")
def minicluster() -> Minicluster:
    """The running minicluster; skips (or fails under DINF_REQUIRE_SLURM=1) when there is none."""
    found = _load_minicluster()
    if isinstance(found, str):
        if os.environ.get("DINF_REQUIRE_SLURM") == "1":
            pytest.fail(f"DINF_REQUIRE_SLURM=1 but {found}")
        pytest.skip(found)
    return found


@pytest.fixture(params=["paramiko", "openssh"])
def transport(request) -> str:
    """How the test reaches the cluster: paramiko (dinf's default) or the user's `ssh` binary."""
    return request.param


@pytest.fixture(scope="session")
def otp_minicluster(minicluster) -> Minicluster:
    """The minicluster through its 2FA sshd (key, then a keyboard-interactive one-time code)."""
    state_dir = Path(minicluster.state_dir)
    otp_pid = state_dir / "run" / "sshd_otp.pid"
    if minicluster.otp_only_port is None or not otp_pid.is_file() or not Path(f"/proc/{otp_pid.read_text().strip()}").exists():
        why = f"the minicluster at {state_dir} has no 2FA sshd: `bash tests/cluster/minicluster up` starts it"
        if os.environ.get("DINF_REQUIRE_SLURM") == "1":
            pytest.fail(f"DINF_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    return minicluster
