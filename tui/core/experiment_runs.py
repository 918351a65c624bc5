"""Experiments against the service layer: record a plan, submit its cells, resubmit failed ones,
attach result bundles brought back by hand, and read the grid of cell states.

Blocking (call from a thread in the app). Every run is made with `Dinf.new_run` / `Dinf.submit`,
so validation, the sbatch script and "nothing half-submitted" are the service's; this module only
decides which cells need a run. A cell's run is found by its name (`experiment:cell`), which is
also the spec's run_name, so bundles from a worker launched by hand (torchrun on a GPU machine)
find their cell when attached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage import repo
from storage.db import read_session, write_session
from tui.core.service import Dinf, RunRecord
from tui.studies.presets import Cell, ExperimentError, ExperimentPlan, run_name
from tui.studies.results import ExperimentResult, cell_key_of, find_experiment, load_experiment


@dataclass(frozen=True)
class Launch:
    """What happened to each cell: the run made for it (None when skipped) and why."""

    cell: str
    run: RunRecord | None
    note: str


def record_plan(dinf: Dinf, plan: ExperimentPlan, *, notes: str = "") -> int:
    """Store the experiment and its plan; no runs yet. Returns the experiment id."""
    if not plan.cells:
        raise ExperimentError(f"{plan.name}: the plan has no cells to run")
    return dinf.create_experiment(name=plan.name, kind=plan.kind, parameters=plan.parameters(), notes=notes)


def load(dinf: Dinf, ref: str | int) -> ExperimentResult:
    with read_session(dinf.engine) as session:
        return load_experiment(session, ref)


def _new_run(dinf: Dinf, experiment: ExperimentResult, cell: Cell, cluster: str) -> RunRecord:
    spec = dataclasses.replace(cell.spec)
    spec.run_name = run_name(experiment.name, cell.key)
    return dinf.new_run(cluster=cluster, spec=spec, resources=dataclasses.replace(cell.resources),
                        name=spec.run_name, experiment_id=experiment.id)


def _submit_cells(dinf: Dinf, experiment: ExperimentResult, cells: Iterable[Cell], cluster: str,
                  *, submit: bool) -> list[Launch]:
    launches: list[Launch] = []
    for cell in cells:
        try:
            record = _new_run(dinf, experiment, cell, cluster)
            if submit:
                record = dinf.submit(record.id)
        except ValueError as exc:  # a field the service refused: stop here and say what was done
            done = ", ".join(l.cell for l in launches) or "none"
            raise ExperimentError(
                f"cell {cell.key}: {exc} (cells launched before it: {done}; fix the setting and run "
                f"`dinf experiment submit {experiment.name}` to launch the rest)"
            ) from exc
        if submit:
            note = f"submitted as job {record.job_id}" if record.job_id else f"not submitted: {record.error}"
        else:
            note = "recorded (DRAFT)"
        launches.append(Launch(cell.key, record, note))
    return launches


def launch(dinf: Dinf, ref: str | int, *, cluster: str, submit: bool = True) -> list[Launch]:
    """Make (and submit) a run for every cell that has none yet; submit cells left in DRAFT."""
    experiment = load(dinf, ref)
    if experiment.plan is None:
        raise ExperimentError(f"experiment {experiment.name} has no plan of cells (made outside the presets)")
    launches: list[Launch] = []
    fresh = [c.cell for c in experiment.cells if c.run is None]
    launches += _submit_cells(dinf, experiment, fresh, cluster, submit=submit)
    for state in experiment.cells:
        if state.run is not None and state.state == "DRAFT" and submit:
            record = dinf.submit(state.run.id)
            launches.append(Launch(state.cell.key, record, f"submitted as job {record.job_id}"
                                   if record.job_id else f"not submitted: {record.error}"))
        elif state.run is not None:
            launches.append(Launch(state.cell.key, None, f"already has run {state.run.id} ({state.state})"))
    return sorted(launches, key=lambda l: [c.key for c in experiment.plan.cells].index(l.cell))


def resubmit_failed(dinf: Dinf, ref: str | int, *, cluster: str | None = None) -> list[Launch]:
    """A new run for every cell whose latest run failed (FAILED, TIMEOUT, SUBMIT_FAILED, ...).

    The failed run stays in the database as the cell's earlier attempt; the cell's state becomes
    the new run's. `cluster` defaults to the cluster the failed run used.
    """
    experiment = load(dinf, ref)
    launches = []
    for state in experiment.cells:
        if not state.failed:
            continue
        target = cluster or state.run.cluster
        if target is None:
            raise ExperimentError(f"cell {state.cell.key}: its run has no cluster; pass --cluster")
        launches += _submit_cells(dinf, experiment, [state.cell], target, submit=True)
    return launches


def attach_bundles(dinf: Dinf, ref: str | int, directories: Iterable[Path]) -> list[tuple[Path, str, int]]:
    """Ingest result bundles made outside dinf's submission (e.g. torchrun on a GPU machine) and link
    each to its cell, matched by the bundle's run name. Returns (directory, cell key, run id).

    A bundle whose run name matches no cell of the experiment is refused before anything is stored.
    """
    experiment = load(dinf, ref)
    keys = {c.cell.key for c in experiment.cells}
    matched = []
    for directory in directories:
        directory = Path(directory)
        name = _bundle_run_name(directory)
        key = cell_key_of(name, experiment.name)
        if key is None or key not in keys:
            raise ExperimentError(
                f"{directory}: its run name {name!r} names no cell of experiment {experiment.name!r} "
                f"(expected {experiment.name}:<cell>, cells: {', '.join(sorted(keys))})"
            )
        matched.append((directory, key))
    attached = []
    for directory, key in matched:
        report = dinf.ingest_dir(directory)
        with write_session(dinf.engine) as session:
            run = repo.get_run(session=session, run_id=report.run_id)
            repo.update_run(session=session, run=run, experiment_id=experiment.id,
                            name=run_name(experiment.name, key))
            session.commit()
        attached.append((directory, key, report.run_id))
    return attached


def _bundle_run_name(directory: Path) -> str:
    from worker import contract

    path = directory / contract.RESULT_FILE
    if not path.is_file():
        raise ExperimentError(f"{directory}: no {contract.RESULT_FILE}; is this a dinf run's output directory?")
    try:
        result = contract.read_result(path.read_text())
    except ValueError as exc:
        raise ExperimentError(f"{path}: {exc}") from exc
    return str(result.get("run_name") or (result.get("spec") or {}).get("run_name") or "")


def experiment_id(dinf: Dinf, ref: str | int) -> int:
    with read_session(dinf.engine) as session:
        return find_experiment(session, ref).id
