"""Read runs and experiments out of the database into plain snapshots the studies work on.

`load_runs` and `load_experiment` turn storage rows into `RunResult` / `ExperimentResult`:
frozen dataclasses holding `tui.studies.analysis.Point`s, completions and the cell grid, detached from
any session so the report, `dinf compare` and the compare screen (from a worker thread) share them.
Everything is ordered by id or key, so the same database always yields the same snapshot.

It only reads; it computes no metric (that is `tui.studies.analysis`). The one formatter here,
`describe_engine`, says which worker engine a run used, the same way wherever a run is shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from storage import repo
from storage.models import ClusterRow, Completion, Experiment, Run
from storage.states import DONE_STATES, FAILED_STATES
from tui.display.runs import describe_engine  # noqa: F401  (re-exported: the report and CLI import it here)
from tui.studies.analysis import Point, RankStat, timed_window
from tui.studies.presets import Cell, ExperimentPlan, plan_from_parameters
from tui.studies.timeline import timeline_from


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


@dataclass(frozen=True)
class RunResult:
    """One run with its measurements as Points, its ranks, environment and completions."""

    id: int
    uid: str
    name: str
    mode: str
    state: str
    cluster: str | None
    experiment_id: int | None
    num_ranks: int
    num_gpus: int
    spec: Mapping[str, Any]
    resources: Mapping[str, Any]
    environment: Mapping[str, Any]
    load_time_s: float | None
    error: str | None
    points: tuple[Point, ...]
    ranks: tuple[Mapping[str, Any], ...]
    completions: Mapping[int, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    """batch size -> completion lines (contract layout: index, prompt, output_ids, topk_ids, text)."""
    accounting: tuple[Mapping[str, Any], ...] = ()
    engine_impl: str = "reference"
    """The worker's implementation ('fast', 'reference', 'deepspeed'); see `storage.models.Run`."""
    engine_compiled: bool = False
    engine_cuda_graphs: bool = False
    engine_capture_s: float | None = None
    started_at: float | None = None
    """When the scheduler saw the job start and end (Unix seconds; None for imported bundles)."""
    finished_at: float | None = None
    quant_scheme: str = "none"
    """Weight-only quantization: 'none', 'int8' or 'int4'."""
    accuracy: Mapping[str, Any] | None = None
    """result.json "accuracy" (a run made with spec.score): against the unquantized model, same job."""

    @property
    def weight_bytes(self) -> int | None:
        """Bytes of weights on the fullest rank (quantized ones as stored), from the ranks' records."""
        sizes = [r.get("param_bytes") for r in self.ranks if r.get("param_bytes")]
        return max(sizes) if sizes else None

    @property
    def devices(self) -> int:
        """GPUs used, or ranks for a CPU run (METRICS.md's N)."""
        return self.num_gpus or self.num_ranks

    @property
    def hosts(self) -> list[str]:
        hosts = {r.get("host") for r in self.ranks if r.get("host")}
        hosts |= set(self.environment.get("hosts") or [])
        return sorted(hosts)

    def point(self, batch_size: int) -> Point | None:
        return next((p for p in self.points if p.batch_size == batch_size), None)

    def comparable_fields(self) -> dict[str, Any]:
        """What a diff-only table compares: identity, spec, resources and environment (measured
        numbers belong to the derived table, where they always differ)."""
        record: dict[str, Any] = {
            "run": {"name": self.name, "state": self.state, "cluster": self.cluster, "mode": self.mode,
                    "ranks": self.num_ranks, "gpus": self.num_gpus, "hosts": self.hosts},
            "spec": {k: v for k, v in self.spec.items() if k not in ("run_name", "output_dir")},
            "resources": dict(self.resources),
            "environment": {k: v for k, v in self.environment.items() if k != "hosts"},
            # what ran (the spec says what was asked); capture time is measured, like the numbers
            "engine": {"impl": self.engine_impl, "compiled": self.engine_compiled,
                       "cuda_graphs": self.engine_cuda_graphs, "quant": self.quant_scheme},
        }
        return record


