"""LocalCluster, the embedded default: the same behaviours as the Slurm backend, with real processes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from remote import slurm
from remote.cluster import ClusterError, JobState, PythonEnvironment, Resources, RunBundle
from remote.local import LocalCluster
from worker.contract import launcher_log_file, read_result

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_PP = {"model": {"source": "synthetic", "config": "tiny"}, "mode": "pp", "device": "cpu",
           "max_new_tokens": 4, "warmup": 0, "repeats": 1, "num_requests": 2, "dist_timeout_s": 120}


def make_cluster(workdir: Path, job_command: list[str] | None = None) -> LocalCluster:
    env = PythonEnvironment(python=sys.executable, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)})
    return LocalCluster(workdir=workdir, python=env, job_command=job_command)


def bundle(*, spec: dict | None = None, job_name: str = "local-test", run_id: str | None = None, **resources) -> RunBundle:
    return RunBundle(run_id=run_id or f"t{uuid.uuid4().hex[:10]}", job_name=job_name,
                     spec_json=json.dumps(spec if spec is not None else {"run_name": "stand-in"}), prompts_jsonl=None,
                     resources=Resources(**{"nodes": 2, "tasks_per_node": 1, **resources}))


def wait_terminal(cluster, job_id, timeout_s=60.0, seen=None):
    deadline = time.monotonic() + timeout_s
    while True:
        status = cluster.status([job_id])[job_id]
        if seen is not None and (not seen or seen[-1] != status.state):
            seen.append(status.state)
        if status.state.is_terminal:
            return status
        assert time.monotonic() < deadline, f"job {job_id} stuck at {status}"
        time.sleep(0.05)


def live_processes_named(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
                status = (proc / "status").read_text()
            except OSError:
                continue
            if cmdline.startswith(marker.encode()) and "zombie" not in status:
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.dist
def test_two_rank_worker_job_runs_streams_and_reports(tmp_path):
    cluster = make_cluster(tmp_path / "work")
    b = bundle(spec=TINY_PP)
    assert "2 rank(s)" in cluster.preview(b)
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    assert oct(Path(prepared.run_dir).stat().st_mode & 0o777) == "0o700"
    paths = [f"{prepared.logs_dir}/{launcher_log_file(job_id, r)}" for r in range(2)]
    received = {p: [] for p in paths}
    states, live = [], 0
    for batch in cluster.stream_logs(paths, poll_s=0.1):
        for chunk in batch:
            received[chunk.path] += chunk.lines
        status = cluster.status([job_id])[job_id]
        if not states or states[-1] != status.state:
            states.append(status.state)
        if status.state.is_terminal:
            break
        live = sum(map(len, received.values()))
    assert states[-1] == JobState.COMPLETED, (states, received)
    assert JobState.RUNNING in states and live > 0
    assert all(received[p] for p in paths)
    fetched = cluster.fetch_results(prepared, str(tmp_path / "results"))
    result = read_result((tmp_path / "results" / "result.json").read_text())
    assert result["world_size"] == 2
    assert str(tmp_path / "results" / "logs" / launcher_log_file(job_id, 0)) in fetched
    fields = cluster.accounting(job_id)
    assert fields["State"] == "COMPLETED" and fields["ExitCode"] == "0:0" and fields["NodeList"] == "localhost"
    assert fields["MaxRSS"].endswith("K") and fields["TotalCPU"] and fields["Elapsed"]


def test_ranks_get_the_environment_a_slurm_step_gives(tmp_path):
    script = 'echo "$SLURM_PROCID $SLURM_NTASKS $SLURM_LOCALID $SLURM_NODEID $SLURM_JOB_ID $SLURM_JOB_NODELIST $SLURM_NTASKS_PER_NODE $PWD"'
    cluster = make_cluster(tmp_path, ["bash", "-c", script])
    b = bundle(nodes=2, tasks_per_node=2)
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    assert wait_terminal(cluster, job_id).state == JobState.COMPLETED
    lines = [Path(prepared.logs_dir, launcher_log_file(job_id, r)).read_text().split() for r in range(4)]
    assert [line[:4] for line in lines] == [["0", "4", "0", "0"], ["1", "4", "1", "0"], ["2", "4", "0", "1"], ["3", "4", "1", "1"]]
    assert all(line[4:] == [job_id, "localhost", "2", prepared.run_dir] for line in lines)


def test_pending_then_running_then_completed(tmp_path):
    cluster = make_cluster(tmp_path, ["sleep", "0.5"])
    b = bundle()
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    seen: list[JobState] = []
    assert wait_terminal(cluster, job_id, seen=seen).state == JobState.COMPLETED
    assert seen[-2:] == [JobState.RUNNING, JobState.COMPLETED]
    assert set(seen) <= {JobState.PENDING, JobState.RUNNING, JobState.COMPLETED}


def test_cancel_kills_the_whole_process_group(tmp_path):
    marker = f"dinflocal{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(tmp_path, ["bash", "-c", f"echo started; exec -a {marker} sleep 600"])
    b = bundle()
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    paths = [f"{prepared.logs_dir}/{launcher_log_file(job_id, r)}" for r in range(2)]
    started = set()
    for batch in cluster.stream_logs(paths, poll_s=0.05):
        started |= {c.path for c in batch if "started" in c.lines}
        if started == set(paths):
            break
    deadline = time.monotonic() + 5
    while len(live_processes_named(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(live_processes_named(marker)) == 2
    status = cluster.cancel(job_id)
    assert status.state == JobState.CANCELLED
    assert live_processes_named(marker) == []


def test_task_exiting_3_is_failed_with_exit_code_3_and_the_other_rank_is_killed(tmp_path):
    marker = f"dinfbad{uuid.uuid4().hex[:8]}"
    command = ["bash", "-c", f'if [ "$SLURM_PROCID" = 1 ]; then exit 3; fi; exec -a {marker} sleep 600']
    cluster = make_cluster(tmp_path, command)
    b = bundle()
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    status = wait_terminal(cluster, job_id)
    assert (status.state, status.exit_code, status.signal) == (JobState.FAILED, 3, 0)
    assert live_processes_named(marker) == []  # like srun --kill-on-bad-exit=1
    assert cluster.accounting(job_id)["ExitCode"] == "3:0"


def test_a_rank_killed_by_sigkill_is_named_first_like_srun_names_it(tmp_path):
    command = ["bash", "-c", 'if [ "$SLURM_PROCID" = 1 ]; then kill -9 $$; fi; exec sleep 600']
    cluster = make_cluster(tmp_path, command)
    b = bundle()
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    assert wait_terminal(cluster, job_id).state == JobState.FAILED
    log = (Path(prepared.logs_dir) / slurm.batch_log_file(job_id)).read_text()
    assert log.splitlines() == ["srun: error: localhost: task 1: Killed", "srun: error: localhost: task 0: Terminated"]
    summary = slurm.summarize_failure(job_id=job_id, batch_log=log)
    assert (summary.rank, summary.node, summary.signal) == (1, "localhost", 9)


def test_job_past_its_time_limit_times_out(tmp_path):
    cluster = make_cluster(tmp_path, ["sleep", "600"])
    b = bundle(nodes=1, time_limit="0:01")  # MM:SS: one second
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    status = wait_terminal(cluster, job_id, timeout_s=30)
    assert status.state == JobState.TIMEOUT and status.reason == "TimeLimit"


def test_a_new_instance_reattaches_to_jobs_an_earlier_process_started(tmp_path):
    first = make_cluster(tmp_path, ["bash", "-c", "echo started; sleep 1.5"])
    b = bundle()
    prepared = first.prepare(b)
    job_id = first.submit(prepared, b)
    for batch in first.stream_logs([f"{prepared.logs_dir}/{launcher_log_file(job_id, 0)}"], poll_s=0.05):
        if any("started" in c.lines for c in batch):
            break
    del first  # "the app restarted": nothing of the first instance survives but the files
    second = make_cluster(tmp_path)
    assert second.status([job_id])[job_id].state == JobState.RUNNING
    assert wait_terminal(second, job_id).state == JobState.COMPLETED
    assert second.accounting(job_id)["State"] == "COMPLETED"


def test_a_launcher_that_vanished_is_reported_failed(tmp_path):
    cluster = make_cluster(tmp_path, ["sleep", "600"])
    b = bundle(nodes=1)
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    while cluster.status([job_id])[job_id].state != JobState.RUNNING:
        time.sleep(0.05)
    state = json.loads(Path(prepared.run_dir, "job_state.json").read_text())
    os.killpg(state["pgid"], 9)  # kill -9: the launcher cannot record anything
    status = wait_terminal(make_cluster(tmp_path), job_id)
    assert status.state == JobState.FAILED and "launcher" in status.reason
    cluster.close()


def test_stream_resumes_from_offsets_with_no_line_lost_or_repeated(tmp_path):
    writer = 'for i in $(seq 1 300); do echo "line $i ünï"; [ $((i % 50)) = 0 ] && sleep 0.1; done'
    cluster = make_cluster(tmp_path, ["bash", "-c", writer])
    b = bundle(nodes=1)
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    path = f"{prepared.logs_dir}/{launcher_log_file(job_id, 0)}"
    received, offsets = [], {}
    while True:
        stream = cluster.stream_logs([path], offsets, poll_s=0.02)  # a fresh stream each time: a "dropped connection"
        for chunk in next(stream):
            received += chunk.lines
            offsets[path] = chunk.end_offset
        stream.close()
        if cluster.status([job_id])[job_id].state.is_terminal and len(received) >= 300:
            break
        time.sleep(0.03)
    assert received == Path(path).read_text().splitlines() == [f"line {i} ünï" for i in range(1, 301)]


def test_files_that_do_not_exist_yet_are_waited_for(tmp_path):
    cluster = make_cluster(tmp_path)
    path = tmp_path / "later.log"
    stream = cluster.stream_logs([str(path)], poll_s=0.01)
    assert next(stream) == []
    path.write_text("one\ntw")
    assert [c.lines for c in next(stream)] == [["one"]]
    with open(path, "a") as f:
        f.write("o\n")
    assert [c.lines for c in next(stream)] == [["two"]]


HOSTILE = ["a 0", "a'; touch CANARY", "$(touch CANARY)", "`touch CANARY`", "ünï ☃ 名前", "a\nb", "100%j"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_job_names_and_paths_round_trip_without_executing(tmp_path, name):
    workdir = tmp_path / ("wd " + name.replace("/", "_"))
    echo = ["bash", "-c", 'printf "%s|%s" "$1" "$SLURM_JOB_NAME" > "$2"/echo.txt', "task", "{run_dir}", "{output_dir}"]
    cluster = make_cluster(workdir, echo)
    b = bundle(job_name=name, nodes=1)
    prepared = cluster.prepare(b)
    job_id = cluster.submit(prepared, b)
    assert wait_terminal(cluster, job_id).state == JobState.COMPLETED
    assert Path(prepared.output_dir, "echo.txt").read_text() == f"{prepared.run_dir}|{name}"
    assert not list(tmp_path.rglob("CANARY"))


def test_bad_input_is_refused_and_leaves_nothing(tmp_path):
    cluster = make_cluster(tmp_path / "work", ["true"])
    with pytest.raises(ClusterError, match="mode"):
        cluster.prepare(bundle(spec={"mode": "sideways"}, run_id="bad-spec"))
    assert not (tmp_path / "work" / "runs" / "bad-spec").exists()
    with pytest.raises(ClusterError, match="nodes"):
        cluster.preview(bundle(nodes=0))
    with pytest.raises(ClusterError, match="run id"):
        cluster.prepare(bundle(run_id="../escape"))
    b = bundle(run_id="twice")
    cluster.prepare(b)
    with pytest.raises(ClusterError, match="already exists"):
        cluster.prepare(b)


# --- lanes: the cells of one experiment run one at a time --------------------------------------

WINDOW_SCRIPT = 'python3 -c "import time; print(time.time())"; sleep 0.6; python3 -c "import time; print(time.time())"'


def _windows(cluster, bundles: list[RunBundle]) -> list[tuple[float, float]]:
    """Submit every bundle at once, wait for all, and read back each job's (start, end) as its ranks saw it."""
    jobs = []
    for b in bundles:
        prepared = cluster.prepare(b)
        jobs.append((prepared, cluster.submit(prepared, b)))
    windows = []
    for prepared, job_id in jobs:
        assert wait_terminal(cluster, job_id).state == JobState.COMPLETED
        stamps = [float(v) for v in Path(prepared.logs_dir, launcher_log_file(job_id, 0)).read_text().split()]
        windows.append((stamps[0], stamps[1]))
    return windows


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_jobs_of_one_lane_run_one_after_another(tmp_path):
    cluster = make_cluster(tmp_path, ["bash", "-c", WINDOW_SCRIPT])
    lane = [dataclasses.replace(bundle(nodes=1), lane="experiment-7") for _ in range(3)]
    windows = sorted(_windows(cluster, lane))
    for earlier, later in zip(windows, windows[1:]):
        assert _overlap(earlier, later) < 0, windows  # the next started after the one before had ended


