"""SlurmCluster against the real minicluster: real sshd, real slurmctld + 2 slurmd, real sacct.

Started by `bash tests/cluster/minicluster up` (CI does it); see tests/conftest.py for how the
cluster is found. Jobs are polled, never slept on.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import paramiko
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remote.cluster import ClusterError, JobState, Resources, RunBundle
from remote.ssh import AuthenticationFailed, HostKeyChanged, HostKeyUnknown, HostUnreachable, fingerprint
from worker.contract import launcher_log_file, read_result

pytestmark = pytest.mark.slurm

TINY_PP = {"model": {"source": "synthetic", "config": "tiny"}, "mode": "pp", "device": "cpu",
           "max_new_tokens": 4, "warmup": 0, "repeats": 1, "num_requests": 2, "dist_timeout_s": 120}


def bundle(name: str | None = None, *, spec: dict | None = None, job_name: str = "dinf-test", **resources) -> RunBundle:
    return RunBundle(
        run_id=name or f"t{uuid.uuid4().hex[:10]}",
        job_name=job_name,
        spec_json=json.dumps(spec if spec is not None else {"run_name": "stand-in"}),
        prompts_jsonl=None,
        resources=Resources(**{"nodes": 2, "tasks_per_node": 1, **resources}),
    )


def wait_for_state(cluster, job_id, predicate, timeout_s=60.0, seen=None):
    deadline = time.monotonic() + timeout_s
    while True:
        status = cluster.status([job_id])[job_id]
        if seen is not None and (not seen or seen[-1] != status.state):
            seen.append(status.state)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"job {job_id} stuck at {status}"
        time.sleep(0.2)


def submit(cluster, b):
    prepared = cluster.prepare(b)
    return prepared, cluster.submit(prepared, b)


def user_processes_with(marker: str) -> list[str]:
    """Live processes named `marker` (argv[0]); every node's tasks share this host's PID namespace."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
                state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if cmdline.startswith(marker) and "zombie" not in state:
                found.append(f"{proc.name}: {cmdline}")
    return found


def sshd_serving(connection) -> list[int]:
    """PIDs of the sshd processes (monitor and session) holding our TCP connection, via /proc/net/tcp."""
    local_port = connection._client.get_transport().sock.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(remote.split(":")[1], 16) == local_port and int(local.split(":")[1], 16) == connection.target.port:
            inodes.add(f"socket:[{inode}]")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "sshd":
                continue
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    assert pids, f"no sshd holds the connection from port {local_port}"
    return pids


# --- the happy path ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_node_worker_job_runs_streams_and_reports(minicluster, tmp_path):
    cluster = minicluster.cluster()
    try:
        b = bundle(spec=TINY_PP, gpus_per_node=1, partition=minicluster.partition)
        assert "srun --kill-on-bad-exit=1" in cluster.preview(b)
        assert "node" in cluster.preflight(b)
        prepared, job_id = submit(cluster, b)
        assert oct(cluster.connection.stat(prepared.run_dir).st_mode & 0o777) == "0o700"
        paths = [f"{prepared.logs_dir}/{launcher_log_file(job_id, r)}" for r in range(2)]
        live_lines: dict[str, list[str]] = {p: [] for p in paths}
        states, lines_before_end = [], 0
        for batch in cluster.stream_logs(paths, poll_s=0.2):
            for chunk in batch:
                live_lines[chunk.path] += chunk.lines
            status = cluster.status([job_id])[job_id]
            if not states or states[-1] != status.state:
                states.append(status.state)
            if status.state.is_terminal:
                break
            lines_before_end = sum(map(len, live_lines.values()))
        assert states[-1] == JobState.COMPLETED, (states, cluster.read_text(f"{prepared.logs_dir}/{job_id}-batch.out"))
        assert JobState.RUNNING in states
        order = [JobState.PENDING, JobState.CONFIGURING, JobState.RUNNING, JobState.COMPLETING, JobState.COMPLETED]
        assert [s for s in order if s in states] == states  # never goes backwards
        assert all(live_lines[p] for p in paths), "both ranks' logs streamed"
        assert lines_before_end > 0, "lines arrived while the job was still running"
        assert any("rank 0" in line for line in live_lines[paths[0]])
        assert any("rank 1" in line for line in live_lines[paths[1]])

        fetched = cluster.fetch_results(prepared, str(tmp_path))
        result = read_result((tmp_path / "result.json").read_text())
        assert result["world_size"] == 2 and result["spec"]["mode"] == "pp"
        hosts = sorted(r["host"] for r in result["ranks"])
        assert hosts == ["node1", "node2"], "one rank on each node"
        assert (tmp_path / "completions.jsonl").stat().st_size > 0
        assert str(tmp_path / "logs" / launcher_log_file(job_id, 1)) in fetched

        fields = cluster.accounting(job_id, wait_s=30)
        assert set(fields) >= {"State", "ExitCode", "Elapsed", "NodeList", "AllocTRES", "MaxRSS", "TotalCPU"}
        assert fields["State"] == "COMPLETED" and fields["ExitCode"] == "0:0"
        assert fields["NodeList"] == "node[1-2]" and "gres/gpu=2" in fields["AllocTRES"]
    finally:
        cluster.close()


