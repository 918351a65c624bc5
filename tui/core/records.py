"""The snapshots the service hands out: a run as stored at one moment, its state history, its logs.

Frozen and detached from any database session, so they pass between threads and the app holds one
per run. Standard library only (no sqlmodel): the app's screens and the CLI's printing import these
types without the database layer. Run states are `storage.states`' vocabulary (the scheduler's
names plus dinf's own).

`records(runs, clusters, history)` turns rows of the run, cluster and state-change tables into
`RunRecord`s. The rows may be SQLModel objects (`tui.core.service.Dinf`, through `storage.repo`) or
the plain namespaces of `storage.light_read` (`dinf runs` without SQLModel): anything with the
columns as attributes. One function for both, so the two paths can't drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping
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


_DICT_KEYS = {"spec_json": "spec", "resources_json": "resources"}
"""`RunRecord.to_dict` gives the JSON columns decoded, under these names."""


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
    tags: tuple[str, ...] = ()
    """The user's labels for the run, sorted (`storage.tags` says what one may be)."""
    notes: str = ""
    """The user's free text about the run: data, shown with `printable` / `plain`."""

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
        # Field by field, not dataclasses.asdict: its deep copy was 0.3 s of `dinf runs --json` over
        # 1,000 runs, and the only nested values (job_ids, history, failure) are rebuilt below anyway.
        data = {_DICT_KEYS.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)}
        data["spec"], data["resources"] = self.spec, self.resources
        data["job_ids"] = list(self.job_ids)
        data["history"] = [{"state": h.state, "at": h.at, "reason": h.reason} for h in self.history]
        data["failure"] = None if self.failure is None else self.failure.to_dict()
        data["tags"] = list(self.tags)
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


def records(
    runs: Iterable[Any], clusters: Iterable[Any], history: Iterable[Any],
    tags: Mapping[int, Iterable[str]] | None = None,
) -> list[RunRecord]:
    """Snapshots of `runs` (rows of `run`), with their cluster (rows of `cluster`, by id), their
    history (rows with run_id, state, at, reason, in order of entry) and their tags (run id -> tags,
    sorted; runs without tags absent)."""
    tags = tags or {}
    by_id = {c.id: c for c in clusters}
    histories: dict[int, list[StateEntry]] = {}
    for change in history:
        # interned: "COMPLETED" read from SQLite is a new string in every row otherwise
        entry = StateEntry(sys.intern(change.state), change.at, change.reason)
        histories.setdefault(change.run_id, []).append(entry)
    return [_snapshot(run, by_id.get(run.cluster_id), tuple(histories.get(run.id, ())), tuple(tags.get(run.id, ())))
            for run in runs]


def _snapshot(run: Any, cluster: Any, history: tuple[StateEntry, ...], tags: tuple[str, ...] = ()) -> RunRecord:
    return RunRecord(
        id=run.id, uid=run.uid, name=run.name,
        cluster=cluster.name if cluster else None, backend=cluster.backend if cluster else None,
        experiment_id=run.experiment_id, mode=run.mode, state=run.state, state_reason=run.state_reason,
        job_id=run.job_id, job_ids=tuple(json.loads(run.job_ids_json)), num_ranks=run.num_ranks,
        num_gpus=run.num_gpus, spec_json=run.spec_json, resources_json=run.resources_json,
        run_dir=run.run_dir, output_dir=run.output_dir, logs_dir=run.logs_dir, script_path=run.script_path,
        local_results_dir=run.local_results_dir, error=run.error, exit_code=run.exit_code,
        load_time_s=run.load_time_s, created_at=run.created_at, submitted_at=run.submitted_at,
        started_at=run.started_at, finished_at=run.finished_at, ingested_at=run.ingested_at,
        engine_impl=run.engine_impl, engine_compiled=run.engine_compiled,
        engine_cuda_graphs=run.engine_cuda_graphs, engine_capture_s=run.engine_capture_s,
        quant_scheme=run.quant_scheme, accuracy_json=run.accuracy_json,
        history=history, failure=_failure(run), tags=tags, notes=run.notes,
    )


def _failure(run: Any) -> FailureSummary | None:
    text = run.failure_json
    return None if not text else FailureSummary.from_dict(json.loads(text))
