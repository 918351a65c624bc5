"""Suite-wide fixtures: the real minicluster (Slurm + sshd on this machine), for any test folder.

`tests/cluster/minicluster up` writes `<state dir>/connection.json`; tests find it through
$MINICLUSTER_STATE_DIR (set by sourcing `<state dir>/env.sh`) or the default /tmp/minicluster.
Without a running cluster, tests marked `slurm` are skipped — unless DINF_REQUIRE_SLURM=1 (CI),
where they fail instead, so a broken cluster can never turn the suite green.
"""

from __future__ import annotations

import json
import os
import sys
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

    def target(self, **overrides):
        from remote.ssh import SshTarget

        fields = dict(alias=self.host, hostname=self.host, port=self.port, user=self.user,
                      key_files=(self.key,), known_hosts=self.known_hosts)
        return SshTarget(**{**fields, **overrides})

    def connection(self, **options):
        from remote.ssh import SshConnection, SshOptions

        # Only the minicluster's own key: never the agent or ~/.ssh keys of whoever runs the tests.
        return SshConnection(self.target(), SshOptions(allow_agent=False, look_for_keys=False, **options))

    def write_ssh_config(self, path: Path, alias: str = "mini") -> str:
        """An ssh_config file naming the minicluster `alias` (for code that takes a host alias)."""
        Path(path).write_text(
            f"Host {alias}\n  HostName {self.host}\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {self.known_hosts}\n"
        )
        return str(path)

    def python_environment(self):
        """This checkout's interpreter (the minicluster made its directories reachable for the test user)."""
        from remote.cluster import PythonEnvironment

        return PythonEnvironment(python=sys.executable, env={"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})

    def cluster(self, job_command: list[str] | None = None, **options):
        """A SlurmCluster with a fresh remote work directory of its own."""
        from remote.slurm_cluster import SlurmCluster

        return SlurmCluster(self.connection(**options), name="mini", workdir=f"{self.home}/t-{uuid.uuid4().hex[:8]}",
                            python=self.python_environment(), job_command=job_command)


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
        cgroups=bool(data.get("cgroups")),
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