@dataclass(frozen=True)
class CellState:
    """One cell of an experiment's grid: the planned run, its latest attempt and that attempt's state."""

    cell: Cell
    run: RunResult | None
    attempts: int

    @property
    def state(self) -> str:
        return self.run.state if self.run else "NOT_SUBMITTED"

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


@dataclass(frozen=True)
class ExperimentResult:
    id: int
    name: str
    kind: str
    parameters: Mapping[str, Any]
    plan: ExperimentPlan | None
    cells: tuple[CellState, ...]
    runs: tuple[RunResult, ...]
    """Every run of the experiment, resubmissions included, by id."""

    def cell(self, key: str) -> CellState | None:
        return next((c for c in self.cells if c.cell.key == key), None)

    def completed(self, role: str | None = None) -> list[CellState]:
        return [c for c in self.cells if c.done and c.run and (role is None or c.cell.role == role)]


class NotFound(repo.RunNotFound):
    """A run or experiment reference that matches nothing; the message says what was looked for.

    A RunNotFound, so the CLI maps it to its "no such run" exit code."""


def _point(run: Run, measurement, rank_rows, hosts: int) -> Point:
    raw = _json(measurement.raw_json, {})
    wall = [float(v) for v in _json(measurement.wall_s_json, [])]
    ordered = sorted(wall)
    wall_median = None
    if ordered:
        mid = len(ordered) // 2
        wall_median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    ranks = tuple(
        RankStat(
            rank=r.rank,
            peak_bytes=r.peak_allocated_bytes if r.peak_allocated_bytes is not None else r.peak_rss_bytes,
            compute_s=r.compute_s, comm_s=r.comm_s, idle_s=r.idle_s,
            bubble_pct=r.bubble_pct, exposed_comm_pct=r.exposed_comm_pct,
        )
        for r in sorted(rank_rows, key=lambda r: r.rank)
    )
    return Point(
        run_id=run.id,
        label=run.name,
        mode=run.mode,
        num_gpus=measurement.num_gpus or run.num_gpus or run.num_ranks,
        num_nodes=max(1, hosts),
        batch_size=measurement.batch_size,
        num_requests=measurement.num_requests or 0,
        output_tokens=measurement.output_tokens or 0,
        wall_s=wall_median,
        repeats=measurement.repeats or len(wall),
        wall_samples=tuple(wall),
        output_tok_s=measurement.output_throughput_tok_s,
        total_tok_s=measurement.total_throughput_tok_s,
        decode_tok_s=measurement.decode_throughput_tok_s,
        ttft_s=measurement.ttft_median_s,
        tpot_s=measurement.tpot_median_s,
        e2e_s=measurement.e2e_median_s,
        ranks=ranks,
        window=timed_window(raw),
        timeline=timeline_from(raw.get("timeline")),
    )


def _completion_line(c: Completion) -> dict[str, Any]:
    return {
        "batch_size": c.batch_size, "index": c.index, "prompt": c.prompt, "text": c.text,
        "output_ids": _json(c.output_ids_json, []), "topk_ids": _json(c.topk_ids_json, []),
    }


