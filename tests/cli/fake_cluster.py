"""A scripted in-memory Cluster for fast service tests (the real backends have their own tests).

Jobs move through the states the test scripts; `fetch_results` copies a prepared bundle directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from remote.cluster import ClusterError, JobState, JobStatus, LogChunk, PreparedRun, RunBundle
from remote.results import LOGS_SUBDIR
from remote.slurm import STEPS_KEY, batch_log_file


class FakeCluster:
    def __init__(self, name: str, *, bundle: Path | None = None):
        self.name = name
        self.bundle = bundle
        self.states: dict[str, list[JobState]] = {}
        self.submitted: list[RunBundle] = []
        self.status_calls: list[list[str]] = []
        self.fail_submit: str | None = None
        self.unreachable = False
        self.cancelled: list[str] = []
        self.closed = False
        self.sacct_lag: dict[str, list[str]] = {}
        """States sacct reports before it catches up with the scheduler, per job."""
        self.batch_logs: dict[str, str] = {}
        """Per job: the batch log (srun's lines) that fetch_results leaves under logs/."""
        self.sacct_steps: dict[str, list[dict[str, str]]] = {}
        """Per job: the sacct step rows that accounting() returns under remote.slurm.STEPS_KEY."""
        self._job_of_run: dict[str, str] = {}

    def preview(self, bundle: RunBundle) -> str:
        return f"#!/bin/bash\n#SBATCH --job-name={bundle.job_name}\n#SBATCH --ntasks-per-node={bundle.resources.tasks_per_node}\n"

    def preflight(self, bundle: RunBundle) -> str:
        return "ok"

    def prepare(self, bundle: RunBundle) -> PreparedRun:
        run_dir = f"/remote/{bundle.run_id}"
        return PreparedRun(bundle.run_id, run_dir, f"{run_dir}/job.sh", f"{run_dir}/out", f"{run_dir}/logs")

    def submit(self, prepared: PreparedRun, bundle: RunBundle) -> str:
        if self.fail_submit:
            raise ClusterError(self.fail_submit)
        self.submitted.append(bundle)
        job_id = str(100 + len(self.submitted))
        self.states[job_id] = [JobState.PENDING, JobState.RUNNING, JobState.COMPLETED]
        self._job_of_run[prepared.run_id] = job_id
        return job_id

    def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        if self.unreachable:
            raise ClusterError("ssh: connection refused")
        self.status_calls.append(list(job_ids))
        out = {}
        for job_id in job_ids:
            states = self.states[job_id]
            state = states.pop(0) if len(states) > 1 else states[0]
            out[job_id] = JobStatus(job_id, state, exit_code=0 if state.is_terminal else None)
        return out

    def cancel(self, job_id: str, *, wait_s: float = 30.0) -> JobStatus:
        self.cancelled.append(job_id)
        self.states[job_id] = [JobState.CANCELLED]
        return JobStatus(job_id, JobState.CANCELLED)

    def stream_logs(self, paths, offsets=None, *, poll_s: float = 0.2):
        yield [LogChunk(path, 0, 10, [f"line of {path}"]) for path in paths]

    def fetch_results(self, prepared: PreparedRun, local_dir: str) -> list[str]:
        job_id = self._job_of_run.get(prepared.run_id)
        if job_id in self.batch_logs:
            (Path(local_dir) / LOGS_SUBDIR).mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / LOGS_SUBDIR / batch_log_file(job_id)).write_text(self.batch_logs[job_id])
        if self.bundle is None:
            return []
        copied = []
        for path in self.bundle.iterdir():
            shutil.copy(path, Path(local_dir) / path.name)
            copied.append(str(Path(local_dir) / path.name))
        # Each run's bundle is its own (as real timings make them): name it after the run.
        result_path = Path(local_dir) / "result.json"
        result = json.loads(result_path.read_text())
        result["run_name"] = prepared.run_id
        result_path.write_text(json.dumps(result))
        for rank in range(result["world_size"]):  # what the ranks logged, as fetched copies
            log = Path(local_dir) / f"rank{rank}.log"
            log.write_text(f"rank {rank} fetched line 1\nrank {rank} fetched line 2\n")
            copied.append(str(log))
        return copied

    def accounting(self, job_id: str) -> dict[str, str]:
        lagging = self.sacct_lag.get(job_id)
        state = lagging.pop(0) if lagging else self.states[job_id][-1].value
        return {"State": state, "ExitCode": "0:0", "Elapsed": "00:00:05",
                "NodeList": "node1", "MaxRSS": "300M", STEPS_KEY: self.sacct_steps.get(job_id, [])}

    def close(self) -> None:
        self.closed = True
