"""`LocalCluster`: the embedded default backend — the `Cluster` interface with no Slurm and no SSH.

What it does: lays a run out exactly as on Slurm (`<workdir>/runs/<run_id>/` with spec.json,
logs/<job>-rank<r>.out, out/), allocates job ids locally, and runs the job as nodes × tasks_per_node
local processes with the environment variables a Slurm step gives (see `remote.local_launcher`).
States go PENDING → RUNNING → COMPLETED / FAILED(exit code) / CANCELLED / TIMEOUT(time limit);
cancel kills the job's whole process group. The state is kept in the run directory, so a new
`LocalCluster` (after the app restarted) reports on jobs an earlier process started.

Jobs start at once, side by side, except jobs of one lane (`RunBundle.lane`: the cells of one
experiment): those run one at a time, each PENDING (reason "Lane") until the one before it has
ended, because cells timed side by side on the same cores measure each other. Set
`one_lane_at_a_time=False` to start them together anyway.

What it doesn't: schedule beyond that, or isolate GPUs beyond setting CUDA_VISIBLE_DEVICES to the
local rank.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import remote
from remote import slurm
from remote.cluster import (
    ClusterError,
    JobState,
    JobStatus,
    LogChunk,
    PreparedRun,
    PythonEnvironment,
    RunBundle,
)
from remote.local_launcher import PLAN_FILE, STATE_FILE, read_state, write_state
from remote.logstream import MAX_READ, follow
from remote.quoting import export_lines, join_argv
from remote.results import copy_run_files
from remote.run_dir import (
    JOB_ID_FILE,
    PROMPTS_FILE,
    check_run_id,
    expand_command,
    rewrite_spec,
    wait_until_ended,
)

SCRIPT_FILE = "job.sh"
CANCEL_MARKER = "cancel_requested"


class LocalCluster:
    """Runs jobs as processes on this machine, laid out like Slurm runs."""

    def __init__(
        self,
        *,
        name: str = "local",
        workdir: str | os.PathLike = "~/.local/share/dinf/local-runs",
        python: PythonEnvironment | None = None,
        job_command: list[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        one_lane_at_a_time: bool = True,
    ):
        self.name = name
        self.one_lane_at_a_time = one_lane_at_a_time
        self.workdir = Path(workdir).expanduser().absolute()
        self.environment = python or PythonEnvironment(python=sys.executable)
        self.job_command = job_command
        self._sleep = sleep
        self._children: dict[str, subprocess.Popen] = {}
        """Launchers this process started (reaped here so they don't linger as zombies)."""
        self.scheduler_calls = 0

    # --- layout --------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        check_run_id(run_id)
        return self.workdir / "runs" / run_id

    def _jobs_dir(self) -> Path:
        return self.workdir / "jobs"

    def _command(self, run_dir: Path) -> list[str]:
        paths = slurm.script_paths(str(run_dir))
        if self.job_command is None:
            return slurm.worker_command(self.environment.python, paths.spec_path)
        return expand_command(self.job_command, python=self.environment.python, spec=paths.spec_path,
                              run_dir=str(run_dir), output_dir=paths.output_dir)

    def _rank_command(self, run_dir: Path) -> list[str]:
        """The per-rank argv; through bash only when the environment has shell set-up to run first."""
        env = self.environment
        # Config strings are words, quoted by join_argv like every other command; only setup_lines
        # are shell by design (as in the Slurm script).
        setup = [join_argv(["module", "load", m]) for m in env.modules]
        if env.venv:
            setup.append(join_argv(["source", str(Path(env.venv) / "bin" / "activate")]))
        setup += list(env.setup_lines)
        command = self._command(run_dir)
        if not setup:
            return command
        return ["bash", "-c", "\n".join(setup + ['exec "$@"']), "dinf-rank", *command]

    def _plan(self, bundle: RunBundle, run_dir: Path) -> dict:
        r = bundle.resources
        slurm.resource_flags(r)  # the same validation as the Slurm backend
        return {
            "run_dir": str(run_dir),
            "logs_dir": str(run_dir / "logs"),
            "output_dir": str(run_dir / "out"),
            "job_name": bundle.job_name,
            "nodes": r.nodes,
            "tasks_per_node": r.tasks_per_node,
            "gpus_per_node": r.gpus_per_node,
            "time_limit_s": slurm.parse_time_limit(r.time_limit),
            "command": self._rank_command(run_dir),
            # A free rendezvous port: the worker's default derives it from the job id, and job ids of
            # two local work directories (or two test sessions) collide.
            "env": {"MASTER_PORT": str(_free_port()), **{k: str(v) for k, v in self.environment.env.items()}},
            # Jobs holding the same lock file run one at a time (the launcher waits for it).
            "lane_lock": (str(self.workdir / "lanes" / f"{_lane_file(bundle.lane)}.lock")
                          if bundle.lane and self.one_lane_at_a_time else None),
        }

    # --- Cluster interface ---------------------------------------------------------------------

    def preview(self, bundle: RunBundle) -> str:
        """A shell rendering of what the launcher does (it runs the ranks itself, not this script)."""
        run_dir = self.run_dir(bundle.run_id)
        try:
            plan = self._plan(bundle, run_dir)
        except ValueError as exc:
            raise ClusterError(str(exc)) from exc
        ntasks = plan["nodes"] * plan["tasks_per_node"]
        lines = [
            "#!/bin/bash",
            f"# dinf run {bundle.run_id} on the local backend: {ntasks} rank(s) as local processes",
            f"# ({plan['nodes']} node(s) x {plan['tasks_per_node']} task(s)), each with SLURM_PROCID/SLURM_NTASKS/"
            "SLURM_LOCALID/SLURM_NODEID/SLURM_JOB_ID set,",
            "# stdout+stderr to logs/<job>-rank<r>.out"
            + (f"; killed after {plan['time_limit_s']:.0f} s" if plan["time_limit_s"] else ""),
            f"cd {join_argv([str(run_dir)])}",
            *export_lines(plan["env"]),
            join_argv(plan["command"]),
        ]
        return "\n".join(lines) + "\n"

    def preflight(self, bundle: RunBundle) -> str:
        self.preview(bundle)
        python = self.environment.python
        if self.job_command is None and not (shutil.which(python) or Path(python).is_file()):
            raise ClusterError(f"the local Python {python!r} does not exist; set [clusters.local.python] python")
        r = bundle.resources
        return f"would run {r.nodes * r.tasks_per_node} local process(es) now"

    def prepare(self, bundle: RunBundle) -> PreparedRun:
        run_dir = self.run_dir(bundle.run_id)
        script = self.preview(bundle)
        plan = self._plan(bundle, run_dir)
        prompts_path = str(run_dir / PROMPTS_FILE) if bundle.prompts_jsonl is not None else None
        spec_json = rewrite_spec(bundle.spec_json, output_dir=plan["output_dir"], prompts_path=prompts_path)
        (self.workdir / "runs").mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise ClusterError(f"{run_dir} already exists; run ids must be unique") from None
        try:
            (run_dir / "logs").mkdir(mode=0o700)
            (run_dir / "out").mkdir(mode=0o700)
            (run_dir / "spec.json").write_text(spec_json)
            if prompts_path is not None:
                Path(prompts_path).write_text(bundle.prompts_jsonl)
            (run_dir / PLAN_FILE).write_text(json.dumps(plan, indent=1))
            (run_dir / SCRIPT_FILE).write_text(script)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        return PreparedRun(run_id=bundle.run_id, run_dir=str(run_dir), script_path=str(run_dir / SCRIPT_FILE),
                           output_dir=plan["output_dir"], logs_dir=plan["logs_dir"])

    def _next_job_id(self) -> str:
        self._jobs_dir().mkdir(parents=True, exist_ok=True)
        with open(self._jobs_dir() / "next_id", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # two dinf processes never get the same id
            f.seek(0)
            current = int(f.read().strip() or "1")
            f.seek(0)
            f.truncate()
            f.write(str(current + 1))
        return str(current)

    def submit(self, prepared: PreparedRun, bundle: RunBundle) -> str:
        run_dir = Path(prepared.run_dir)
        if not (run_dir / PLAN_FILE).is_file():
            raise ClusterError(f"run {prepared.run_id} was not prepared here ({run_dir / PLAN_FILE} is missing)")
        if (run_dir / STATE_FILE).exists():
            raise ClusterError(f"run {prepared.run_id} was already submitted")
        job_id = self._next_job_id()
        write_state(run_dir, {"job_id": job_id, "state": "PENDING", "reason": "None", "submit_time": time.time()})
        (self._jobs_dir() / job_id).write_text(str(run_dir))
        (run_dir / JOB_ID_FILE).write_text(job_id + "\n")
        env = dict(os.environ)
        repo_root = str(Path(remote.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
        with open(run_dir / "logs" / slurm.batch_log_file(job_id), "ab") as out:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "remote.local_launcher", str(run_dir), job_id],
                cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel kills the launcher and every rank
            )
        self._children[job_id] = launcher  # the launcher records its own pid and process group
        return job_id

    def _run_dir_of(self, job_id: str) -> Path | None:
        index = self._jobs_dir() / str(job_id)
        return Path(index.read_text().strip()) if index.is_file() else None

    def _status_of(self, job_id: str) -> JobStatus:
        run_dir = self._run_dir_of(job_id)
        if run_dir is None or not (run_dir / STATE_FILE).is_file():
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason=f"no local job {job_id} in {self.workdir}")
        child = self._children.get(job_id)
        if child is not None:
            child.poll()  # reap our own launcher once it exits
        state = read_state(run_dir)
        job_state = JobState(state["state"])
        if not job_state.is_terminal and not _launcher_alive(state.get("launcher_pid"), child):
            state = read_state(run_dir)  # it may have finished between the two reads
            job_state = JobState(state["state"])
            if not job_state.is_terminal:
                if (run_dir / CANCEL_MARKER).exists():  # SIGTERM reached it before its handler was set
                    state.update(state="CANCELLED", reason=None, end_time=time.time(), exit_code=0, signal=0)
                else:
                    state.update(state="FAILED", reason="the local launcher exited without recording an end state",
                                 end_time=time.time(), exit_code=state.get("exit_code", 1), signal=0)
                write_state(run_dir, state)
                job_state = JobState(state["state"])
        elapsed = None
        if state.get("start_time"):
            elapsed = (state.get("end_time") or time.time()) - state["start_time"]
        reason = state.get("reason")
        return JobStatus(
            job_id=job_id, state=job_state, reason=None if reason in (None, "None") else reason,
            exit_code=state.get("exit_code"), signal=state.get("signal"), elapsed_s=elapsed,
            nodelist="localhost" if state.get("start_time") else None,
        )

    def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        self.scheduler_calls += 1
        return {job_id: self._status_of(job_id) for job_id in job_ids}

    def cancel(self, job_id: str, *, wait_s: float = 30.0) -> JobStatus:
        current = self._status_of(job_id)
        if current.state.is_terminal or current.state == JobState.UNKNOWN:
            return current
        run_dir = self._run_dir_of(job_id)
        state = read_state(run_dir)
        child = self._children.get(job_id)
        pgid = state.get("pgid") or (child.pid if child else None)  # session leader: pgid == its pid
        if pgid is None:
            raise ClusterError(f"local job {job_id} has no recorded process group yet; try again")
        (run_dir / CANCEL_MARKER).write_text(str(time.time()))
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        ended = wait_until_ended(lambda: self._status_of(job_id), wait_s=wait_s, poll_s=0.05,
                                  sleep=self._sleep)
        if ended is not None:
            return ended
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise ClusterError(f"local job {job_id} did not stop within {wait_s:.0f} s of SIGTERM; SIGKILLed")

    def stream_logs(
        self,
        paths: list[str],
        offsets: dict[str, int] | None = None,
        *,
        poll_s: float = 0.2,
        stop: threading.Event | None = None,
        tail_bytes: int | None = None,
    ) -> Iterator[list[LogChunk]]:
        return follow(_read_local_from, paths, offsets, poll_s=poll_s, stop=stop, sleep=self._sleep,
                      tail_bytes=tail_bytes, size_of=_local_size)

    def fetch_results(self, prepared: PreparedRun, local_dir: str) -> list[str]:
        return copy_run_files(prepared, local_dir, list_files=_regular_files, copy_file=shutil.copyfile)

    def accounting(self, job_id: str, *, wait_s: float = 0.0) -> dict[str, str]:
        """sacct-shaped fields from the launcher's record (MaxRSS and TotalCPU over all ranks)."""
        status = self._status_of(job_id)
        run_dir = self._run_dir_of(job_id)
        if run_dir is None:
            return {}
        state = read_state(run_dir)
        plan = json.loads((run_dir / PLAN_FILE).read_text())
        ntasks = plan["nodes"] * plan["tasks_per_node"]
        return {
            "JobID": job_id,
            "State": status.state.value,
            "ExitCode": f"{status.exit_code or 0}:{status.signal or 0}",
            "Elapsed": slurm.format_duration(status.elapsed_s or 0),
            "NodeList": "localhost",
            "AllocTRES": f"cpu={ntasks},node=1" + (f",gres/gpu={plan['gpus_per_node']}" if plan["gpus_per_node"] else ""),
            "MaxRSS": f"{state['max_rss_kb']}K" if "max_rss_kb" in state else "",
            "TotalCPU": slurm.format_duration(state["total_cpu_s"], fraction=True) if "total_cpu_s" in state else "",
        }

    def close(self) -> None:
        for child in self._children.values():
            child.poll()


def _lane_file(lane: str) -> str:
    """A lane name as a file name (lanes are made by dinf, but never trusted as paths)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in lane)[:100] or "lane"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _regular_files(directory: str) -> list[str]:
    return sorted(entry.name for entry in Path(directory).iterdir() if entry.is_file())


def _local_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _read_local_from(path: str, offset: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(MAX_READ)
    except FileNotFoundError:
        return None


def _launcher_alive(pid: int | None, child: subprocess.Popen | None) -> bool:
    if child is not None:
        return child.returncode is None
    if not pid:
        return True  # submitted a moment ago; the launcher has not recorded itself yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a recycled PID belongs to something else
        try:
            return b"remote.local_launcher" in cmdline.read_bytes()
        except OSError:
            return False
    return True