def _run_result(session: Session, run: Run, clusters: Mapping[int, str]) -> RunResult:
    rank_rows = repo.ranks_for_run(session=session, run_id=run.id)
    ranks = tuple(
        {"rank": r.rank, "host": r.host, "device": r.device, "stage": r.stage,
         "layers": [r.first_layer, r.last_layer_exclusive], "param_bytes": r.param_bytes,
         "load_time_s": r.load_time_s}
        for r in rank_rows
    )
    environment = _json(run.environment_json, {})
    hosts = {r.host for r in rank_rows if r.host} | set(environment.get("hosts") or [])
    measurements = sorted(repo.measurements_for_runs(session=session, run_ids=[run.id]), key=lambda m: m.batch_size)
    stats = repo.rank_stats_for_measurements(session=session, measurement_ids=[m.id for m in measurements])
    by_measurement: dict[int, list] = {}
    for s in stats:
        by_measurement.setdefault(s.measurement_id, []).append(s)
    points = tuple(_point(run, m, by_measurement.get(m.id, []), len(hosts)) for m in measurements)
    completions: dict[int, list[dict[str, Any]]] = {}
    for c in repo.completions_for_run(session=session, run_id=run.id):
        completions.setdefault(c.batch_size, []).append(_completion_line(c))
    accounting = tuple(
        {"job_id": a.job_id, "state": a.state, "exit_code": a.exit_code, "elapsed": a.elapsed,
         "nodelist": a.nodelist, "alloc_tres": a.alloc_tres, "max_rss": a.max_rss, "total_cpu": a.total_cpu}
        for a in repo.accounting_for_run(session=session, run_id=run.id)
    )
    return RunResult(
        id=run.id, uid=run.uid, name=run.name, mode=run.mode, state=run.state,
        cluster=clusters.get(run.cluster_id) if run.cluster_id is not None else None,
        experiment_id=run.experiment_id, num_ranks=run.num_ranks, num_gpus=run.num_gpus,
        spec=_json(run.spec_json, {}), resources=_json(run.resources_json, {}), environment=environment,
        load_time_s=run.load_time_s, error=run.error, points=points, ranks=ranks,
        completions={b: tuple(lines) for b, lines in sorted(completions.items())}, accounting=accounting,
        engine_impl=run.engine_impl, engine_compiled=run.engine_compiled, engine_cuda_graphs=run.engine_cuda_graphs,
        engine_capture_s=run.engine_capture_s, started_at=run.started_at,
        finished_at=run.finished_at if run.started_at is not None else None,
        quant_scheme=run.quant_scheme, accuracy=_json(run.accuracy_json, None),
    )


def _clusters(session: Session) -> dict[int, str]:
    return {c.id: c.name for c in session.exec(select(ClusterRow))}


def load_runs(session: Session, refs: Iterable[str | int]) -> list[RunResult]:
    """Runs by id, uid or name (as `storage.repo.find_run` resolves them), in the order given."""
    clusters = _clusters(session)
    results = []
    for ref in refs:
        try:
            run = repo.find_run(session=session, ref=ref)
        except LookupError as exc:
            raise NotFound(str(exc)) from exc
        results.append(_run_result(session, run, clusters))
    return results


def find_experiment(session: Session, ref: str | int) -> Experiment:
    """An experiment by id or by name (the newest of that name)."""
    text = str(ref)
    if text.isdigit():
        found = repo.get_experiment(session=session, experiment_id=int(text))
        if found is not None:
            return found
    named = list(session.exec(select(Experiment).where(Experiment.name == text).order_by(col(Experiment.id))))
    if named:
        return named[-1]
    known = ", ".join(f"{e.id}:{e.name}" for e in repo.list_experiments(session=session)) or "none yet"
    raise NotFound(f"no experiment {text!r} (by id or name); experiments: {known}")


def cell_key_of(run_name: str, experiment_name: str) -> str | None:
    prefix = f"{experiment_name}:"
    return run_name[len(prefix):] if run_name.startswith(prefix) else None


def load_experiment(session: Session, ref: str | int) -> ExperimentResult:
    experiment = find_experiment(session, ref)
    clusters = _clusters(session)
    parameters = _json(experiment.parameters_json, {})
    plan = plan_from_parameters(experiment.kind, experiment.name, parameters) if parameters.get("cells") else None
    runs = [
        _run_result(session, run, clusters)
        for run in sorted(repo.list_runs(session=session, experiment_id=experiment.id), key=lambda r: r.id)
    ]
    by_key: dict[str, list[RunResult]] = {}
    for run in runs:
        key = cell_key_of(run.name, experiment.name)
        if key is not None:
            by_key.setdefault(key, []).append(run)
    cells = []
    if plan is not None:
        for cell in plan.cells:
            attempts = by_key.get(cell.key, [])
            cells.append(CellState(cell=cell, run=attempts[-1] if attempts else None, attempts=len(attempts)))
    return ExperimentResult(
        id=experiment.id, name=experiment.name, kind=experiment.kind, parameters=parameters, plan=plan,
        cells=tuple(cells), runs=tuple(runs),
    )


def load_experiments(session: Session, refs: Sequence[str | int]) -> list[ExperimentResult]:
    return [load_experiment(session, ref) for ref in refs]
