"""`dinf` against the real minicluster (Slurm 22.05 + slurmdbd behind a key-only sshd).

Configured the way a user configures dinf: a Host alias in ~/.ssh/config (a private HOME here) and a
[clusters.mini] section in the TOML file naming it. submit --wait -> show (measurements, real sacct)
-> export and tag -> logs of rank 1 on the second node; and a cancel of a running job.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import REPO_ROOT
from tui.cli.main import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

pytestmark = pytest.mark.slurm

TINY_PP2 = [
    "--mode", "pp", "--set", "pp_size=2", "--set", "model.config=tiny", "--batch-sizes", "1,2",
    "--max-new-tokens", "4", "--set", "repeats=1", "--set", "warmup=0", "--set", "num_requests=2",
    "--set", "device=cpu",
]


def user_home(tmp_path, minicluster, known_hosts: str):
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host mini\n  HostName {minicluster.host}\n  Port {minicluster.port}\n  User {minicluster.user}\n"
        f"  IdentityFile {minicluster.key}\n  UserKnownHostsFile {known_hosts}\n"
    )
    return home


@pytest.fixture
def slurm_dinf(dinf, minicluster, tmp_path):
    home = user_home(tmp_path, minicluster, minicluster.known_hosts)
    dinf.home.mkdir(parents=True)
    (dinf.home / "config.toml").write_text(
        f"""
[clusters.mini]
host = "mini"
workdir = "{minicluster.home}/cli-{uuid.uuid4().hex[:8]}"

[clusters.mini.python]
python = "{sys.executable}"
env = {{ PYTHONPATH = "{REPO_ROOT}", OMP_NUM_THREADS = "1" }}

[clusters.mini.slurm]
partition = "{minicluster.partition}"
nodes = 2
tasks_per_node = 1
time_limit = "00:10:00"
"""
    )
    dinf.env["HOME"] = str(home)
    return dinf


def test_submit_wait_show_logs_on_slurm(slurm_dinf):
    dinf = slurm_dinf
    script = dinf("submit", "--cluster", "mini", *TINY_PP2, "--dry-run")
    assert script.code == EXIT_OK, script.err
    assert "#SBATCH" in script.out and "--nodes=2" in script.out.replace(" ", "=")

    done = dinf("submit", "--cluster", "mini", *TINY_PP2, "--name", "slurm-e2e", "--wait", "--poll", "1", "--json")
    assert done.code == EXIT_OK, done.err
    record = done.json()
    assert record["state"] == "COMPLETED" and record["cluster"] == "mini" and record["num_ranks"] == 2

    shown = dinf("show", str(record["id"]), "--json").json()
    assert [m["batch_size"] for m in shown["measurements"]] == [1, 2]
    assert {r["rank"] for r in shown["measurements"][0]["rank_stats"]} == {0, 1}
    assert shown["accounting"] and shown["accounting"][0]["job_id"] == record["job_id"]
    states = [h["state"] for h in shown["history"]]
    assert states[0] == "DRAFT" and states[-1] == "COMPLETED"
    # the real worker's bundle, exported: its layout as submitted and every latency statistic it wrote
    exported = list(csv.DictReader(io.StringIO(dinf("export", "--run", str(record["id"])).out)))
    assert [(r["nodes"], r["ranks_per_node"], r["num_ranks"], r["dtype"]) for r in exported] == [
        ("2", "1", "2", "float32")] * 2
    for row in exported:
        assert float(row["ttft_min_s"]) <= float(row["ttft_median_s"]) <= float(row["ttft_p99_s"]) <= float(
            row["ttft_max_s"])
        assert row["itl_std_s"] != "" and int(row["peak_rss_bytes"]) > 0
        assert row["wall_ci95_s"] == ""  # one repeat: no interval, and none pretended
    assert dinf("tag", str(record["id"]), "+on-slurm").code == EXIT_OK
    assert [r["id"] for r in dinf("runs", "--no-refresh", "--json", "--tag", "on-slurm").json()] == [record["id"]]

    logs = dinf("logs", str(record["id"]), "--rank", "1", "--kind", "worker")
    assert logs.code == EXIT_OK, logs.err
    assert any("rank 1 phase done" in line for line in logs.out.splitlines())


def test_cancel_on_slurm(slurm_dinf):
    dinf = slurm_dinf
    submitted = dinf("submit", "--cluster", "mini", *TINY_PP2, "--max-new-tokens", "512", "--set", "repeats=50",
                     "--json")
    assert submitted.code == EXIT_OK, submitted.err
    run_id = str(submitted.json()["id"])
    deadline = time.monotonic() + 120
    while dinf("show", run_id, "--json").json()["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(1)
    cancelled = dinf("cancel", run_id, "--json")
    assert cancelled.code == EXIT_OK, cancelled.err
    assert cancelled.json()["state"] == "CANCELLED"


def test_unknown_host_key_refused_until_trusted(slurm_dinf, minicluster, tmp_path):
    dinf = slurm_dinf
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    (tmp_path / "user" / ".ssh" / "config").write_text(
        (tmp_path / "user" / ".ssh" / "config").read_text().replace(minicluster.known_hosts, str(empty_known_hosts))
    )
    refused = dinf("submit", "--cluster", "mini", *TINY_PP2, "--json")
    assert refused.code == EXIT_FAILED and refused.json()["state"] == "SUBMIT_FAILED"
    assert "HostKeyUnknown" in refused.json()["error"]

    shown = dinf("trust", "mini", "--json")
    assert shown.code == EXIT_FAILED and "dinf trust mini --fingerprint SHA256:" in shown.err
    fingerprint = shown.json()["fingerprint"]
    assert fingerprint.startswith("SHA256:") and empty_known_hosts.read_text() == ""
    wrong = dinf("trust", "mini", "--fingerprint", "SHA256:not-it")
    assert wrong.code == EXIT_BAD_INPUT and empty_known_hosts.read_text() == ""

    trusted = dinf("trust", "mini", "--fingerprint", fingerprint, "--json")
    assert trusted.code == EXIT_OK and trusted.json()["trusted"]
    assert empty_known_hosts.read_text().strip()
    assert dinf("trust", "mini").code == EXIT_OK  # already trusted now
    assert dinf("submit", "--cluster", "mini", *TINY_PP2, "--dry-run").code == EXIT_OK


def worker_pid(job_id: str, rank: int) -> int | None:
    """The pid of a rank's worker process (the minicluster's nodes share this machine's pid namespace)."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted <= environ and b"worker" in cmdline:
            return int(proc.name)
    return None