# --- failure states ------------------------------------------------------------------------------


def test_cancel_running_two_node_job_leaves_no_process(minicluster):
    marker = f"dinfcancel{uuid.uuid4().hex[:8]}"
    cluster = minicluster.cluster(job_command=["bash", "-c", f"echo started; exec -a {marker} sleep 600"])
    try:
        prepared, job_id = submit(cluster, bundle())
        paths = [f"{prepared.logs_dir}/{launcher_log_file(job_id, r)}" for r in range(2)]
        started = set()
        for batch in cluster.stream_logs(paths, poll_s=0.1):
            started |= {c.path for c in batch if "started" in c.lines}
            if started == set(paths):
                break
        assert len(user_processes_with(marker)) == 2, "one task per node before the cancel"
        status = cluster.cancel(job_id, wait_s=60)
        assert status.state == JobState.CANCELLED
        deadline = time.monotonic() + 15
        while user_processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert user_processes_with(marker) == []
    finally:
        cluster.close()


def test_task_exiting_3_is_failed_with_exit_code_3(minicluster):
    marker = f"dinfbad{uuid.uuid4().hex[:8]}"
    command = ["bash", "-c", f'if [ "$SLURM_PROCID" = 1 ]; then exit 3; fi; exec -a {marker} sleep 600']
    cluster = minicluster.cluster(job_command=command)
    try:
        _, job_id = submit(cluster, bundle())
        # sacct's first terminal row may still carry the batch step's 15 (the SIGTERM srun sent the
        # other rank) before DerivedExitCode, the task's own 3, is recorded: seen under load.
        status = wait_for_state(cluster, job_id, lambda s: s.state.is_terminal and s.exit_code == 3)
        assert status.state == JobState.FAILED
        deadline = time.monotonic() + 15
        while user_processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert user_processes_with(marker) == [], "srun --kill-on-bad-exit=1 stopped the other rank"
    finally:
        cluster.close()


def test_job_waiting_for_resources_is_pending_with_its_reason(minicluster):
    cluster = minicluster.cluster(job_command=["sleep", "600"])
    try:
        # Both nodes' only GPU taken by the first job: the second must wait.
        _, first = submit(cluster, bundle(gpus_per_node=minicluster.gpus_per_node))
        wait_for_state(cluster, first, lambda s: s.state == JobState.RUNNING)
        _, second = submit(cluster, bundle(gpus_per_node=minicluster.gpus_per_node))
        status = wait_for_state(cluster, second, lambda s: s.state == JobState.PENDING and s.reason in ("Resources", "Priority"))
        calls = cluster.scheduler_calls
        both = cluster.status([first, second])  # one batched call for both: squeue alone, as both are live
        assert cluster.scheduler_calls - calls == 1
        assert both[first].state == JobState.RUNNING and both[first].nodelist == "node[1-2]"
        assert both[second].state == JobState.PENDING and both[second].reason == status.reason
        assert cluster.cancel(second).state == JobState.CANCELLED
        assert cluster.cancel(first).state == JobState.CANCELLED
    finally:
        cluster.close()


