"""Repository functions: keyword-only, each taking the caller's session.

They add, flush and query, but never commit: the caller owns the unit of work (one session per
thread, `storage.db.write_session` for writes), so an ingestion or a state change lands whole or
not at all. Queries are generic (filter by experiment, by run ids) so the service layer, the CLI
and the experiment reports share them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import case, func
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel, col, select

from storage.models import (
    DRAFT,
    ENGINE_BEFORE_FAST_PATH,
    FINISHED_STATES,
    Accounting,
    ClusterRow,
    Completion,
    CorrectnessResult,
    Experiment,
    Measurement,
    RankStat,
    Run,
    RunRank,
    RunTag,
    StateChange,
)
from storage.tags import check_note, check_tags

Row = TypeVar("Row", bound=SQLModel)


class RunNotFound(LookupError):
    """No run matches the given id, uid or name."""


# --- clusters ---------------------------------------------------------------------------------


def get_or_create_cluster(
    *, session: Session, name: str, backend: str, host: str | None = None, config: dict | None = None
) -> ClusterRow:
    row = session.exec(select(ClusterRow).where(ClusterRow.name == name)).first()
    if row is None:
        row = ClusterRow(
            name=name, backend=backend, host=host, config_json=json.dumps(config or {}), created_at=time.time()
        )
        session.add(row)
        session.flush()
    return row


def get_cluster(*, session: Session, cluster_id: int) -> ClusterRow | None:
    return session.get(ClusterRow, cluster_id)


def list_clusters(*, session: Session) -> list[ClusterRow]:
    return list(session.exec(select(ClusterRow).order_by(ClusterRow.name)))


# --- experiments ------------------------------------------------------------------------------


def create_experiment(
    *, session: Session, name: str, kind: str, parameters: dict[str, Any] | None = None, notes: str = ""
) -> Experiment:
    experiment = Experiment(
        name=name, kind=kind, parameters_json=json.dumps(parameters or {}, sort_keys=True), notes=notes,
        created_at=time.time(),
    )
    session.add(experiment)
    session.flush()
    return experiment


def get_experiment(*, session: Session, experiment_id: int) -> Experiment | None:
    return session.get(Experiment, experiment_id)


def list_experiments(*, session: Session, kind: str | None = None) -> list[Experiment]:
    query = select(Experiment).order_by(col(Experiment.id))
    if kind is not None:
        query = query.where(Experiment.kind == kind)
    return list(session.exec(query))


# --- runs -------------------------------------------------------------------------------------


def create_run(
    *,
    session: Session,
    uid: str,
    name: str,
    mode: str,
    spec: dict[str, Any],
    resources: dict[str, Any] | None = None,
    num_ranks: int = 1,
    num_gpus: int = 0,
    cluster_id: int | None = None,
    experiment_id: int | None = None,
    state: str = DRAFT,
    at: float | None = None,
) -> Run:
    """A new run row (its engine columns as the spec asks) and the first entry of its state history."""
    now = time.time() if at is None else at
    run = Run(
        uid=uid, name=name, mode=mode, spec_json=json.dumps(spec, sort_keys=True),
        resources_json=json.dumps(resources or {}, sort_keys=True), num_ranks=num_ranks, num_gpus=num_gpus,
        cluster_id=cluster_id, experiment_id=experiment_id, state=state, created_at=now,
        **requested_engine(spec),
        quant_scheme=str(spec.get("quant") or "none"),
    )
    session.add(run)
    session.flush()
    session.add(StateChange(run_id=run.id, state=state, at=now))
    session.flush()
    return run


def requested_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """The engine columns a run spec (`RunSpec.to_dict()`) asks for, before the worker says what ran.

    A spec without `impl` comes from before the fast path: the reference, eager. In tp mode the
    reference is DeepSpeed AutoTP, recorded as 'deepspeed' as the worker's result names it.
    Compiling and graph capture are settings of the fast path on CUDA only (ignored on CPU).
    """
    impl = spec.get("impl")
    if impl is None:
        return dict(ENGINE_BEFORE_FAST_PATH)
    impl = str(impl)
    fast = impl == "fast" and spec.get("device") != "cpu"
    return {
        "engine_impl": "deepspeed" if impl == "reference" and spec.get("mode") == "tp" else impl,
        "engine_compiled": fast and bool(spec.get("compile", True)),
        "engine_cuda_graphs": fast and bool(spec.get("cuda_graphs", True)),
        "engine_capture_s": None,
    }


def get_run(*, session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def get_run_by_uid(*, session: Session, uid: str) -> Run | None:
    return session.exec(select(Run).where(Run.uid == uid)).first()


def find_run(*, session: Session, ref: str | int) -> Run:
    """The run a user means by `ref`: its numeric id, its uid, a unique uid prefix, or a unique name."""
    text = str(ref).strip()
    if text.isdigit():
        run = session.get(Run, int(text))
        if run is not None:
            return run
    run = get_run_by_uid(session=session, uid=text)
    if run is not None:
        return run
    if text:
        by_uid_prefix = select(Run).where(col(Run.uid).startswith(text, autoescape=True))
        by_name = select(Run).where(Run.name == text)
        for query in (by_uid_prefix, by_name):
            matches = list(session.exec(query.limit(2)))
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RunNotFound(f"{text!r} matches several runs; give the numeric id")
    raise RunNotFound(f"no run {text!r}; `dinf runs` lists them")


def list_runs(
    *,
    session: Session,
    experiment_id: int | None = None,
    cluster_id: int | None = None,
    run_ids: Iterable[int] | None = None,
    states: Iterable[str] | None = None,
    unfinished: bool = False,
    tags: Iterable[str] | None = None,
) -> list[Run]:
    """Runs, oldest first, filtered by every argument given (`tags`: runs carrying every one of them)."""
    query = select(Run).order_by(col(Run.id))
    wanted = sorted(set(tags or ()))
    if wanted:
        tagged = (
            select(RunTag.run_id).where(col(RunTag.tag).in_(wanted))
            .group_by(col(RunTag.run_id)).having(func.count() == len(wanted))
        )
        query = query.where(col(Run.id).in_(tagged))
    if experiment_id is not None:
        query = query.where(Run.experiment_id == experiment_id)
    if cluster_id is not None:
        query = query.where(Run.cluster_id == cluster_id)
    if run_ids is not None:
        query = query.where(col(Run.id).in_(list(run_ids)))
    if states is not None:
        query = query.where(col(Run.state).in_(list(states)))
    if unfinished:
        query = query.where(col(Run.state).not_in(list(FINISHED_STATES)))
    return list(session.exec(query))


def tags_for_runs(*, session: Session, run_ids: Iterable[int]) -> dict[int, list[str]]:
    """run id -> its tags, sorted; runs without tags are absent. One query for any number of runs."""
    query = (
        select(RunTag.run_id, RunTag.tag).where(col(RunTag.run_id).in_(list(run_ids)))
        .order_by(col(RunTag.run_id), col(RunTag.tag))
    )
    tags: dict[int, list[str]] = {}
    for run_id, tag in session.exec(query):
        tags.setdefault(run_id, []).append(tag)
    return tags


def edit_tags(
    *, session: Session, run: Run, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> list[str]:
    """Add and remove tags of a run (each checked first: TagError before anything is written);
    returns the run's tags after the edit, sorted. Adding a tag it has, or removing one it has
    not, changes nothing."""
    add, remove = check_tags(add), check_tags(remove)
    if remove:
        for row in session.exec(select(RunTag).where(RunTag.run_id == run.id, col(RunTag.tag).in_(remove))):
            session.delete(row)
    session.flush()
    for tag in add:
        statement = sqlite_insert(RunTag.__table__).values(run_id=run.id, tag=tag)  # type: ignore[attr-defined]
        session.connection().execute(statement.on_conflict_do_nothing(index_elements=["run_id", "tag"]))
    return tags_for_runs(session=session, run_ids=[run.id]).get(run.id, [])


def set_tags(*, session: Session, run: Run, tags: Iterable[str]) -> list[str]:
    """Make the run's tags exactly `tags` (checked first); returns them sorted."""
    wanted = set(check_tags(tags))
    have = set(tags_for_runs(session=session, run_ids=[run.id]).get(run.id, []))
    return edit_tags(session=session, run=run, add=sorted(wanted - have), remove=sorted(have - wanted))


