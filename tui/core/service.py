"""The laptop's service layer: runs from draft to ingested results, for the CLI and the Textual app.

`Dinf` ties the configuration (`tui.core.config`), the database (`storage`) and the clusters
(`remote.cluster.Cluster`) together: record a run, preview its batch script, submit it, poll every
unfinished run with one batched status call per cluster, cancel, stream per-rank logs, and fetch and
ingest results when a run finishes. Everything blocks; the app calls it from thread workers only.
Each method opens its own database session, so one `Dinf` may serve several threads.

What it hands out are frozen snapshots (`RunRecord` from `tui.core.records`, `LogSource`) and plain
dicts, never live ORM objects. No Textual import here (the headless `dinf` CLI uses this module), and no torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlmodel import Session

from remote.cluster import (
    Cluster,
    ClusterError,
    FailureSummary,
    JobState,
    JobStatus,
    LogChunk,
    PreparedRun,
    Resources,
    RunBundle,
)
from remote.keyboard_interactive import PromptHandler, PromptsNotAnswered
from remote.logstream import MAX_READ, follow
from remote.poller import ACTIVE_S, JobPoller
from remote.results import LOGS_SUBDIR
from remote.slurm import STEPS_KEY, add_dependency, batch_log_file, resource_flags, summarize_failure
from storage import repo
from storage.db import make_engine, read_session, write_session
from storage.ingest import IngestReport, ingest_bundle
from storage.models import DRAFT, FINISHED_STATES, IMPORTED, SUBMIT_FAILED, Measurement, RankStat, Run
from tui.core import locations
from tui.core.config import DEFAULT_SSH_CONFIG, LOCAL, ClusterConfig, ConfigError, DinfConfig, load_config
from tui.core.records import LOG_KINDS, LogSource, RunRecord, StateEntry, records  # noqa: F401 - StateEntry re-exported
from tui.studies import baseline_checks
from tui.studies.results import load_experiment
from worker import contract
from worker.contract import RunSpec


class ServiceError(RuntimeError):
    """An operation the user asked for can't be done; the message says why and what to do."""


RunNotFound = repo.RunNotFound


ClusterFactory = Callable[[ClusterConfig], Cluster]
LoginQuestions = Callable[[str, str, str, list[tuple[str, bool]]], "list[str] | None"]
"""(cluster, title, instructions, [(prompt, echo)]) -> the answers, or None when the user declined."""


def make_cluster(config: ClusterConfig, *, answer_prompts: PromptHandler | None = None) -> Cluster:
    """Build the backend for a configured cluster (imported lazily: the CLI's start-up stays light).

    `answer_prompts` answers a login's keyboard-interactive questions (a one-time code); None asks on
    the terminal. Through the openssh transport, ssh itself may ask only where that terminal is.
    """
    if config.backend == LOCAL:
        from remote.local import LocalCluster

        return LocalCluster(name=config.name, workdir=config.workdir, python=config.python)
    from remote.keyboard_interactive import TerminalPrompts
    from remote.slurm_cluster import SlurmCluster

    prompts = answer_prompts if answer_prompts is not None else TerminalPrompts(config.name)
    if config.transport == "openssh":
        from remote.openssh import OpenSshConnection, OpenSshOptions

        options = OpenSshOptions(
            # -F would also drop /etc/ssh/ssh_config (site-wide Kerberos settings): only when asked for.
            ssh_config=None if config.ssh_config == DEFAULT_SSH_CONFIG else config.ssh_config,
            control_path=config.control_path,
            control_persist=config.control_persist,
            batch_mode=not (isinstance(prompts, TerminalPrompts) and prompts.available()),
        )
        return SlurmCluster(OpenSshConnection(config.host, options), name=config.name, workdir=config.workdir,
                            python=config.python)
    from remote.ssh import SshOptions

    return SlurmCluster(name=config.name, host=config.host, workdir=config.workdir, python=config.python,
                        ssh_config=config.ssh_config, ssh_options=SshOptions(answer_prompts=prompts))


# --- the service --------------------------------------------------------------------------------


