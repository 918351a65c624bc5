"""The snapshots the service hands out: a run as stored at one moment, its state history, its logs.

Frozen and detached from any database session, so they pass between threads and the app holds one
per run. Standard library only (no sqlmodel): the app's screens and the CLI's printing import these
types without the database layer; `tui.core.service` builds them from storage rows. Run states are
`storage.states`' vocabulary (the scheduler's names plus dinf's own).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from remote.cluster import FailureSummary
from storage.states import DONE_STATES, FINISHED_STATES

LOG_KINDS = ("worker", "events", "launcher")
"""Per rank: the worker's own log, its JSON-lines events, and the launcher's captured stdout/stderr."""


@dataclass(frozen=True, slots=True)  # slots: a thousand runs hold four of these each
class StateEntry:
    state: str
    at: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored, at one moment. Safe to pass between threads; refresh by asking again.

    The app holds one per run in the database, so a record is kept light (dinf-tui's RSS with 1,000
    runs, bench_tui.py): slots instead of an instance dict, and the spec and resources kept as the
    JSON text stored, decoded only when `spec` / `resources` are read (each read gives a new dict).
    """

    id: int
    uid: str
    name: str
    cluster: str | None
    backend: str | None
    experiment_id: int | None
    mode: str
    state: str
    state_reason: str | None
    job_id: str | None
    job_ids: tuple[str, ...]
    num_ranks: int
    num_gpus: int
    spec_json: str
    resources_json: str
    run_dir: str | None
    output_dir: str | None
    logs_dir: str | None
    script_path: str | None
    local_results_dir: str | None
    error: str | None
    exit_code: int | None
    load_time_s: float | None
    created_at: float
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    ingested_at: float | None
    history: tuple[StateEntry, ...] = ()
    engine_impl: str = "reference"
    """The worker's engine, as the spec asked until results are ingested (`tui.studies.results.describe_engine`)."""
    engine_compiled: bool = False
    engine_cuda_graphs: bool = False
    engine_capture_s: float | None = None
    quant_scheme: str = "none"
    accuracy_json: str | None = None
    """result.json "accuracy" as stored (parsed only where shown: `dinf show`)."""
    failure: FailureSummary | None = None
    """How a failed job ended, told straight: the first rank to die, its node, its signal or exit
    code, then what followed (`failure.text()` is one line; `error` starts with it too)."""

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)

    @property
    def resources(self) -> dict[str, Any]:
        return json.loads(self.resources_json)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def done(self) -> bool:
        """Finished with results to read (completed, or imported from a bundle)."""
        return self.state in DONE_STATES

    @property
    def has_results(self) -> bool:
        return self.ingested_at is not None

    def to_dict(self) -> dict[str, Any]:
        data = {("spec" if k == "spec_json" else "resources" if k == "resources_json" else k): v
                for k, v in dataclasses.asdict(self).items()}
        data["spec"], data["resources"] = self.spec, self.resources
        data["job_ids"] = list(self.job_ids)
        data["history"] = [dataclasses.asdict(h) for h in self.history]
        data["failure"] = None if self.failure is None else self.failure.to_dict()
        return data


@dataclass(frozen=True)
class LogSource:
    """One log file of one rank, as a path on the run's cluster."""

    rank: int
    kind: str
    """One of LOG_KINDS."""
    path: str

    @property
    def label(self) -> str:
        return f"rank {self.rank} {self.kind}"