def set_notes(*, session: Session, run: Run, notes: str) -> Run:
    """Replace the run's note (checked: TagError if too long); an empty text clears it."""
    return update_run(session=session, run=run, notes=check_note(notes))


def runs_shape(*, session: Session) -> tuple[int, int, int]:
    """(how many runs, the newest id, how many unfinished): one cheap query that changes when a run
    is added, deleted or finishes, so a poller can skip re-reading every run while it stays the same."""
    unfinished = func.sum(case((col(Run.state).not_in(list(FINISHED_STATES)), 1), else_=0))
    count, newest, open_runs = session.exec(select(func.count(), func.max(Run.id), unfinished)).one()
    return int(count or 0), int(newest or 0), int(open_runs or 0)


def update_run(*, session: Session, run: Run, **fields: Any) -> Run:
    """Set the given columns (unknown names raise, so a typo is not silently ignored)."""
    for name, value in fields.items():
        if name not in Run.model_fields:
            raise AttributeError(f"Run has no column {name!r}")
        setattr(run, name, value)
    session.add(run)
    session.flush()
    return run


def add_job_id(*, session: Session, run: Run, job_id: str) -> Run:
    job_ids = json.loads(run.job_ids_json)
    if job_id not in job_ids:
        job_ids.append(job_id)
    return update_run(session=session, run=run, job_id=job_id, job_ids_json=json.dumps(job_ids))


