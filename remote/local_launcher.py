"""The local backend's stand-in for slurmstepd: runs one job's ranks and records how they ended.

`python -m remote.local_launcher RUN_DIR JOB_ID` is started by `LocalCluster.submit` as the leader
of a new session (its process group holds every rank, so cancel can kill the group). It reads
`launch.json`, starts one process per rank with the environment a Slurm step gives
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_JOB_ID, SLURM_JOB_NODELIST, ...),
writes each rank's stdout+stderr to `logs/<job>-rank<r>.out`, and keeps `job_state.json` current:
RUNNING, then COMPLETED / FAILED (first bad exit code; the other ranks are killed, like
`srun --kill-on-bad-exit=1`) / CANCELLED (SIGTERM) / TIMEOUT (time limit). Because the state lives in
the run directory, a later dinf process can report on jobs an earlier one started.

Like srun, it writes one line per rank that ended badly to its own output (`logs/<job>-batch.out`),
first the rank that failed first, in srun's words (`srun: error: localhost: task 1: Killed`), so
`remote.slurm.summarize_failure` tells both backends' failures the same way.

Standard library only; it imports nothing from dinf but the contract's file names and
`remote.slurm`'s table of signal descriptions (itself stdlib-only).
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from remote.slurm import SIGNAL_DESCRIPTIONS
from worker.contract import launcher_log_file

STATE_FILE = "job_state.json"
PLAN_FILE = "launch.json"
KILL_WAIT_S = 5.0
"""Like Slurm's KillWait: SIGTERM, then SIGKILL this much later."""


def write_state(run_dir: Path, state: dict) -> None:
    """Atomically (rename), so a reader never sees half a file."""
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, run_dir / STATE_FILE)


def read_state(run_dir: Path) -> dict:
    return json.loads((run_dir / STATE_FILE).read_text())


def rank_environment(plan: dict, job_id: str, rank: int) -> dict[str, str]:
    nodes, per_node = plan["nodes"], plan["tasks_per_node"]
    ntasks = nodes * per_node
    env = dict(os.environ)
    env.update(plan.get("env", {}))
    env.update(
        {
            "SLURM_JOB_ID": job_id,
            "SLURM_JOBID": job_id,
            "SLURM_STEP_ID": "0",
            "SLURM_JOB_NAME": plan.get("job_name", ""),
            "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": str(ntasks),
            "SLURM_NPROCS": str(ntasks),
            "SLURM_LOCALID": str(rank % per_node),
            "SLURM_NODEID": str(rank // per_node),
            "SLURM_NNODES": str(nodes),
            "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NTASKS_PER_NODE": str(per_node),
            "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})" if nodes > 1 else str(per_node),
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NODELIST": "localhost",
            "SLURMD_NODENAME": "localhost",
            "SLURM_CLUSTER_NAME": "local",
            "SLURM_SUBMIT_DIR": plan["run_dir"],
        }
    )
    if plan.get("gpus_per_node"):
        env["CUDA_VISIBLE_DEVICES"] = str(rank % per_node)
    return env


def terminate(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every live rank, SIGKILL what is left after KILL_WAIT_S."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


def exit_fields(returncode: int) -> tuple[int, int]:
    """Popen's returncode (negative = signal) → Slurm's (exit code, signal)."""
    return (0, -returncode) if returncode < 0 else (returncode, 0)


_DESCRIPTIONS = {number: text for text, number in SIGNAL_DESCRIPTIONS.items()}


def task_end_line(rank: int, returncode: int) -> str:
    """srun's line for a task that ended badly (glibc's signal words, whatever this machine's libc says)."""
    if returncode > 0:
        how = f"Exited with exit code {returncode}"
    else:
        how = _DESCRIPTIONS.get(-returncode, f"Signal {-returncode}")
    return f"srun: error: localhost: task {rank}: {how}"


LANE_POLL_S = 0.1


def wait_for_lane(lock_path: str | None, cancelled: Callable[[], bool]):
    """Hold the lane's lock (an open file with an exclusive flock), waiting while another job holds it.

    Returns the open file (the lock lasts until this process exits) or None without a lane. Polls
    rather than blocks, so a cancel (SIGTERM) while waiting is seen; returns None then too."""
    if not lock_path:
        return None
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    held = open(lock_path, "a+")  # noqa: SIM115 - kept open: the lock is held for the job's life
    while True:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return held
        except BlockingIOError:
            if cancelled():
                held.close()
                return None
            time.sleep(LANE_POLL_S)


def run(run_dir: Path, job_id: str) -> int:
    plan = json.loads((run_dir / PLAN_FILE).read_text())
    state = read_state(run_dir)
    cancelled = False

    def on_sigterm(signum, frame):  # cancel: the whole group got SIGTERM; note it and clean up
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_sigterm)
    if plan.get("lane_lock"):
        state.update(reason="Lane", launcher_pid=os.getpid(), pgid=os.getpgrp())
        write_state(run_dir, state)
        lane = wait_for_lane(plan["lane_lock"], lambda: cancelled)
        if cancelled:
            state.update(state="CANCELLED", reason=None, end_time=time.time(), exit_code=0, signal=0)
            write_state(run_dir, state)
            return 0
        # `lane` stays open (and locked) until this process exits, after the end state is written.
    ntasks = plan["nodes"] * plan["tasks_per_node"]
    logs_dir = Path(plan["logs_dir"])
    procs = []
    start = time.time()
    state.update(state="RUNNING", reason=None, start_time=start, launcher_pid=os.getpid(), pgid=os.getpgrp())
    write_state(run_dir, state)
    for rank in range(ntasks):
        with open(logs_dir / launcher_log_file(job_id, rank), "ab") as out:
            procs.append(
                subprocess.Popen(
                    plan["command"], cwd=plan["run_dir"], env=rank_environment(plan, job_id, rank),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                )
            )
    state["rank_pids"] = [p.pid for p in procs]
    write_state(run_dir, state)

    time_limit = plan.get("time_limit_s")
    final, reason, first_bad, first_ranks = None, None, 0, []
    while final is None:
        codes = [p.poll() for p in procs]
        bad = [c for c in codes if c not in (None, 0)]
        if cancelled:
            final = "CANCELLED"
        elif bad:
            final, reason, first_bad = "FAILED", "NonZeroExitCode", bad[0]
            first_ranks = [rank for rank, c in enumerate(codes) if c not in (None, 0)]
        elif all(c == 0 for c in codes):
            final = "COMPLETED"
        elif time_limit is not None and time.time() - start > time_limit:
            final, reason = "TIMEOUT", "TimeLimit"
        else:
            time.sleep(0.05)
    terminate(procs)
    codes = [p.returncode for p in procs]
    if final == "FAILED":  # the first to fail, then the ranks terminate() ended
        order = first_ranks + [rank for rank in range(ntasks) if rank not in first_ranks]
        for rank in order:
            if codes[rank] != 0:
                print(task_end_line(rank, codes[rank]), flush=True)
    # Slurm reports the first failing task's code; a cancelled or timed-out job has 0:0.
    code, sig = exit_fields(first_bad) if final == "FAILED" else (0, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    state.update(
        state=final,
        reason=reason,
        end_time=time.time(),
        exit_code=code,
        signal=sig,
        rank_exit_codes=codes,
        max_rss_kb=usage.ru_maxrss,
        total_cpu_s=usage.ru_utime + usage.ru_stime,
    )
    write_state(run_dir, state)
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2]))