@pytest.mark.slow
def test_job_past_its_time_limit_times_out(minicluster):
    cluster = minicluster.cluster(job_command=["sleep", "600"])
    try:
        _, job_id = submit(cluster, bundle(nodes=1, time_limit="1"))
        seen: list[JobState] = []
        status = wait_for_state(cluster, job_id, lambda s: s.state.is_terminal, timeout_s=180, seen=seen)
        assert status.state == JobState.TIMEOUT, seen
        assert JobState.RUNNING in seen
    finally:
        cluster.close()


# --- streaming across a dropped connection --------------------------------------------------------


@pytest.mark.slow
def test_stream_resumes_after_the_serving_sshd_is_killed(minicluster):
    # 600 numbered lines over ~6 s, with long and unicode lines, written in uneven bursts.
    writer = (
        'for i in $(seq 1 600); do printf "line %05d rank $SLURM_PROCID ünï %s\\n" $i "$(printf "x%.0s" $(seq 1 $((i % 97))))"; '
        '[ $((i % 7)) = 0 ] && sleep 0.07; done; sleep 1'
    )
    cluster = minicluster.cluster(job_command=["bash", "-c", writer])
    try:
        prepared, job_id = submit(cluster, bundle())
        paths = [f"{prepared.logs_dir}/{launcher_log_file(job_id, r)}" for r in range(2)]
        received: dict[str, list[str]] = {p: [] for p in paths}
        killed = None
        connects_before = cluster.connection.connects
        for batch in cluster.stream_logs(paths, poll_s=0.1):
            for chunk in batch:
                received[chunk.path] += chunk.lines
            if killed is None and sum(map(len, received.values())) > 100:
                killed = sshd_serving(cluster.connection)
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
            done = cluster.status([job_id])[job_id].state.is_terminal
            if done and all(len(received[p]) == 600 for p in paths):
                break
            assert sum(map(len, received.values())) <= 1200, "a line was repeated"
        assert killed and cluster.connection.connects > connects_before
        for path in paths:
            assert received[path] == cluster.read_text(path).splitlines()
            assert [int(line.split()[1]) for line in received[path]] == list(range(1, 601))
    finally:
        cluster.close()


# --- host keys and login ---------------------------------------------------------------------------


def public_key(path) -> paramiko.PKey:
    key_type, data = Path(path).read_text().split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))


def host_key(minicluster) -> paramiko.PKey:
    return public_key(Path(minicluster.state_dir) / "ssh" / "host_ed25519_key.pub")


