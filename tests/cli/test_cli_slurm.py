"""`dinf` against the real minicluster (Slurm 22.05 + slurmdbd behind a key-only sshd).

Configured the way a user configures dinf: a Host alias in ~/.ssh/config (a private HOME here) and a
[clusters.mini] section in the TOML file naming it. submit --wait -> show (measurements, real sacct)
-> export and tag -> logs of rank 1 on the second node; and a cancel of a running job — over both
transports (paramiko, and `transport = "openssh"`). Then the 2FA login: the minicluster's second sshd asks
for a one-time code after the key, which `dinf` asks on its terminal, and refuses clearly where there is none.
"""

from __future__ import annotations

import csv
import fcntl
import io
import itertools
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import DINF, REPO_ROOT
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


def configure_mini(dinf, minicluster, tmp_path, transport: str = "paramiko"):
    home = user_home(tmp_path, minicluster, minicluster.known_hosts)
    dinf.home.mkdir(parents=True)
    # ssh reads the ~/.ssh/config of the passwd entry, not of $HOME: name the test's file to it.
    openssh = f'transport = "openssh"\nssh_config = "{home}/.ssh/config"\n' if transport == "openssh" else ""
    (dinf.home / "config.toml").write_text(
        f"""
[clusters.mini]
host = "mini"
workdir = "{minicluster.home}/cli-{uuid.uuid4().hex[:8]}"
{openssh}

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


@pytest.fixture
def slurm_dinf(dinf, minicluster, tmp_path):
    return configure_mini(dinf, minicluster, tmp_path)


@pytest.fixture
def transport_dinf(dinf, minicluster, tmp_path, transport):
    """`slurm_dinf` over each transport."""
    return configure_mini(dinf, minicluster, tmp_path, transport)


def test_submit_wait_show_logs_on_slurm(transport_dinf):
    dinf = transport_dinf
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


def test_cancel_on_slurm(transport_dinf):
    dinf = transport_dinf
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


HOSTILE_COMMENT = 'it\'s "q" # not a comment \\ back $(touch CANARY) `touch CANARY` ünï'


def test_site_options_reach_slurm_and_serial_cells_wait_for_each_other(slurm_dinf, minicluster):
    """--exclusive, an extra #SBATCH line with hostile free text, and a dependency, as Slurm recorded
    them (scontrol, squeue); then an experiment's cells chained with --serial. Every job is held
    (--sbatch=--hold): nothing runs, the queue is only asked what it holds."""
    dinf = slurm_dinf
    jobs: list[str] = []
    with minicluster.connection() as conn:
        try:
            first = dinf("submit", "--cluster", "mini", *TINY_PP2, "--sbatch=--hold", "--json")
            assert first.code == EXIT_OK, first.err
            jobs.append(first.json()["job_id"])
            second = dinf("submit", "--cluster", "mini", *TINY_PP2, "--exclusive", "--sbatch", "--hold",
                          "--sbatch", f"--comment={HOSTILE_COMMENT}", "--dependency", f"afterok:{jobs[0]}", "--json")
            assert second.code == EXIT_OK, second.err
            jobs.append(second.json()["job_id"])
            shown = conn.run(["scontrol", "show", "job", jobs[1]]).stdout
            assert f"Dependency=afterok:{jobs[0]}(unfulfilled)" in shown and "OverSubscribe=NO" in shown, shown
            assert "Reason=JobHeldUser" in conn.run(["scontrol", "show", "job", jobs[0]]).stdout
            assert conn.run(["squeue", "-h", "-j", jobs[1], "-o", "%k"]).stdout.rstrip("\n") == HOSTILE_COMMENT
            assert conn.run(["find", minicluster.home, "-name", "CANARY"]).stdout == ""

            created = dinf("experiment", "create", "correctness", "--name", f"serial-{uuid.uuid4().hex[:6]}",
                           "--cluster", "mini", "--cpu", "--nodes", "2", "--ranks-per-node", "1", "--serial",
                           "--sbatch=--hold", "--json")
            assert created.code == EXIT_OK, created.err
            cells = [dinf("show", str(c["run"]), "--json", "--no-refresh").json()["job_id"]
                     for c in created.json()["cells"]]
            jobs += cells
            assert len(cells) == 6 and all(cells)
            for before, job in itertools.pairwise(cells):
                shown = conn.run(["scontrol", "show", "job", job]).stdout
                assert f"Dependency=afterany:{before}(unfulfilled)" in shown, shown
        finally:
            if jobs:
                conn.run(["scancel", *jobs], check=False)


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


def test_a_partition_the_cluster_lacks_is_bad_input_dry_run_or_not(transport_dinf):
    dinf = transport_dinf
    for dry_run in (["--dry-run"], []):
        result = dinf("submit", "--cluster", "mini", *TINY_PP2, "--partition", "nope", *dry_run)
        assert result.code == EXIT_BAD_INPUT, result.err
        assert "resources.partition: mini has no partition 'nope'; sinfo lists debug" in result.err
    assert dinf("runs", "--json", "--no-refresh").json() == []


# --- a 2FA login: the key, then a one-time code ------------------------------------------------------

TINY_SINGLE = [
    "--mode", "single", "--set", "model.config=tiny", "--batch-sizes", "1", "--max-new-tokens", "4",
    "--set", "repeats=1", "--set", "warmup=0", "--set", "num_requests=1", "--set", "device=cpu",
]


@pytest.fixture
def otp_dinf(dinf, otp_minicluster, tmp_path):
    home = tmp_path / "user"
    (home / ".ssh").mkdir(parents=True)
    otp_minicluster.write_ssh_config(home / ".ssh" / "config", alias="otp", port=otp_minicluster.otp_port)
    dinf.home.mkdir(parents=True)
    (dinf.home / "config.toml").write_text(
        f"""
[clusters.otp]
host = "otp"
workdir = "{otp_minicluster.home}/cli-otp-{uuid.uuid4().hex[:8]}"

[clusters.otp.python]
python = "{sys.executable}"
env = {{ PYTHONPATH = "{REPO_ROOT}", OMP_NUM_THREADS = "1" }}

[clusters.otp.slurm]
partition = "{otp_minicluster.partition}"
time_limit = "00:10:00"
"""
    )
    dinf.env["HOME"] = str(home)
    return dinf


def run_on_a_terminal(dinf, args: list[str], answer: str) -> tuple[int, str, str, str]:
    """`dinf ARGS` in a session whose controlling terminal is a pseudo-terminal; whoever sits at it
    types `answer` at every 'Password:' prompt. Returns (exit code, stdout, stderr, the screen)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(DINF), *args], cwd=REPO_ROOT, env=dinf.env, stdin=terminal, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
        # The pty becomes its /dev/tty: one ioctl, no lock the test's threads could hold.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509
    )
    os.close(terminal)
    screen = bytearray()

    def sit_at_the_terminal() -> None:
        answered = 0
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: dinf has exited
                return
            if not data:
                return
            screen.extend(data)
            while screen.count(b"Password: ") > answered:
                os.write(controller, answer.encode() + b"\n")
                answered += 1

    typist = threading.Thread(target=sit_at_the_terminal, daemon=True)
    typist.start()
    out, err = process.communicate(timeout=300)
    typist.join(5)
    os.close(controller)
    return process.returncode, out.decode(), err.decode(), screen.decode("utf-8", "replace")