class Dinf:
    """One user's dinf: configuration, database and clusters. Blocking; thread-safe."""

    def __init__(
        self,
        *,
        db_path: Path | None = None,
        config_path: Path | None = None,
        data_dir: Path | None = None,
        cluster_factory: ClusterFactory | None = None,
        config_required: bool = False,
    ):
        """`config_required`: the user named `config_path` (`dinf --config`), so it must exist."""
        self.data_dir = Path(data_dir) if data_dir is not None else locations.data_dir()
        self.db_path = Path(db_path) if db_path is not None else (
            locations.db_path() if data_dir is None else self.data_dir / locations.DB_FILE_NAME
        )
        self.config: DinfConfig = load_config(config_path, data_dir=self.data_dir, required=config_required)
        self.engine = make_engine(self.db_path)
        self._cluster_factory = cluster_factory or self._make_cluster
        self.login_questions: LoginQuestions | None = None
        """Who answers a cluster login's keyboard-interactive questions (2FA); None: the terminal (the
        CLI). The app sets its dialog here before any cluster is used."""
        self._clusters: dict[str, Cluster] = {}
        self._clusters_lock = threading.Lock()
        self._submitting: set[int] = set()
        self._submitting_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        """One finishing (fetch + ingest) at a time: the poller and a cancel may both see a run end."""
        self.cluster_errors: dict[str, str] = {}
        """The last error talking to each cluster (cleared by the next success): the connection state."""
        self._pollers: dict[str, JobPoller] = {}
        """Per cluster: when its next status call is due (the one owner of polling cadence)."""
        self._poll_lock = threading.Lock()

    # --- clusters ---------------------------------------------------------------------------

    def _make_cluster(self, config: ClusterConfig) -> Cluster:
        ask = self.login_questions
        if ask is None or config.backend == LOCAL:
            return make_cluster(config)

        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            answers = ask(config.name, title, instructions, prompts)
            if answers is None:
                raise PromptsNotAnswered(f"login to cluster {config.name!r} cancelled: its keyboard-interactive "
                                         "questions (a one-time code?) were not answered")
            return answers

        return make_cluster(config, answer_prompts=answer)

    def cluster(self, name: str) -> Cluster:
        """The backend for a configured cluster, built once and reused (it connects lazily)."""
        with self._clusters_lock:
            if name not in self._clusters:
                self._clusters[name] = self._cluster_factory(self.config.cluster(name))
            return self._clusters[name]

    def close(self) -> None:
        with self._clusters_lock:
            clusters, self._clusters = list(self._clusters.values()), {}
        for cluster in clusters:
            try:
                cluster.close()
            except Exception:
                pass
        self.engine.dispose()

    def __enter__(self) -> Dinf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------

    def runs(
        self, *, experiment_id: int | None = None, states: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[RunRecord]:
        """Runs, oldest first; `tags`: only runs carrying every one of them."""
        with read_session(self.engine) as session:
            rows = repo.list_runs(session=session, experiment_id=experiment_id, states=states, tags=tags)
            return self._records(session, rows)

    def runs_shape(self) -> tuple[int, int, int]:
        """(runs, newest id, unfinished runs): cheap; when it is unchanged, `refresh()`'s runs are
        the only ones a poll can have changed (another process's edits wait for the next full list)."""
        with read_session(self.engine) as session:
            return repo.runs_shape(session=session)

    def run(self, run_id: int | str) -> RunRecord:
        """A run by numeric id, uid, unique uid prefix or unique name; RunNotFound otherwise."""
        with read_session(self.engine) as session:
            return self._record(session, repo.find_run(session=session, ref=run_id))

    def measurements(self, run_id: int | str) -> list[dict[str, Any]]:
        """Measurement columns per batch size (see storage.models.Measurement), each with its rank_stats."""
        with read_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            rows = repo.measurements_for_runs(session=session, run_ids=[run.id])
            stats = repo.rank_stats_for_measurements(session=session, measurement_ids=[m.id for m in rows])
            by_measurement: dict[int, list[dict[str, Any]]] = {}
            for stat in stats:
                by_measurement.setdefault(stat.measurement_id, []).append(_columns(stat, RankStat))
            out = []
            for row in rows:
                values = _columns(row, Measurement)
                values["rank_stats"] = by_measurement.get(row.id, [])
                out.append(values)
            return out

    def correctness(self, run_id: int | str) -> list[dict[str, Any]]:
        """What is known of the run's greedy ids against a reference, one dict per comparison.

        "source" says whose: "worker" rows are `dinf-worker compare`'s (comparison.json, stored at
        ingestion); "experiment" ones judge the run against its experiment's single-rank baseline,
        as the report does (`tui.studies.baseline_checks`), with "verdict" pass / fail (None for a
        noise floor, which sets the bar). An "experiment" dict with only a "note" says why there is
        no such check (the baseline has not finished, ran another model, ...).
        """
        with read_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            rows = repo.correctness_for_runs(session=session, run_ids=[run.id])
            out = [{**_columns(r), "source": "worker", "first_divergences": json.loads(r.first_divergences_json)}
                   for r in rows]
            checked = (baseline_checks.check_run(load_experiment(session, run.experiment_id), run.id)
                       if run.experiment_id is not None else None)
        if checked is not None:
            out += _experiment_correctness(checked)
        return out

    def completions(self, run_id: int | str, *, batch_size: int | None = None) -> list[dict[str, Any]]:
        with read_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            rows = repo.completions_for_run(session=session, run_id=run.id, batch_size=batch_size)
            return [
                {"batch_size": r.batch_size, "index": r.index, "prompt": r.prompt, "text": r.text,
                 "output_ids": json.loads(r.output_ids_json)}
                for r in rows
            ]

    def accounting(self, run_id: int | str) -> list[dict[str, Any]]:
        with read_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            return [_columns(r) for r in repo.accounting_for_run(session=session, run_id=run.id)]

    def export_rows(
        self, *, run_ids: Iterable[int] | None = None, experiment_id: int | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One flat row per (run, batch size), with the columns of `tui.core.export.COLUMNS`."""
        from tui.core.export import export_row

        with read_session(self.engine) as session:
            runs = repo.list_runs(session=session, run_ids=run_ids, experiment_id=experiment_id, tags=tags)
            by_id = {run.id: run for run in runs}
            clusters = {c.id: c.name for c in repo.list_clusters(session=session)}
            tags_of = repo.tags_for_runs(session=session, run_ids=list(by_id))
            measurements = repo.measurements_for_runs(session=session, run_ids=list(by_id))
            stats: dict[int, list[RankStat]] = {}
            for stat in repo.rank_stats_for_measurements(session=session, measurement_ids=[m.id for m in measurements]):
                stats.setdefault(stat.measurement_id, []).append(stat)
            hosts = {run_id: [r.host for r in repo.ranks_for_run(session=session, run_id=run_id)] for run_id in by_id}
            return [
                export_row(run=by_id[m.run_id], cluster=clusters.get(by_id[m.run_id].cluster_id),
                           tags=tags_of.get(m.run_id, []), measurement=m, rank_stats=stats.get(m.id, []),
                           hosts=hosts[m.run_id])
                for m in measurements
            ]

    # --- tags and notes ------------------------------------------------------------------------

    def edit_tags(self, run_id: int | str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> RunRecord:
        """Add and remove tags (TagError, naming the tag, before anything is written)."""
        with write_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            repo.edit_tags(session=session, run=run, add=add, remove=remove)
            session.commit()
            return self._record(session, run)

    def annotate(self, run_id: int | str, *, tags: Iterable[str] | None = None, notes: str | None = None) -> RunRecord:
        """Set the run's whole set of tags and/or its note in one transaction (the app's dialog);
        TagError before anything is written."""
        with write_session(self.engine) as session:
            run = repo.find_run(session=session, ref=run_id)
            if tags is not None:
                repo.set_tags(session=session, run=run, tags=tags)
            if notes is not None:
                repo.set_notes(session=session, run=run, notes=notes)
            session.commit()
            return self._record(session, run)

    # --- creating and submitting ---------------------------------------------------------------

    def new_run(
        self,
        *,
        cluster: str,
        spec: RunSpec,
        resources: Resources,
        name: str | None = None,
        experiment_id: int | None = None,
    ) -> RunRecord:
        """Validate and record a run (state DRAFT). Raises SpecError / ValueError naming the fields."""
        cluster_config = self.config.cluster(cluster)
        num_ranks = check_run(spec, resources)
        self._check_partition(cluster, resources)
        name = (name or spec.run_name or "run").strip() or "run"
        num_gpus = resources.nodes * resources.gpus_per_node if resources.gpus_per_node else 0
        with write_session(self.engine) as session:
            cluster_row = repo.get_or_create_cluster(
                session=session, name=cluster_config.name, backend=cluster_config.backend,
                host=cluster_config.host, config=cluster_config.to_dict(),
            )
            if experiment_id is not None and repo.get_experiment(session=session, experiment_id=experiment_id) is None:
                raise ValueError(f"experiment_id: no experiment {experiment_id}")
            run = repo.create_run(
                session=session, uid=new_uid(name), name=name, mode=spec.mode, spec=spec.to_dict(),
                resources=dataclasses.asdict(resources), num_ranks=num_ranks, num_gpus=num_gpus,
                cluster_id=cluster_row.id, experiment_id=experiment_id,
            )
            session.commit()
            return self._record(session, run)

    def _check_partition(self, cluster_name: str, resources: Resources) -> None:
        """ValueError naming resources.partition if the cluster answers and has no such partition.

        A cluster that can't be asked (unreachable, host key not trusted yet) is not an input
        error: submitting then reports what is wrong with the connection.
        """
        problem_of = getattr(self.cluster(cluster_name), "partition_problem", None)
        problem = problem_of(resources) if problem_of is not None else None  # the local backend has none
        if problem:
            raise ValueError(f"resources.partition: {problem}")

    def clone_run(self, run_id: int | str, *, name: str | None = None) -> RunRecord:
        """A new DRAFT with the same cluster, spec, resources and experiment (to resubmit a run)."""
        source = self.run(run_id)
        if source.cluster is None or source.backend not in ("local", "slurm"):
            raise ServiceError(f"run {source.id} was imported, not submitted; there is nothing to resubmit")
        return self.new_run(
            cluster=source.cluster, spec=RunSpec.from_dict(source.spec), resources=Resources(**source.resources),
            name=name or source.name, experiment_id=source.experiment_id,
        )

    def create_experiment(self, *, name: str, kind: str, parameters: dict[str, Any] | None = None,
                          notes: str = "") -> int:
        with write_session(self.engine) as session:
            experiment = repo.create_experiment(
                session=session, name=name, kind=kind, parameters=parameters, notes=notes
            )
            session.commit()
            return experiment.id

    def preview(self, run_id: int | str) -> str:
        """The batch script `submit` would run, rendered without side effects."""
        record = self.run(run_id)
        return self.cluster(record.cluster).preview(self._bundle(record))

    def render_script(
        self, *, cluster: str, spec: RunSpec, resources: Resources, name: str | None = None
    ) -> str:
        """The batch script a run would get, validated, without recording anything (`--dry-run`)."""
        check_run(spec, resources)
        self._check_partition(cluster, resources)
        name = name or spec.run_name
        bundle = make_bundle(uid=new_uid(name), name=name, spec=spec, resources=resources)
        return self.cluster(cluster).preview(bundle)

    def submit(self, run_id: int | str, *, after_job: str | None = None) -> RunRecord:
        """Upload and submit a DRAFT run: state PENDING with its job id.

        If preparing or submitting fails, the run is SUBMIT_FAILED with the error (returned, not
        raised) and nothing runs. If the job was submitted but can't be recorded, it is cancelled.
        `after_job`: the job waits until that job has ended (`afterany`, added to the run's own
        dependency and recorded with its resources before it is submitted).
        """
        record = self.run(run_id)
        with self._submitting_lock:  # a double click must not submit two jobs
            if record.id in self._submitting:
                raise ServiceError(f"run {record.id} is being submitted already")
            record = self.run(record.id)
            if record.state != DRAFT:
                raise ServiceError(f"run {record.id} is {record.state}; only a DRAFT run can be submitted")
            self._submitting.add(record.id)
        try:
            if after_job is not None:
                record = self._wait_for_job(record, after_job)
            return self._submit(record)
        finally:
            with self._submitting_lock:
                self._submitting.discard(record.id)

    def _wait_for_job(self, record: RunRecord, job_id: str) -> RunRecord:
        resources = Resources(**record.resources)
        resources.dependency = add_dependency(resources.dependency, f"afterany:{job_id}")
        check_run(RunSpec.from_dict(record.spec), resources)
        with write_session(self.engine) as session:
            run = repo.get_run(session=session, run_id=record.id)
            repo.update_run(session=session, run=run,
                            resources_json=json.dumps(dataclasses.asdict(resources), sort_keys=True))
            session.commit()
        return self.run(record.id)

    def _submit(self, record: RunRecord) -> RunRecord:
        cluster = self.cluster(record.cluster)
        bundle = self._bundle(record)
        try:
            prepared = cluster.prepare(bundle)
            self._update(record.id, run_dir=prepared.run_dir, script_path=prepared.script_path,
                         output_dir=prepared.output_dir, logs_dir=prepared.logs_dir)
            job_id = cluster.submit(prepared, bundle)
        except (ClusterError, OSError, ValueError) as exc:
            return self._set_state(record.id, SUBMIT_FAILED, error=f"{type(exc).__name__}: {exc}")
        try:
            with write_session(self.engine) as session:
                run = repo.get_run(session=session, run_id=record.id)
                repo.add_job_id(session=session, run=run, job_id=job_id)
                repo.update_run(session=session, run=run, submitted_at=time.time())
                repo.record_state(session=session, run=run, state=JobState.PENDING.value)
                session.commit()
        except Exception:
            cluster.cancel(job_id)  # a job nobody can see is worse than no job
            raise
        self.cluster_errors.pop(record.cluster, None)
        return self.run(record.id)

    def demo_run(self) -> RunRecord:
        """A tiny synthetic model, pipeline-parallel over 2 ranks on the local cluster, submitted."""
        spec = RunSpec(
            run_name="demo",
            model=contract.ModelSource(source="synthetic", config="tiny"),
            mode="pp",
            pp_size=2,
            batch_sizes=[1, 2],
            max_new_tokens=16,
            num_requests=4,
            warmup=1,
            repeats=2,
            device="cpu",
        )
        record = self.new_run(cluster=LOCAL, spec=spec, resources=Resources(nodes=1, tasks_per_node=2), name="demo")
        return self.submit(record.id)

    # --- following runs -------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> list[RunRecord]:
        """Poll the submitted, unfinished runs whose poll is due (one status call per cluster) and
        record changes.

        When a cluster's poll is due is decided by its `remote.poller.JobPoller`: every 5 s after a
        change, backing off to 30 s while nothing changes (`watch_run` asks for more, bounded), so
        callers may call this as often as they like. `force` polls every cluster now (start-up).
        A run that turns terminal gets its results fetched and ingested, and its sacct record kept.
        A cluster that can't be reached is noted in `cluster_errors`; its runs keep their state, and
        its next refresh asks again (the caller paces retries). Returns the unfinished runs, as
        they are now.
        """
        with read_session(self.engine) as session:
            pending = [
                self._record(session, run)
                for run in repo.list_runs(session=session, unfinished=True)
                if run.job_id is not None
            ]
        by_cluster: dict[str, list[RunRecord]] = {}
        for record in pending:
            by_cluster.setdefault(record.cluster, []).append(record)
        with self._poll_lock:
            for name in set(self._pollers) - set(by_cluster):
                self._pollers[name].retain([])
            due = {}
            for cluster_name, records in by_cluster.items():
                poller = self._poller(cluster_name)
                poller.retain([r.job_id for r in records])
                if force:
                    poller.wake()
                if poller.wait_s() == 0:
                    due[cluster_name] = poller
            polled = {}
            for cluster_name, poller in due.items():
                poller.poll()
                exc = poller.last_error
                if exc is not None:
                    if not isinstance(exc, (ClusterError, OSError, ConfigError)):  # ConfigError: gone from the TOML
                        raise exc
                    self.cluster_errors[cluster_name] = str(exc)
                    poller.wake()
                    continue
                self.cluster_errors.pop(cluster_name, None)
                polled[cluster_name] = poller.statuses()
        for cluster_name, statuses in polled.items():  # outside the lock: finishing fetches results
            self._record_statuses(by_cluster[cluster_name], statuses)
        return [self.run(r.id) for r in pending]

    def _record_statuses(self, records: list[RunRecord], statuses: dict[str, JobStatus]) -> None:
        for record in records:
            status = statuses.get(record.job_id)
            if status is None:
                continue
            state = status.state.value if isinstance(status.state, JobState) else str(status.state)
            with write_session(self.engine) as session:
                run = repo.get_run(session=session, run_id=record.id)
                changed = repo.record_state(session=session, run=run, state=state, reason=status.reason)
                if status.elapsed_s is not None and (state == JobState.RUNNING.value or state in FINISHED_STATES):
                    changed |= repo.record_slurm_elapsed(session=session, run=run, elapsed_s=status.elapsed_s)
                if status.exit_code is not None and state in FINISHED_STATES:
                    repo.update_run(session=session, run=run, exit_code=status.exit_code)
                    changed = True
                if changed:
                    session.commit()
            if state in FINISHED_STATES:
                self._finish(record.id)

    def _poller(self, cluster_name: str) -> JobPoller:
        if cluster_name not in self._pollers:
            try:
                local = self.config.cluster(cluster_name).backend == LOCAL
            except ConfigError:  # gone from the TOML: the status call reports it
                local = True
            # A local "poll" reads files in the run directories, and no scheduler is asked: no backoff.
            cadence = {"active_s": 0.0, "idle_max_s": 0.0} if local else {}
            self._pollers[cluster_name] = JobPoller(lambda ids: self.cluster(cluster_name).status(ids), **cadence)
        return self._pollers[cluster_name]

    def watch_run(self, run_id: int | str, *, every_s: float = ACTIVE_S) -> None:
        """Someone is looking at this run (a run screen, `--wait`): poll its cluster at least every
        `every_s` seconds (never faster than once a second) until `unwatch_run`."""
        record = self.run(run_id)
        if record.cluster is not None:
            with self._poll_lock:
                self._poller(record.cluster).watch(("run", record.id), every_s)

    def unwatch_run(self, run_id: int | str) -> None:
        record = self.run(run_id)
        with self._poll_lock:
            for poller in self._pollers.values():
                poller.unwatch(("run", record.id))

    def poll_soon(self) -> None:
        """Make every cluster's next poll due now (the user asked, or fixed what was failing)."""
        with self._poll_lock:
            for poller in self._pollers.values():
                poller.wake()

    def reconcile(self) -> list[RunRecord]:
        """On start: poll every unfinished run, and ingest finished ones whose results are missing."""
        polled = self.refresh(force=True)
        with read_session(self.engine) as session:
            missing = [
                run.id for run in repo.list_runs(session=session, states=["COMPLETED"])
                if run.ingested_at is None and run.output_dir is not None
            ]
        for run_id in missing:
            self._finish(run_id)
        self._complete_accounting()
        seen = {r.id for r in polled}
        return polled + [self.run(run_id) for run_id in missing if run_id not in seen]

    def cancel(self, run_id: int | str) -> RunRecord:
        """Cancel a run and wait for its job to end; a finished run is returned unchanged."""
        record = self.run(run_id)
        if record.finished:
            return record
        if record.job_id is None:  # a DRAFT: nothing was submitted
            return self._set_state(record.id, JobState.CANCELLED.value, reason="cancelled before submission")
        status = self.cluster(record.cluster).cancel(record.job_id)
        state = status.state.value if isinstance(status.state, JobState) else str(status.state)
        if state not in FINISHED_STATES:
            raise ServiceError(
                f"run {record.id}: job {record.job_id} is still {state} after scancel; try `dinf cancel` again"
            )
        self._set_state(record.id, state, reason=status.reason)
        self._finish(record.id)
        return self.run(record.id)

    def _complete_accounting(self, *, within_s: float = 86_400.0) -> None:
        """sacct lags the scheduler: re-read it for recently finished runs whose record isn't final."""
        cutoff = time.time() - within_s
        with read_session(self.engine) as session:
            stale = []
            for run in repo.list_runs(session=session, states=FINISHED_STATES - {SUBMIT_FAILED, IMPORTED}):
                if run.job_id is None or (run.finished_at or 0) < cutoff:
                    continue
                rows = [r for r in repo.accounting_for_run(session=session, run_id=run.id) if r.job_id == run.job_id]
                if not rows or not _terminal_sacct_state(rows[0].state):
                    stale.append(self._record(session, run))
        for record in stale:
            try:
                self._record_accounting(record)
            except (ClusterError, OSError, ConfigError) as exc:
                self.cluster_errors[record.cluster] = str(exc)

    # --- logs --------------------------------------------------------------------------------

    def log_sources(self, run_id: int | str) -> list[LogSource]:
        """Every per-rank log file of a submitted run (paths on its cluster), by rank then kind."""
        record = self.run(run_id)
        if record.output_dir is None:
            return []
        sources = []
        for rank in range(record.num_ranks):
            sources.append(LogSource(rank, "worker", _join(record.output_dir, contract.log_file(rank))))
            sources.append(LogSource(rank, "events", _join(record.output_dir, contract.events_file(rank))))
            if record.job_id is not None and record.logs_dir is not None:
                launcher = contract.launcher_log_file(record.job_id, rank)
                sources.append(LogSource(rank, "launcher", _join(record.logs_dir, launcher)))
        return sources

    def stream_logs(
        self,
        run_id: int | str,
        offsets: dict[str, int] | None = None,
        *,
        ranks: Iterable[int] | None = None,
        kinds: Iterable[str] = LOG_KINDS,
        tail_bytes: int | None = None,
    ) -> Iterator[list[LogChunk]]:
        """Batches of new lines of the run's log files (filtered by rank and kind), until closed.

        Chunks carry the cluster paths of `log_sources`. A finished run whose files were fetched is
        read from the local copies (no connection needed, and the cluster may have cleaned up).
        `tail_bytes`: a log without an offset is read from at most that many bytes before its end;
        event files are always read whole (a rank's phase is in its first events).
        """
        record = self.run(run_id)
        wanted_ranks = None if ranks is None else set(ranks)
        wanted_kinds = set(kinds)
        unknown = wanted_kinds - set(LOG_KINDS)
        if unknown:
            raise ValueError(f"kinds: unknown log kind(s) {sorted(unknown)}; known: {', '.join(LOG_KINDS)}")
        if wanted_ranks is not None:
            bad = sorted(r for r in wanted_ranks if not 0 <= r < record.num_ranks)
            if bad:
                raise ValueError(f"rank: run {record.id} has ranks 0..{record.num_ranks - 1}, not {bad}")
        sources = [
            s for s in self.log_sources(record.id)
            if s.kind in wanted_kinds and (wanted_ranks is None or s.rank in wanted_ranks)
        ]
        if not sources:
            return iter(())
        if tail_bytes is not None:
            offsets = {**{s.path: 0 for s in sources if s.kind == "events"}, **(offsets or {})}
        local = fetched_copies(record, sources)
        if local is not None:
            return _follow_local(local, offsets, tail_bytes)
        if tail_bytes is None:  # only when asked: a backend written before tail_bytes still streams
            return self.cluster(record.cluster).stream_logs([s.path for s in sources], offsets)
        return self.cluster(record.cluster).stream_logs([s.path for s in sources], offsets, tail_bytes=tail_bytes)

    # --- results -------------------------------------------------------------------------------

    def ingest_dir(self, path: Path, *, run_id: int | str | None = None) -> IngestReport:
        """Ingest a result bundle from disk, into the given run or as an IMPORTED run (idempotent)."""
        with write_session(self.engine) as session:
            run = None if run_id is None else repo.find_run(session=session, ref=run_id)
            report = ingest_bundle(session=session, bundle_dir=Path(path), run=run)
            if report.created_run:  # an imported bundle's files stay where they are: its results directory
                imported = repo.get_run(session=session, run_id=report.run_id)
                repo.update_run(session=session, run=imported, local_results_dir=str(Path(path).resolve()))
            session.commit()
            return report

    # --- internals ---------------------------------------------------------------------------------

    def _finish(self, run_id: int) -> None:
        """Fetch what a terminal run left (results, events, sacct) and ingest it; errors are recorded."""
        with self._finish_lock:
            self._finish_unlocked(run_id)

    def _finish_unlocked(self, run_id: int) -> None:
        record = self.run(run_id)
        if record.output_dir is None or record.cluster is None:
            return
        try:
            cluster = self.cluster(record.cluster)
        except ConfigError as exc:
            self._update(record.id, error=f"results not fetched: {exc}")
            return
        local_dir = locations.results_dir(self.data_dir) / record.uid
        local_dir.mkdir(parents=True, exist_ok=True)
        problems = []
        try:
            cluster.fetch_results(self._prepared(record), str(local_dir))
        except (ClusterError, OSError) as exc:
            problems.append(f"fetching results failed: {exc}")
        sacct_fields: dict[str, Any] = {}
        if record.job_id is not None:
            try:
                sacct_fields = self._record_accounting(record)[1]
            except (ClusterError, OSError) as exc:
                problems.append(f"sacct failed: {exc}")
        error = worker_error(local_dir, record.num_ranks)
        failure = None
        if record.state not in (JobState.COMPLETED.value, JobState.CANCELLED.value) and record.job_id is not None:
            failure = job_failure(local_dir / LOGS_SUBDIR, record.job_id, sacct_fields)
            if error is None:
                error = launcher_error(local_dir / LOGS_SUBDIR, record.job_id, record.num_ranks)
            if failure is not None:
                # The cause first, then what the peers made of it (the worker's own error event).
                error = failure.text() + (f"; then {error}" if error else "")
        if (local_dir / contract.RESULT_FILE).is_file():
            try:
                self.ingest_dir(local_dir, run_id=record.id)
            except ValueError as exc:
                problems.append(f"ingesting results failed: {exc}")
        elif record.state == JobState.COMPLETED.value:
            problems.append(f"the job completed but left no {contract.RESULT_FILE}")
        message = "; ".join([e for e in (error, *problems) if e]) or None
        extra: dict[str, Any] = {"error": message} if message else {}
        if failure is not None:
            extra["failure_json"] = json.dumps(failure.to_dict(), sort_keys=True)
        self._update(record.id, local_results_dir=str(local_dir), **extra)

    def _record_accounting(self, record: RunRecord) -> tuple[bool, dict[str, Any]]:
        """Store sacct's fields for the run's job: (whether sacct reports a terminal state, the fields)."""
        fields = self.cluster(record.cluster).accounting(record.job_id)
        if not fields:
            return False, {}
        with write_session(self.engine) as session:
            repo.record_accounting(session=session, run_id=record.id, job_id=record.job_id, fields=fields)
            session.commit()
        return _terminal_sacct_state(fields.get("State")), fields

    def _set_state(self, run_id: int, state: str, *, reason: str | None = None, error: str | None = None) -> RunRecord:
        with write_session(self.engine) as session:
            run = repo.get_run(session=session, run_id=run_id)
            repo.record_state(session=session, run=run, state=state, reason=reason)
            if error is not None:
                repo.update_run(session=session, run=run, error=error)
            session.commit()
            return self._record(session, run)

    def _update(self, run_id: int, **fields: Any) -> None:
        with write_session(self.engine) as session:
            run = repo.get_run(session=session, run_id=run_id)
            repo.update_run(session=session, run=run, **fields)
            session.commit()

    def _bundle(self, record: RunRecord) -> RunBundle:
        # The cells of one experiment share a lane: on the local backend they run one at a time.
        lane = f"experiment-{record.experiment_id}" if record.experiment_id is not None else None
        return make_bundle(uid=record.uid, name=record.name, spec=RunSpec.from_dict(record.spec),
                           resources=Resources(**record.resources), lane=lane)

    @staticmethod
    def _prepared(record: RunRecord) -> PreparedRun:
        return PreparedRun(
            run_id=record.uid, run_dir=record.run_dir or "", script_path=record.script_path or "",
            output_dir=record.output_dir or "", logs_dir=record.logs_dir or "",
        )

    @classmethod
    def _record(cls, session: Session, run: Run) -> RunRecord:
        return cls._records(session, [run])[0]

    @staticmethod
    def _records(session: Session, runs: list[Run]) -> list[RunRecord]:
        """Snapshots of many runs with four queries in all (the Runs screen lists thousands)."""
        run_ids = [run.id for run in runs]
        return records(runs, repo.list_clusters(session=session), repo.state_histories(session=session, run_ids=run_ids),
                       repo.tags_for_runs(session=session, run_ids=run_ids))


# --- small pure helpers, used by the CLI and the app too -----------------------------------------


def check_resources(resources: Resources) -> int:
    """The number of ranks the resources give; ValueError naming the first bad field."""
    for name in ("nodes", "tasks_per_node"):
        value = getattr(resources, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"resources.{name}: must be an integer >= 1, got {value!r}")
    for name in ("gpus_per_node",):
        value = getattr(resources, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"resources.{name}: must be an integer >= 0, got {value!r}")
    return resources.nodes * resources.tasks_per_node


def check_run(spec: RunSpec, resources: Resources) -> int:
    """Every check a run gets before anything is recorded; the number of ranks, or ValueError /
    SpecError naming the field. The same checks as the New-run form (`tui.core.run_form.check_form`)."""
    num_ranks = check_resources(resources)
    try:
        resource_flags(resources)  # the Slurm script's checks: formats, characters, cpus_per_task
    except ValueError as exc:
        raise ValueError(str(exc).replace("invalid resources: ", "resources.", 1)) from None
    spec.validate(world_size=num_ranks)
    config = contract.MODEL_CONFIGS.get(spec.model.config) if spec.model.source == "synthetic" else None
    if spec.mode == "tp" and config is not None and config.num_attention_heads % num_ranks:
        raise ValueError(
            f"resources: tensor parallel splits the {config.num_attention_heads} attention heads of "
            f"{spec.model.config!r} over the ranks; {num_ranks} ranks do not divide them (use "
            f"{', '.join(str(n) for n in range(1, config.num_attention_heads + 1) if config.num_attention_heads % n == 0)})"
        )
    return num_ranks


def make_bundle(*, uid: str, name: str, spec: RunSpec, resources: Resources, lane: str | None = None) -> RunBundle:
    """What a submission uploads; a local prompts_file is read here and travels with it."""
    prompts = None
    if spec.prompts_file:
        path = Path(spec.prompts_file).expanduser()
        if not path.is_file():
            raise ValueError(f"prompts_file: {path} does not exist on this machine")
        prompts = path.read_text()
    return RunBundle(run_id=uid, job_name=f"dinf-{name}", spec_json=spec.to_json(), prompts_jsonl=prompts,
                     resources=resources, lane=lane)


def new_uid(name: str) -> str:
    """A filesystem- and shell-safe unique id: name slug, UTC time, random suffix."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:32] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def worker_error(results_dir: Path, num_ranks: int) -> str | None:
    """The first error event any rank reported (in the fetched events files), as 'rank N: message'."""
    first: tuple[float, str] | None = None
    for rank in range(num_ranks):
        path = results_dir / contract.events_file(rank)
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            event = contract.parse_event(line)
            if event and event["kind"] == "error":
                at = float(event.get("ts", 0.0))
                if first is None or at < first[0]:
                    first = (at, f"rank {event['rank']}: {event.get('message', 'error')}")
    return None if first is None else first[1]


def job_failure(logs_dir: Path, job_id: str, sacct_fields: dict[str, Any]) -> FailureSummary | None:
    """Which rank died first and how, from the fetched batch log and sacct's step rows."""
    path = logs_dir / batch_log_file(job_id)
    batch_log = path.read_text(errors="replace") if path.is_file() else None
    return summarize_failure(job_id=job_id, sacct_rows=sacct_fields.get(STEPS_KEY), batch_log=batch_log)


def launcher_error(logs_dir: Path, job_id: str, num_ranks: int, *, max_lines: int = 6) -> str | None:
    """The last lines a rank printed to its launcher log (a crash before the worker's event stream)."""
    for rank in range(num_ranks):
        path = logs_dir / contract.launcher_log_file(job_id, rank)
        if not path.is_file():
            continue
        lines = [line.rstrip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"rank {rank}: " + "\n".join(lines[-max_lines:])
    return None


def fetched_copies(record: RunRecord, sources: list[LogSource]) -> dict[str, Path] | None:
    """Cluster path -> fetched local copy for a finished run, if every wanted file was fetched."""
    if not record.finished or not record.local_results_dir:
        return None
    local_dir = Path(record.local_results_dir)
    copies = {}
    for source in sources:
        name = source.path.rsplit("/", 1)[-1]
        # fetch_results puts the output directory's files at the top and the launcher's under logs/
        path = local_dir / LOGS_SUBDIR / name if source.kind == "launcher" else local_dir / name
        if not path.is_file():
            return None
        copies[source.path] = path
    return copies


def _follow_local(
    copies: dict[str, Path], offsets: dict[str, int] | None, tail_bytes: int | None = None
) -> Iterator[list[LogChunk]]:
    def read_from(cluster_path: str, offset: int) -> bytes | None:
        with copies[cluster_path].open("rb") as handle:
            handle.seek(offset)
            return handle.read(MAX_READ)

    def size_of(cluster_path: str) -> int | None:
        return copies[cluster_path].stat().st_size

    return follow(read_from, list(copies), offsets, tail_bytes=tail_bytes, size_of=size_of)


def _terminal_sacct_state(state: str | None) -> bool:
    """sacct prints e.g. 'CANCELLED by 1000'; the first word is the state."""
    return bool(state) and state.split()[0] in FINISHED_STATES


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _experiment_correctness(checked: baseline_checks.RunCorrectness) -> list[dict[str, Any]]:
    """`tui.studies.baseline_checks`' findings as `correctness()` rows (the stored rows' keys and more)."""
    base = checked.baseline
    reference = f"{base.name} (#{base.id})" if base is not None else None
    if checked.note:
        return [{"source": "experiment", "experiment": checked.experiment, "reference": reference,
                 "note": checked.note}]
    rows = []
    for check in checked.checks:
        result, verdict = check.result, check.verdict
        divergent = result.divergences
        rows.append({
            "source": "experiment", "experiment": checked.experiment, "reference": reference,
            "batch_size": check.batch_size, "reference_batch_size": check.baseline_batch,
            "num_prompts": result.n, "num_exact": result.exact_matches, "exact_match_rate": result.exact_match_rate,
            "topk_agreement_rate": (sum(1 for c in divergent if c.topk_agree) / len(divergent)) if divergent else None,
            "first_divergences": [c.first_divergence for c in result.checks],
            "noise_floor": check.floor_key,
            "verdict": None if verdict is None else ("pass" if verdict.passed else "fail"),
            "reason": verdict.reason if verdict is not None else "the noise floor: the baseline re-run with its batch "
                                                                 "split, which the parallel runs are held to",
        })
    return rows


def _columns(row: Any, model: type | None = None, *, skip: set[str] = frozenset({"raw_json"})) -> dict[str, Any]:
    model = model or type(row)
    return {name: getattr(row, name) for name in model.model_fields if name not in skip}