def test_a_rank_killed_with_sigkill_is_named_by_show(slurm_dinf):
    dinf = slurm_dinf
    submitted = dinf("submit", "--cluster", "mini", *TINY_PP2, "--max-new-tokens", "512", "--set", "repeats=50",
                     "--name", "killed-rank", "--json")
    assert submitted.code == EXIT_OK, submitted.err
    run_id, job_id = str(submitted.json()["id"]), submitted.json()["job_id"]
    deadline = time.monotonic() + 120
    while (pid := worker_pid(job_id, 1)) is None:
        assert time.monotonic() < deadline, "rank 1 never started"
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    while not (shown := dinf("show", run_id, "--json").json())["state"] in ("FAILED", "CANCELLED", "COMPLETED"):
        assert time.monotonic() < deadline + 120, f"the job never ended: {shown['state']}"
        time.sleep(1)
    failure = shown["failure"]
    assert shown["state"] == "FAILED" and failure is not None, shown
    assert (failure["rank"], failure["node"], failure["signal"]) == (1, "node2", 9), failure
    text = dinf("show", run_id, "--no-refresh").out
    assert "failure    rank 1 on node2 died first: killed by signal 9 (SIGKILL)" in text, text


def test_a_partition_the_cluster_lacks_is_bad_input_dry_run_or_not(slurm_dinf):
    dinf = slurm_dinf
    for dry_run in (["--dry-run"], []):
        result = dinf("submit", "--cluster", "mini", *TINY_PP2, "--partition", "nope", *dry_run)
        assert result.code == EXIT_BAD_INPUT, result.err
        assert "resources.partition: mini has no partition 'nope'; sinfo lists debug" in result.err
    assert dinf("runs", "--json", "--no-refresh").json() == []