@pytest.mark.slow
def test_2fa_asks_the_code_on_the_terminal_once_and_the_run_completes(otp_dinf, otp_minicluster):
    code, out, err, screen = run_on_a_terminal(
        otp_dinf, ["submit", "--cluster", "otp", *TINY_SINGLE, "--wait", "--poll", "1", "--json"],
        otp_minicluster.otp_code(),
    )
    assert code == EXIT_OK, err
    assert json.loads(out)["state"] == "COMPLETED"
    assert "cluster otp: keyboard-interactive login" in screen and "Minicluster 2FA: enter the one-time code" in screen
    assert screen.count("Password: ") == 1, "one login for the whole submit --wait"
    assert otp_minicluster.otp_code() not in screen, "the code is typed hidden"


def test_a_wrong_2fa_code_at_the_terminal_is_a_clear_login_error(otp_dinf, otp_minicluster):
    wrong = "000000" if otp_minicluster.otp_code() != "000000" else "111111"
    code, out, err, screen = run_on_a_terminal(otp_dinf, ["submit", "--cluster", "otp", *TINY_SINGLE, "--json"], wrong)
    assert code == EXIT_FAILED, err
    record = json.loads(out)
    assert record["state"] == "SUBMIT_FAILED" and record["job_id"] is None
    assert "refused the answers to its keyboard-interactive questions as slurmtest" in record["error"]
    assert "Password: " in screen


def test_2fa_without_a_terminal_says_so_and_names_the_way_out(otp_dinf):
    done = subprocess.run(  # a new session: no controlling terminal, as under cron or CI
        [str(DINF), "submit", "--cluster", "otp", *TINY_SINGLE, "--json"], cwd=REPO_ROOT, env=otp_dinf.env,
        capture_output=True, text=True, timeout=120, start_new_session=True, stdin=subprocess.DEVNULL, check=False,
    )
    assert done.returncode == EXIT_FAILED, done.stderr
    record = json.loads(done.stdout)
    assert record["state"] == "SUBMIT_FAILED" and record["job_id"] is None
    error = record["error"]
    assert "cluster 'otp' asks keyboard-interactive questions" in error and "no terminal" in error
    assert 'set transport = "openssh" in [clusters.otp]' in error