def record_state(
    *, session: Session, run: Run, state: str, reason: str | None = None, at: float | None = None
) -> bool:
    """Move the run to `state`, appending to its history; False (and nothing written) if unchanged.

    A finished run stays finished: a late, stale poll can't bring it back to RUNNING.
    """
    if run.state == state and run.state_reason == reason:
        return False
    if run.state in FINISHED_STATES and state not in FINISHED_STATES:
        return False
    now = time.time() if at is None else at
    state_changed = run.state != state
    run.state = state
    run.state_reason = reason
    if state == "RUNNING" and run.started_at is None:
        run.started_at = now
    if state in FINISHED_STATES and run.finished_at is None:
        run.finished_at = now
    session.add(run)
    if state_changed:
        session.add(StateChange(run_id=run.id, state=state, reason=reason, at=now))
    session.flush()
    return True


def record_slurm_elapsed(*, session: Session, run: Run, elapsed_s: float, now: float | None = None) -> bool:
    """Make the run's start agree with the scheduler's own elapsed time (squeue %M, sacct Elapsed).

    dinf notices state changes only when it polls, so its own start and end can each be a poll late;
    the elapsed time shown is Slurm's: the end (or now, while running) minus Slurm's elapsed.
    False (nothing written) when the start is already within a second of it.
    """
    end = run.finished_at if run.finished_at is not None else (time.time() if now is None else now)
    start = end - elapsed_s
    if run.started_at is not None and abs(run.started_at - start) < 1.0:
        return False
    run.started_at = start
    session.add(run)
    session.flush()
    return True


def state_history(*, session: Session, run_id: int) -> list[StateChange]:
    return list(
        session.exec(select(StateChange).where(StateChange.run_id == run_id).order_by(col(StateChange.id)))
    )


