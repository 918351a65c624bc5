"""The cluster interface both backends implement (Slurm over SSH, and the local default).

Only the shapes live here: what a submission carries, what a job's status looks like, what a log
chunk is, and the `Cluster` protocol. No I/O, no Slurm strings (those are in `remote.slurm`), no
SSH (that is `remote.ssh`). The laptop side (`tui`, `storage`) programs against this module alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from remote.errors import ClusterError  # noqa: F401  (re-exported: every backend raises it)


class JobState(str, Enum):
    """Slurm's job states (the local backend uses the same names)."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    RESIZING = "RESIZING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
    }
)


@dataclass(frozen=True)
class JobStatus:
    """One job's state as the scheduler reports it."""

    job_id: str
    state: JobState
    reason: str | None = None
    """Pending reason (Resources, Priority, ...) or the state's detail."""
    exit_code: int | None = None
    signal: int | None = None
    elapsed_s: float | None = None
    nodelist: str | None = None


@dataclass(frozen=True)
class FailureSummary:
    """Who died first and how, then what that did to the others (srun's log first, sacct second).

    Built by `remote.slurm.summarize_failure` for both backends (the local launcher writes srun's lines).
    """

    rank: int | None
    """The first rank to die (None when only sacct's step records were available)."""
    node: str | None
    signal: int | None
    exit_code: int | None
    cause: str
    """'rank 1 on node2 died first: killed by signal 9 (SIGKILL)'."""
    consequences: tuple[str, ...] = ()
    """What followed, in order: the peers srun ended, the steps sacct recorded, the job's notes."""
    source: str = "srun"
    """'srun' (the batch log named the task) or 'sacct' (only step records)."""

    def text(self) -> str:
        return "; then ".join([self.cause, *self.consequences])

    def to_dict(self) -> dict:
        return {"rank": self.rank, "node": self.node, "signal": self.signal, "exit_code": self.exit_code,
                "cause": self.cause, "consequences": list(self.consequences), "source": self.source,
                "text": self.text()}

    @classmethod
    def from_dict(cls, data: dict) -> FailureSummary:
        return cls(rank=data.get("rank"), node=data.get("node"), signal=data.get("signal"),
                   exit_code=data.get("exit_code"), cause=data.get("cause", ""),
                   consequences=tuple(data.get("consequences", ())), source=data.get("source", "srun"))


@dataclass
class Resources:
    """What the job asks the scheduler for. tasks_per_node is one rank per GPU."""

    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None
    """Slurm time format: minutes, MM:SS, HH:MM:SS, D-HH:MM:SS."""
    constraint: str | None = None
    mem: str | None = None
    container_image: str | None = None
    """Apptainer image; the job runs `srun apptainer exec --nv IMAGE ...`."""


@dataclass
class PythonEnvironment:
    """How the remote side gets a Python with the worker installed (set per cluster)."""

    python: str = "python3"
    venv: str | None = None
    modules: list[str] = field(default_factory=list)
    """`module load` names, in order."""
    setup_lines: list[str] = field(default_factory=list)
    """Extra shell lines run before the worker (exports and the like), rendered verbatim."""
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class RunBundle:
    """What one submission uploads: the worker's spec, its prompts, and how to run it."""

    run_id: str
    """Unique, filesystem-safe id chosen by the laptop; names the remote run directory."""
    job_name: str
    """Free text shown in squeue (quoted, never executed)."""
    spec_json: str
    """worker.contract.RunSpec.to_json(); its output_dir is rewritten to the run directory's."""
    prompts_jsonl: str | None
    resources: Resources = field(default_factory=Resources)
    lane: str | None = None
    """Jobs of one lane run one after another where the backend queues them itself (the local
    backend: the cells of one experiment, so no two time themselves on the same cores). Slurm
    places jobs itself and ignores it."""


@dataclass(frozen=True)
class PreparedRun:
    """A bundle uploaded to the cluster, ready to submit."""

    run_id: str
    run_dir: str
    """Absolute remote path of the run's directory (mode 0700)."""
    script_path: str
    output_dir: str
    """The worker's output_dir (result.json, completions, rank events and logs)."""
    logs_dir: str
    """Where the launcher writes per-rank stdout/stderr (`launcher_log_file(job_id, rank)`)."""


@dataclass(frozen=True)
class LogChunk:
    """New complete lines of one remote file, read from byte `offset` to `end_offset`."""

    path: str
    offset: int
    end_offset: int
    lines: list[str]


class Cluster(Protocol):
    """The operations dinf needs from any backend. Every method blocks; call from a thread."""

    name: str

    def preview(self, bundle: RunBundle) -> str:
        """The batch script that `submit` would run, rendered without side effects."""

    def preflight(self, bundle: RunBundle) -> str:
        """Ask the scheduler whether it would accept the job (`sbatch --test-only`)."""

    def prepare(self, bundle: RunBundle) -> PreparedRun:
        """Upload spec, prompts and job script into a fresh per-run directory."""

    def submit(self, prepared: PreparedRun, bundle: RunBundle) -> str:
        """Submit the prepared run; returns the job id."""

    def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Every given job's status in one batched scheduler call."""

    def cancel(self, job_id: str, *, wait_s: float = 30.0) -> JobStatus:
        """Cancel and wait until the job reaches a terminal state."""

    def stream_logs(
        self, paths: list[str], offsets: dict[str, int] | None = None, *, poll_s: float = 0.2,
        tail_bytes: int | None = None,
    ) -> Iterator[list[LogChunk]]:
        """Yield batches of new lines of every path, from the given byte offsets, until closed.

        Files that don't exist yet are waited for. After a dropped connection the stream
        resumes from the last delivered offset: no line lost or repeated. `tail_bytes`: a path
        without an offset starts at most that many bytes before its end, at a line start.
        """

    def fetch_results(self, prepared: PreparedRun, local_dir: str) -> list[str]:
        """Copy result.json, completions and event files to local_dir; returns the local paths."""

    def accounting(self, job_id: str) -> dict[str, str]:
        """sacct fields for the job: State, ExitCode, Elapsed, NodeList, AllocTRES, MaxRSS, TotalCPU."""

    def close(self) -> None:
        """Release connections and threads."""
