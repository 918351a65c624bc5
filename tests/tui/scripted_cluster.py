"""A Cluster whose jobs a test drives by hand: states, log lines and failures on demand.

For fast, deterministic Pilot and snapshot tests of the app over the REAL service layer and a real
SQLite file (`tui.core.service.Dinf(cluster_factory=...)`). The end-to-end tests use the real local
backend and the real Slurm cluster instead. Its result bundle is the storage tests' pp2 fixture.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from remote import errors
from remote.cluster import ClusterError, JobState, JobStatus, LogChunk, PreparedRun, RunBundle
from worker import contract

BUNDLE = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"


class HostKeyUnknown(errors.HostKeyUnknown):
    """The remote layer's host-key error, whose trust() records the key here instead of known_hosts."""

    def __init__(self, host: str, fingerprint: str, on_trust) -> None:
        super().__init__(f"unknown host key for {host}: {fingerprint}", host=host, key_type="ssh-ed25519",
                         fingerprint=fingerprint)
        self._on_trust = on_trust

    def trust(self) -> None:
        self._on_trust()


class ScriptedCluster:
    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.lock = threading.Lock()
        self.files: dict[str, bytearray] = {}
        self.states: dict[str, JobStatus] = {}
        self.prepared: dict[str, PreparedRun] = {}
        self.next_job = 1001
        self.fail_status_with: BaseException | None = None
        self.cancelled: list[str] = []
        self.status_calls = 0
        self.break_next_stream = False
        """Set to make the current log stream raise once, as a dropped SSH connection would."""
        self.closed = threading.Event()

    # --- what a test does ---------------------------------------------------------------------

    def job_of(self, run_uid: str) -> str:
        return next(job for job, prep in self.prepared.items() if prep.run_id == run_uid)

    def set_state(self, job_id: str, state: JobState, reason: str | None = None) -> None:
        with self.lock:
            self.states[job_id] = JobStatus(job_id, state, reason=reason, exit_code=0)

    def write(self, job_id: str, rank: int, kind: str, lines: list[str]) -> None:
        prepared = self.prepared[job_id]
        if kind == "events":
            path = f"{prepared.output_dir}/{contract.events_file(rank)}"
        elif kind == "worker":
            path = f"{prepared.output_dir}/{contract.log_file(rank)}"
        else:
            path = f"{prepared.logs_dir}/{contract.launcher_log_file(job_id, rank)}"
        with self.lock:
            self.files.setdefault(path, bytearray()).extend("".join(line + "\n" for line in lines).encode())

    # --- the Cluster protocol -------------------------------------------------------------------

    def preview(self, bundle: RunBundle) -> str:
        r = bundle.resources
        return (
            "#!/bin/bash\n"
            f"#SBATCH --job-name={bundle.job_name}\n"
            f"#SBATCH --nodes={r.nodes}\n#SBATCH --ntasks-per-node={r.tasks_per_node}\n"
            + (f"#SBATCH --partition={r.partition}\n" if r.partition else "")
            + "srun --kill-on-bad-exit=1 python -m worker run spec.json\n"
        )

    def preflight(self, bundle: RunBundle) -> str:
        return "would start now"

    def prepare(self, bundle: RunBundle) -> PreparedRun:
        run_dir = f"/scratch/dinf/{bundle.run_id}"
        return PreparedRun(bundle.run_id, run_dir, f"{run_dir}/job.sh", f"{run_dir}/out", f"{run_dir}/logs")

    def submit(self, prepared: PreparedRun, bundle: RunBundle) -> str:
        with self.lock:
            job_id = str(self.next_job)
            self.next_job += 1
            self.prepared[job_id] = prepared
            self.states[job_id] = JobStatus(job_id, JobState.PENDING, reason="Resources")
        return job_id

    def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        self.status_calls += 1
        if self.fail_status_with is not None:
            raise self.fail_status_with
        with self.lock:
            return {job: self.states[job] for job in job_ids if job in self.states}

    def cancel(self, job_id: str, *, wait_s: float = 30.0) -> JobStatus:
        self.cancelled.append(job_id)
        self.set_state(job_id, JobState.CANCELLED)
        return self.states[job_id]

    def stream_logs(
        self, paths: list[str], offsets: dict[str, int] | None = None, *, poll_s: float = 0.02,
        tail_bytes: int | None = None,  # read from the offsets regardless: tests/tui/test_large_history.py covers tails
    ) -> Iterator[list[LogChunk]]:
        positions = {path: (offsets or {}).get(path, 0) for path in paths}
        while not self.closed.is_set():
            if self.break_next_stream:
                self.break_next_stream = False
                raise ClusterError("ssh connection lost while streaming logs")
            chunks = []
            with self.lock:
                for path in paths:
                    data = self.files.get(path)
                    start = positions[path]
                    if data is None or len(data) <= start:
                        continue
                    end = data.rfind(b"\n", start) + 1
                    if end <= start:
                        continue
                    text = bytes(data[start:end]).decode()
                    chunks.append(LogChunk(path, start, end, text.splitlines()))
                    positions[path] = end
            yield chunks
            time.sleep(poll_s)

    def fetch_results(self, prepared: PreparedRun, local_dir: str) -> list[str]:
        job = next((j for j, p in self.prepared.items() if p.run_id == prepared.run_id), None)
        if job is None or self.states[job].state != JobState.COMPLETED:
            return []
        copied = []
        for source in BUNDLE.iterdir():
            target = Path(local_dir) / source.name
            shutil.copy(source, target)
            copied.append(str(target))
        return copied

    def accounting(self, job_id: str, **_: object) -> dict[str, str]:
        if job_id not in self.states:  # sacct knows nothing of a job it never ran
            return {}
        return {"State": self.states[job_id].state.value, "ExitCode": "0:0", "Elapsed": "00:00:42"}

    def close(self) -> None:
        self.closed.set()


class HostKeyChanged(HostKeyUnknown):
    """Like the remote layer's changed-key error: the key known_hosts holds, and the new one."""

    changed = True

    def __init__(self, host: str, fingerprint: str, expected: str, on_trust) -> None:
        super().__init__(host, fingerprint, on_trust)
        self.expected_fingerprint = expected