def test_unknown_host_key_is_refused_with_its_fingerprint_until_trusted(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions

    known = tmp_path / "known_hosts"
    conn = SshConnection(minicluster.target(known_hosts=str(known)), SshOptions(allow_agent=False, look_for_keys=False))
    with pytest.raises(HostKeyUnknown) as caught:
        conn.run(["true"])
    expected = fingerprint(host_key(minicluster))
    assert caught.value.fingerprint == expected and expected in str(caught.value)
    assert not known.exists(), "nothing recorded without an explicit trust"
    assert caught.value.trust() == expected
    assert "[127.0.0.1]:2222 ssh-ed25519" in known.read_text()
    assert conn.run(["echo", "in"]).stdout == "in\n"
    conn.close()


def test_changed_host_key_is_refused_louder(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions

    other = tmp_path / "other"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    other_key = public_key(f"{other}.pub")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{minicluster.port} ssh-ed25519 {other_key.get_base64()}\n")
    conn = SshConnection(minicluster.target(known_hosts=str(known)), SshOptions(allow_agent=False, look_for_keys=False))
    with pytest.raises(HostKeyChanged) as caught:
        conn.run(["true"])
    error = caught.value
    assert "CHANGED" in str(error) and error.changed
    assert error.expected_fingerprint == fingerprint(other_key) and error.fingerprint == fingerprint(host_key(minicluster))
    with pytest.raises(HostKeyChanged, match="replace=True"):
        conn.trust_host_key()  # an ordinary trust never overwrites a changed key
    assert known.read_text().count("ssh-ed25519") == 1
    conn.close()


def test_unknown_host_alias_is_a_clear_error_and_nothing_is_uploaded(tmp_path):
    from remote.slurm_cluster import SlurmCluster

    config = tmp_path / "ssh_config"
    config.write_text("Host elsewhere\n  HostName elsewhere.invalid\n")
    from remote.ssh import SshConnection, resolve_target

    cluster = SlurmCluster(SshConnection(resolve_target("no-such-cluster.invalid", ssh_config=str(config))))
    with pytest.raises(HostUnreachable, match="no-such-cluster.invalid"):
        cluster.prepare(bundle())


def test_failed_authentication_is_a_clear_error(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions

    wrong = tmp_path / "wrong_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {wrong}")
    conn = SshConnection(minicluster.target(key_files=(str(wrong),)), SshOptions(allow_agent=False, look_for_keys=False))
    with pytest.raises(AuthenticationFailed, match="refused authentication as slurmtest"):
        conn.run(["true"])


def test_unreadable_key_file_is_an_authentication_error_not_an_unreachable_host(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions

    pem = tmp_path / "old_pem_rsa_key"  # the pre-2018 PEM format, which paramiko 5 no longer reads
    subprocess.run(["ssh-keygen", "-q", "-m", "PEM", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(pem)], check=True)
    conn = SshConnection(minicluster.target(key_files=(str(pem),)), SshOptions(allow_agent=False, look_for_keys=False))
    with pytest.raises(AuthenticationFailed, match="could not be logged into as slurmtest") as info:
        conn.run(["true"])
    assert str(pem) in str(info.value)


def test_ssh_config_alias_is_resolved(minicluster, tmp_path):
    from remote.slurm_cluster import SlurmCluster
    from remote.ssh import SshOptions, resolve_target

    config = minicluster.write_ssh_config(tmp_path / "ssh_config", alias="mini")
    target = resolve_target("mini", ssh_config=config)
    assert (target.hostname, target.port, target.user) == (minicluster.host, minicluster.port, minicluster.user)
    cluster = SlurmCluster(host="mini", ssh_config=config, ssh_options=SshOptions(allow_agent=False, look_for_keys=False),
                           workdir="~/dinf-alias-test")
    try:
        assert cluster.connection.run(["whoami"]).stdout.strip() == minicluster.user
        assert cluster.workdir == f"{minicluster.home}/dinf-alias-test"
    finally:
        cluster.close()


def test_failed_command_carries_command_exit_code_and_stderr_tail(minicluster):
    from remote.ssh import CommandFailed

    with minicluster.connection() as conn:
        with pytest.raises(CommandFailed) as caught:
            conn.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 7", "arg with space"])
    error = caught.value
    assert error.exit_code == 7 and "last words" in str(error) and "'arg with space'" in str(error)


# --- rejections leave nothing behind ---------------------------------------------------------------


def queued_with_name(cluster, name: str) -> str:
    """Jobs of that name that are pending or running. (Slurm 22.05 keeps a FAILED/BadConstraints record
    of a submission it rejected for its GRES request; that job never queues or runs.)"""
    return cluster.connection.run(["squeue", "-h", "-n", name, "-o", "%i %T"]).stdout.strip()


def test_a_partition_sinfo_does_not_list_is_refused_before_anything_is_uploaded(minicluster):
    cluster = minicluster.cluster(job_command=["true"])
    try:
        b = bundle(partition="nosuchpartition")
        for step in (cluster.preview, cluster.preflight, cluster.prepare):
            with pytest.raises(ClusterError, match=r"resources\.partition: mini has no partition 'nosuchpartition'; "
                                                   r"sinfo lists debug"):
                step(b)
        assert cluster.connection.stat(cluster.run_dir(b.run_id)) is None
        assert cluster.partition_problem(bundle(partition="debug").resources) is None
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpus_per_node": 8}, "(?i)node configuration is not available|gres"),
    ],
)
def test_rejected_submission_is_a_clear_error_and_queues_nothing(minicluster, resources, message):
    cluster = minicluster.cluster(job_command=["true"])
    name = f"reject-{uuid.uuid4().hex[:8]}"
    try:
        b = bundle(job_name=name, **resources)
        with pytest.raises(ClusterError, match=message):
            cluster.preflight(b)
        prepared = cluster.prepare(b)
        with pytest.raises(ClusterError, match=message) as caught:
            cluster.submit(prepared, b)
        assert "nothing was queued" in str(caught.value)
        assert queued_with_name(cluster, name) == ""
    finally:
        cluster.close()


def test_invalid_spec_uploads_nothing(minicluster):
    cluster = minicluster.cluster(job_command=["true"])
    try:
        b = bundle(spec={"mode": "sideways"})
        with pytest.raises(ClusterError, match="mode"):
            cluster.prepare(b)
        assert cluster.connection.stat(cluster.run_dir(b.run_id)) is None
    finally:
        cluster.close()


# --- hostile names ---------------------------------------------------------------------------------

HOSTILE_NAMES = ["a 0", "a'; touch CANARY", "$(touch CANARY)", "`touch CANARY`", "ünï ☃ 名前", 'q"uote', "a\nb", "100%j"]


def test_hostile_job_names_and_paths_round_trip_without_executing(minicluster):
    hostile_dir = "wd " + "".join(HOSTILE_NAMES).replace("/", "_")
    echo = ["bash", "-c", 'printf "%s" "$1" > "$2"/echo.txt', "task", "{run_dir}", "{output_dir}"]
    cluster = minicluster.cluster(job_command=echo)
    cluster._resolved_workdir = f"{minicluster.home}/{hostile_dir}"
    try:
        jobs = []
        for name in HOSTILE_NAMES:
            b = bundle(job_name=name, nodes=1)
            prepared, job_id = submit(cluster, b)
            jobs.append((prepared, job_id))
        for prepared, job_id in jobs:
            status = wait_for_state(cluster, job_id, lambda s: s.state.is_terminal)
            assert status.state == JobState.COMPLETED, cluster.read_text(f"{prepared.logs_dir}/{job_id}-batch.out")
            assert cluster.read_text(f"{prepared.output_dir}/echo.txt") == prepared.run_dir
            assert prepared.run_dir.startswith(f"{minicluster.home}/{hostile_dir}/runs/")
        names = cluster.connection.run(["squeue", "-h", "-t", "all", "-j", ",".join(j for _, j in jobs), "-o", "%j"]).stdout
        assert "touch CANARY" in names  # the names arrived literally
        assert cluster.connection.run(["find", minicluster.home, "-name", "CANARY"]).stdout == ""
    finally:
        cluster.close()


def write_config(path, minicluster, extra_hosts: str) -> str:
    path.write_text(
        f"Host mini\n  HostName {minicluster.host}\n  Port {minicluster.port}\n  User {minicluster.user}\n"
        f"  IdentityFile {minicluster.key}\n  UserKnownHostsFile {minicluster.known_hosts}\n" + extra_hosts
    )
    return str(path)


def test_proxy_jump_reaches_the_host_through_another(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions, resolve_target

    config = write_config(tmp_path / "ssh_config", minicluster, (
        f"Host behind\n  HostName {minicluster.host}\n  Port {minicluster.port}\n  User {minicluster.user}\n"
        f"  IdentityFile {minicluster.key}\n  UserKnownHostsFile {minicluster.known_hosts}\n  ProxyJump mini\n"
    ))
    target = resolve_target("behind", ssh_config=config)
    assert target.proxy_jump == "mini"
    with SshConnection(target, SshOptions(allow_agent=False, look_for_keys=False)) as conn:
        assert conn.run(["echo", "through the jump"]).stdout == "through the jump\n"
        assert conn._jump is not None and conn._jump.is_connected


def test_proxy_command_is_used(minicluster, tmp_path):
    from remote.ssh import SshConnection, SshOptions, resolve_target

    proxy = (f"ssh -i {minicluster.key} -p {minicluster.port} -o UserKnownHostsFile={minicluster.known_hosts} "
             f"-o BatchMode=yes -o IdentitiesOnly=yes {minicluster.user}@{minicluster.host} -W %h:%p")
    config = write_config(tmp_path / "ssh_config", minicluster, (
        f"Host viacommand\n  HostName {minicluster.host}\n  Port {minicluster.port}\n  User {minicluster.user}\n"
        f"  IdentityFile {minicluster.key}\n  UserKnownHostsFile {minicluster.known_hosts}\n  ProxyCommand {proxy}\n"
    ))
    target = resolve_target("viacommand", ssh_config=config)
    assert target.proxy_command and f"-W {minicluster.host}:{minicluster.port}" in target.proxy_command
    with SshConnection(target, SshOptions(allow_agent=False, look_for_keys=False)) as conn:
        assert conn.run(["whoami"]).stdout.strip() == minicluster.user


def test_connects_lazily_with_nodelay_and_keepalive(minicluster):
    import socket

    cluster = minicluster.cluster()
    try:
        assert cluster.connection.connects == 0 and not cluster.connection.is_connected
        cluster.preview(bundle())  # rendering needs no connection when the workdir is absolute
        assert cluster.connection.connects == 0
        assert cluster.status([]) == {}  # an empty poll opens the connection: it proves the cluster is reachable
        transport = cluster.connection._client.get_transport()
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert transport.packetizer._Packetizer__keepalive_interval == 15
        cluster.status([])
        assert cluster.connection.connects == 1
    finally:
        cluster.close()


hostile_words = st.lists(
    st.sampled_from(["'", '"', ";", "$(", ")", "`", "\n", " ", "\\", "$", "touch CANARY", "é", "名", "&", "|", "%j", "*"]),
    min_size=1, max_size=10,
).map("".join)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_name=hostile_words, directory=hostile_words)
def test_property_hostile_names_round_trip_through_prepare_and_preflight(minicluster, job_name, directory):
    cluster = minicluster.cluster()
    workdir = f"{cluster.workdir}/{directory.replace('/', '_')}"
    cluster._resolved_workdir = workdir
    try:
        # A run name must not be blank (the spec refuses "\n"); hostile inside a word is the point.
        b = bundle(job_name=job_name, nodes=1, spec={"run_name": f"r{job_name}"})
        prepared = cluster.prepare(b)
        assert prepared.run_dir.startswith(workdir + "/runs/")
        spec = json.loads(cluster.read_text(f"{prepared.run_dir}/spec.json"))
        assert spec["run_name"] == f"r{job_name}" and spec["output_dir"] == f"{prepared.run_dir}/out"
        assert "would start" in cluster.preflight(b) or "to start" in cluster.preflight(b)
        listing = cluster.connection.run(["ls", "-A", f"{workdir}/runs"]).stdout
        assert listing.split("\n")[0] == b.run_id
        assert cluster.connection.run(["find", minicluster.home, "-name", "CANARY"]).stdout == ""
    finally:
        cluster.close()


def test_job_unknown_to_slurm_is_reported_unknown(minicluster):
    cluster = minicluster.cluster()
    try:
        status = cluster.status(["987654"])["987654"]
        assert status.state == JobState.UNKNOWN and "squeue or sacct" in status.reason
        with pytest.raises(ClusterError, match="not a Slurm job id"):
            cluster.status(["1; touch CANARY"])
    finally:
        cluster.close()


def test_command_output_is_never_cut_short(minicluster):
    # Regression: OpenSSH may send exit-status before the last data; output was once lost then.
    with minicluster.connection() as conn:
        for n in range(1000):
            assert conn.run(["echo", str(n)]).stdout == f"{n}\n"