def test_jobs_without_a_lane_or_with_lanes_off_start_together(tmp_path):
    cluster = make_cluster(tmp_path / "a", ["bash", "-c", WINDOW_SCRIPT])
    a, b = _windows(cluster, [bundle(nodes=1), bundle(nodes=1)])
    assert _overlap(a, b) > 0
    off = LocalCluster(workdir=tmp_path / "b", python=cluster.environment, job_command=["bash", "-c", WINDOW_SCRIPT],
                       one_lane_at_a_time=False)
    a, b = _windows(off, [dataclasses.replace(bundle(nodes=1), lane="x") for _ in range(2)])
    assert _overlap(a, b) > 0


def test_a_job_waiting_for_its_lane_is_pending_and_can_be_cancelled(tmp_path):
    cluster = make_cluster(tmp_path, ["sleep", "30"])
    first, second = (dataclasses.replace(bundle(nodes=1), lane="experiment-1") for _ in range(2))
    p1 = cluster.prepare(first)
    job1 = cluster.submit(p1, first)
    deadline = time.monotonic() + 20
    while cluster.status([job1])[job1].state != JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p2 = cluster.prepare(second)
    job2 = cluster.submit(p2, second)
    time.sleep(0.5)
    waiting = cluster.status([job2])[job2]
    assert waiting.state == JobState.PENDING and waiting.reason == "Lane"
    assert cluster.cancel(job2).state == JobState.CANCELLED
    assert cluster.cancel(job1).state == JobState.CANCELLED