def state_histories(*, session: Session, run_ids: Sequence[int]) -> list[Any]:
    """The timelines of many runs in one query, by run then time of entry.

    Rows with attributes run_id, state, at, reason (plain rows, not ORM objects: a list of thousands
    of runs builds five times faster without hydrating every state change).
    """
    ids = list(run_ids)
    if not ids:
        return []
    query = (
        select(StateChange.run_id, StateChange.state, StateChange.at, StateChange.reason)
        .where(col(StateChange.run_id).in_(ids))
        .order_by(col(StateChange.run_id), col(StateChange.id))
    )
    return list(session.exec(query))


# --- results ----------------------------------------------------------------------------------


def upsert(*, session: Session, model: type[Row], values: dict[str, Any], keys: Sequence[str]) -> int:
    """Insert a row, or update the one with the same `keys` (a unique constraint); returns its id."""
    table = model.__table__  # type: ignore[attr-defined]
    statement = sqlite_insert(table).values(**values)
    updates = {name: statement.excluded[name] for name in values if name not in keys and name != "id"}
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_=updates)
    session.connection().execute(statement)
    where = [table.c[name] == values[name] for name in keys]
    return session.connection().execute(select(table.c.id).where(*where)).scalar_one()


def measurements_for_runs(*, session: Session, run_ids: Iterable[int]) -> list[Measurement]:
    """Every measurement of the given runs, by run then batch size."""
    query = (
        select(Measurement)
        .where(col(Measurement.run_id).in_(list(run_ids)))
        .order_by(col(Measurement.run_id), col(Measurement.batch_size))
    )
    return list(session.exec(query))


def rank_stats_for_measurements(*, session: Session, measurement_ids: Iterable[int]) -> list[RankStat]:
    query = (
        select(RankStat)
        .where(col(RankStat.measurement_id).in_(list(measurement_ids)))
        .order_by(col(RankStat.measurement_id), col(RankStat.rank))
    )
    return list(session.exec(query))


def ranks_for_run(*, session: Session, run_id: int) -> list[RunRank]:
    return list(session.exec(select(RunRank).where(RunRank.run_id == run_id).order_by(col(RunRank.rank))))


def completions_for_run(*, session: Session, run_id: int, batch_size: int | None = None) -> list[Completion]:
    query = select(Completion).where(Completion.run_id == run_id)
    if batch_size is not None:
        query = query.where(Completion.batch_size == batch_size)
    return list(session.exec(query.order_by(col(Completion.batch_size), col(Completion.index))))


def correctness_for_runs(*, session: Session, run_ids: Iterable[int]) -> list[CorrectnessResult]:
    query = (
        select(CorrectnessResult)
        .where(col(CorrectnessResult.run_id).in_(list(run_ids)))
        .order_by(col(CorrectnessResult.run_id), col(CorrectnessResult.batch_size))
    )
    return list(session.exec(query))


def accounting_for_run(*, session: Session, run_id: int) -> list[Accounting]:
    return list(session.exec(select(Accounting).where(Accounting.run_id == run_id).order_by(col(Accounting.id))))


def record_accounting(*, session: Session, run_id: int, job_id: str, fields: dict[str, str]) -> int:
    """Store (or refresh) sacct's fields for one job; keys as sacct prints them (State, ExitCode, ...)."""
    values = {
        "run_id": run_id,
        "job_id": job_id,
        "state": fields.get("State"),
        "exit_code": fields.get("ExitCode"),
        "elapsed": fields.get("Elapsed"),
        "nodelist": fields.get("NodeList"),
        "alloc_tres": fields.get("AllocTRES"),
        "max_rss": fields.get("MaxRSS"),
        "total_cpu": fields.get("TotalCPU"),
        "raw_json": json.dumps(fields, sort_keys=True),
        "recorded_at": time.time(),
    }
    return upsert(session=session, model=Accounting, values=values, keys=("run_id", "job_id"))
