"""Experiment presets: each study expands into the runs it needs (RunSpec + Resources per cell).

A preset turns a `StudyConfig` (model, precision, modes, the cluster's shape, workload) into an
`ExperimentPlan`: named cells, each one `RunSpec` with the `remote.cluster.Resources` it runs on,
plus the cells it could not make and why (4 pipeline stages of a 2-layer model, say). The plan
is plain data, stored as the experiment's parameters, so the grid of cells and their states can
be rebuilt from the database alone.

Presets (the seed's six studies):
  correctness     1-GPU baseline; each parallel mode on the same prompts; the noise floor
  strong_scaling  fixed workload on 1, 2, 4, ... GPUs (or nodes) per mode
  weak_scaling    workload (num_requests) proportional to the GPU count
  batch_sweep     every batch size in one job per configuration (no reload between sizes)
  profile         compute / communication / idle per rank (profile=True)
  quantization    fp16 against int8 and int4 weight-only, speed and accuracy (scored in the same job)
plus generic paired (zip) and Cartesian (product) sweeps over spec or resource fields.

Expanding a plan touches nothing: submitting cells, resubmitting failed ones and attaching
bundles run by hand are `tui.core.experiment_runs` (over `tui.core.service.Dinf`); the grid of cell states
is read back by `tui.studies.results.load_experiment`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remote.cluster import Resources
from worker.contract import MODEL_CONFIGS, MODES, QUANT_SCHEMES, ModelSource, RunSpec, SpecError

PARALLEL_MODES = tuple(m for m in MODES if m != "single")


class ExperimentError(ValueError):
    """A study that cannot be planned; the message names the setting at fault and what to do."""


# --- inputs ------------------------------------------------------------------------------------


@dataclass
class ClusterShape:
    """How many ranks a cluster can give: nodes, and ranks (GPUs, or CPU processes) per node."""

    nodes: int = 1
    ranks_per_node: int = 1
    """GPUs per node on a GPU cluster; CPU worker processes per node otherwise."""
    gpus: bool = True
    """Ask the scheduler for one GPU per rank (False: CPU ranks, e.g. the local backend)."""

    @property
    def max_ranks(self) -> int:
        return self.nodes * self.ranks_per_node


def default_study_spec() -> RunSpec:
    """The template of a study's cells when none is given: METRICS.md's greedy, fixed-length decode
    in fp16, 64 new tokens."""
    return RunSpec(dtype="float16", max_new_tokens=64)


STUDY_FIELDS_IN_SPEC = frozenset(f.name for f in dataclasses.fields(RunSpec)) - {"run_name", "mode", "batch_sizes"}
"""Settings a study takes from its template spec; every cell sets its own name, mode and batch sizes."""


@dataclass
class StudyConfig:
    """What every preset needs to know: the spec every cell starts from, and how the study varies it.

    The worker's settings (model, dtype, device, engine, tokens, requests, repeats, ...) are not
    repeated here: they are `spec`'s, so a field added to `RunSpec` reaches every preset. Build one
    from flat settings with `StudyConfig.of(name=..., dtype=..., modes=...)`."""

    name: str = "study"
    spec: RunSpec = field(default_factory=default_study_spec)
    """The template of every cell's spec (its run_name, mode and batch_sizes are the cell's)."""
    modes: tuple[str, ...] = PARALLEL_MODES
    shape: ClusterShape = field(default_factory=ClusterShape)
    resources: Resources = field(default_factory=Resources)
    """Template: partition, account, time limit, image ... copied into every cell."""
    batch_size: int = 20
    """Batch of the correctness, scaling and profile studies (20 = the shipped prompts in one batch)."""
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """Sizes of the batch sweep and the profile study."""
    batches_per_gpu: int = 8
    """Scaling studies without the spec's num_requests: strong scaling gives the whole workload
    batch_size x batches_per_gpu x the largest rank count requests (so even there each GPU still
    runs that many batches), weak scaling batch_size x batches_per_gpu per GPU. A timed part of
    one or two batches is over before launch overheads and clock reads stop mattering.
    (spec.num_requests, when set, is the requests per measurement; weak scaling multiplies it by N.)"""
    rank_counts: tuple[int, ...] | None = None
    """Scaling studies: rank counts to try; None = 1, 2, 4, ... up to what the cluster has."""
    scale_by: str = "gpus"
    """'gpus' packs ranks onto as few nodes as possible; 'nodes' uses 1..nodes whole nodes."""
    parallel_ranks: int | None = None
    """Ranks of each parallel mode in the correctness, batch-sweep and profile studies (default:
    min(2, what the cluster has))."""
    quant_schemes: tuple[str, ...] = QUANT_SCHEMES
    """Quantization study: the schemes compared ('none' is the unquantized baseline)."""
    quant_batch_sizes: tuple[int, ...] = (1, 64)
    """Quantization study: one job per (scheme, batch size)."""

    @classmethod
    def of(cls, **settings: Any) -> StudyConfig:
        """From flat settings: the spec's fields go into the template, the rest are the study's."""
        spec_settings = {k: settings.pop(k) for k in list(settings) if k in STUDY_FIELDS_IN_SPEC}
        return cls.from_dict({**settings, "spec": {**default_study_spec().to_dict(), **spec_settings}})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        """From `to_dict`, or from the flat settings experiments stored before the template existed."""
        values = dict(data)
        spec = values.pop("spec", None)
        spec_data = dict(spec.to_dict() if isinstance(spec, RunSpec) else spec or default_study_spec().to_dict())
        spec_data.update({k: values.pop(k) for k in list(values) if k in STUDY_FIELDS_IN_SPEC})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ExperimentError(f"unknown study setting(s): {', '.join(unknown)}; known: "
                                  f"{', '.join(sorted(known | STUDY_FIELDS_IN_SPEC))}")
        bad = sorted(set(spec_data) - {f.name for f in dataclasses.fields(RunSpec)})
        if bad:
            raise ExperimentError(f"study spec: unknown field(s) {', '.join(bad)}")
        if isinstance(spec_data.get("model"), Mapping):
            spec_data["model"] = ModelSource(**spec_data["model"])
        # Not validated here: the template's mode is no cell's; each cell's spec is checked when recorded.
        values["spec"] = RunSpec(**spec_data)
        if isinstance(values.get("shape"), Mapping):
            values["shape"] = ClusterShape(**values["shape"])
        if isinstance(values.get("resources"), Mapping):
            values["resources"] = Resources(**values["resources"])
        for name in ("modes", "batch_sizes", "rank_counts", "quant_schemes", "quant_batch_sizes"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


# --- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of a plan. `key` is unique within the experiment and stable across resubmissions."""

    key: str
    role: str
    """baseline | parallel | noise_floor | scaling | sweep | profile"""
    spec: RunSpec
    resources: Resources
    params: Mapping[str, Any] = field(default_factory=dict)
    """The axis values that distinguish this cell (mode, ranks, batch split, ...)."""

    @property
    def num_ranks(self) -> int:
        return self.resources.nodes * self.resources.tasks_per_node

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "role": self.role,
            "spec": self.spec.to_dict(),
            "resources": dataclasses.asdict(self.resources),
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        return cls(
            key=data["key"],
            role=data["role"],
            spec=RunSpec.from_dict(dict(data["spec"])),
            resources=Resources(**data["resources"]),
            params=dict(data.get("params") or {}),
        )


@dataclass(frozen=True)
class ExperimentPlan:
    kind: str
    name: str
    config: Mapping[str, Any]
    cells: tuple[Cell, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(cell key, why) for combinations the model or cluster cannot run."""

    def parameters(self) -> dict[str, Any]:
        """What the experiment row stores: enough to rebuild the grid and the report."""
        return {
            "preset": self.kind,
            "config": json.loads(json.dumps(self.config, default=str)),
            "cells": [c.to_dict() for c in self.cells],
            "skipped": [list(s) for s in self.skipped],
        }

    def cell(self, key: str) -> Cell:
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(f"no cell {key!r} in experiment {self.name!r}; cells: {', '.join(c.key for c in self.cells)}")


def plan_from_parameters(kind: str, name: str, parameters: Mapping[str, Any]) -> ExperimentPlan:
    """The plan an experiment row was created from (inverse of `ExperimentPlan.parameters`)."""
    return ExperimentPlan(
        kind=kind,
        name=name,
        config=dict(parameters.get("config") or {}),
        cells=tuple(Cell.from_dict(c) for c in parameters.get("cells") or []),
        skipped=tuple(tuple(s) for s in parameters.get("skipped") or []),
    )


def run_name(experiment_name: str, cell_key: str) -> str:
    """The run name of a cell: the experiment and the cell key, so a run always finds its cell."""
    return f"{experiment_name}:{cell_key}"


# --- building blocks --------------------------------------------------------------------------


def _base_spec(cfg: StudyConfig, *, run: str, mode: str, batch_sizes: Sequence[int]) -> RunSpec:
    spec = copy.deepcopy(cfg.spec)  # the template is shared by every cell: never alias its lists
    spec.run_name, spec.mode, spec.batch_sizes = run, mode, list(batch_sizes)
    spec.micro_batches = spec.micro_batches if mode == "pp" else 1
    return spec


def resources_for(ranks: int, cfg: StudyConfig) -> Resources:
    """Resources for `ranks` ranks: as few nodes as hold them, the same number on each node."""
    shape = cfg.shape
    per_node = shape.ranks_per_node
    nodes = -(-ranks // per_node)
    if nodes > shape.nodes:
        raise ExperimentError(
            f"{ranks} ranks need {nodes} nodes of {per_node}, the cluster has {shape.nodes}; "
            "lower the rank counts or raise shape.nodes"
        )
    if ranks % nodes:
        raise ExperimentError(f"{ranks} ranks do not spread evenly over {nodes} nodes of {per_node}")
    resources = copy.deepcopy(cfg.resources)
    resources.nodes = nodes
    resources.tasks_per_node = ranks // nodes
    resources.gpus_per_node = ranks // nodes if shape.gpus else 0
    return resources


def _mode_problem(mode: str, ranks: int, cfg: StudyConfig) -> str | None:
    """Why `mode` cannot run on `ranks` ranks with this model, or None."""
    model = MODEL_CONFIGS.get(cfg.spec.model.config) if cfg.spec.model.source == "synthetic" else None
    if mode == "single" and ranks != 1:
        return "single runs on one rank"
    if mode != "single" and ranks < 2:
        return f"{mode} needs at least 2 ranks"
    if model is None:
        return None
    if mode == "pp" and ranks > model.num_hidden_layers:
        return f"{ranks} pipeline stages but the model has {model.num_hidden_layers} layers"
    if mode == "tp":
        for what, count in (("attention heads", model.num_attention_heads),
                            ("key/value heads", model.num_key_value_heads)):
            if count % ranks:
                return f"tensor parallelism over {ranks} ranks needs {what} ({count}) divisible by {ranks}"
    return None


def _cell(key: str, role: str, cfg: StudyConfig, *, mode: str, ranks: int, batch_sizes: Sequence[int],
          params: Mapping[str, Any], **spec_changes: Any) -> Cell:
    spec = _base_spec(cfg, run=run_name(cfg.name, key), mode=mode, batch_sizes=batch_sizes)
    for name, value in spec_changes.items():
        setattr(spec, name, value)
    if mode == "pp":
        spec.pp_size = ranks
    problems = spec.problems(world_size=ranks)
    if problems:
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
        raise ExperimentError(f"cell {key}: {detail}")
    return Cell(key=key, role=role, spec=spec, resources=resources_for(ranks, cfg), params=dict(params))


def _check_common(cfg: StudyConfig) -> None:
    if not cfg.name or not str(cfg.name).strip():
        raise ExperimentError("name: an experiment needs a name")
    bad = [m for m in cfg.modes if m not in PARALLEL_MODES]
    if bad:
        raise ExperimentError(f"modes: {bad} are not parallel modes; choose from {', '.join(PARALLEL_MODES)}")
    if not cfg.modes:
        raise ExperimentError("modes: name at least one parallel mode (pp, tp, dp)")
    if cfg.shape.nodes < 1 or cfg.shape.ranks_per_node < 1:
        raise ExperimentError("shape: a cluster needs at least one node with at least one rank")
    if cfg.scale_by not in ("gpus", "nodes"):
        raise ExperimentError(f"scale_by: must be 'gpus' or 'nodes', got {cfg.scale_by!r}")


def _parallel_ranks(cfg: StudyConfig) -> int:
    ranks = cfg.parallel_ranks or min(2, cfg.shape.max_ranks)
    if ranks < 2:
        raise ExperimentError(
            "shape: parallel modes need at least 2 ranks and the cluster shape offers "
            f"{cfg.shape.max_ranks}; raise shape.nodes or shape.ranks_per_node"
        )
    return ranks


def rank_counts(cfg: StudyConfig) -> list[int]:
    """1, 2, 4, ... up to the cluster's ranks (its total always included), or nodes x per-node."""
    if cfg.rank_counts:
        return sorted(set(cfg.rank_counts))
    if cfg.scale_by == "nodes":
        return [n * cfg.shape.ranks_per_node for n in range(1, cfg.shape.nodes + 1)]
    counts, n = [], 1
    while n <= cfg.shape.max_ranks:
        counts.append(n)
        n *= 2
    if counts[-1] != cfg.shape.max_ranks:
        counts.append(cfg.shape.max_ranks)
    return counts


def noise_floor_batch(mode: str, batch_size: int, ranks: int, micro_batches: int) -> int:
    """The batch the 1-GPU baseline is re-run with to mimic how `mode` splits a batch of `batch_size`.

    dp gives each replica 1/ranks of the batch; pp runs micro-batches of 1/micro_batches. tp splits
    no batch (it changes the reduction order instead, which no 1-GPU run reproduces), so it gets
    the two-way split of shared/GPU.md's measurement: the nearest 1-GPU perturbation of the same kind.
    """
    parts = {"dp": ranks, "pp": micro_batches, "tp": 2}.get(mode, 1)
    return max(1, -(-batch_size // max(1, parts)))


# --- presets -----------------------------------------------------------------------------------


def plan_correctness(cfg: StudyConfig) -> ExperimentPlan:
    _check_common(cfg)
    ranks = _parallel_ranks(cfg)
    b = cfg.batch_size
    cells = [_cell("baseline", "baseline", cfg, mode="single", ranks=1, batch_sizes=[b],
                   params={"mode": "single", "ranks": 1, "batch_size": b})]
    skipped, floors = [], {}
    for mode in cfg.modes:
        key = f"{mode}/r{ranks}"
        why = _mode_problem(mode, ranks, cfg)
        if why:
            skipped.append((key, why))
            continue
        floor_b = noise_floor_batch(mode, b, ranks, cfg.spec.micro_batches)
        floor_key = f"noise_floor/b{floor_b}"
        cells.append(_cell(key, "parallel", cfg, mode=mode, ranks=ranks, batch_sizes=[b],
                           params={"mode": mode, "ranks": ranks, "batch_size": b, "noise_floor": floor_key}))
        if floor_key not in floors:
            floors[floor_key] = _cell(floor_key, "noise_floor", cfg, mode="single", ranks=1,
                                      batch_sizes=[floor_b],
                                      params={"mode": "single", "ranks": 1, "batch_size": floor_b,
                                              "split_of": b})
    cells += floors.values()
    return ExperimentPlan("correctness", cfg.name, cfg.to_dict(), tuple(cells), tuple(skipped))


def _scaling(cfg: StudyConfig, kind: str) -> ExperimentPlan:
    _check_common(cfg)
    counts = rank_counts(cfg)
    if isinstance(cfg.batches_per_gpu, bool) or not isinstance(cfg.batches_per_gpu, int) or cfg.batches_per_gpu < 1:
        raise ExperimentError(f"batches_per_gpu: must be an integer >= 1, got {cfg.batches_per_gpu!r}")
    per_gpu = cfg.batch_size * cfg.batches_per_gpu
    base_requests = cfg.spec.num_requests or (per_gpu if kind == "weak_scaling" else per_gpu * max(counts))
    cells, skipped = [], []
    baseline_count = counts[0]
    if baseline_count == 1:
        cells.append(_cell("single/r1", "baseline", cfg, mode="single", ranks=1, batch_sizes=[cfg.batch_size],
                           params={"mode": "single", "ranks": 1}, num_requests=base_requests))
    for mode in cfg.modes:
        for ranks in counts:
            if ranks == 1:
                continue
            key = f"{mode}/r{ranks}"
            why = _mode_problem(mode, ranks, cfg)
            if why:
                skipped.append((key, why))
                continue
            requests = base_requests * ranks // baseline_count if kind == "weak_scaling" else base_requests
            try:
                cells.append(_cell(key, "scaling", cfg, mode=mode, ranks=ranks, batch_sizes=[cfg.batch_size],
                                   params={"mode": mode, "ranks": ranks, "num_requests": requests},
                                   num_requests=requests))
            except ExperimentError as exc:
                skipped.append((key, str(exc)))
    if len(cells) < 2:
        raise ExperimentError(
            f"{kind}: nothing to scale on a cluster of {cfg.shape.max_ranks} rank(s); "
            "the study needs at least 2 ranks (raise shape.nodes or shape.ranks_per_node)"
        )
    return ExperimentPlan(kind, cfg.name, cfg.to_dict(), tuple(cells), tuple(skipped))


def plan_strong_scaling(cfg: StudyConfig) -> ExperimentPlan:
    return _scaling(cfg, "strong_scaling")


def plan_weak_scaling(cfg: StudyConfig) -> ExperimentPlan:
    return _scaling(cfg, "weak_scaling")


def _per_mode_jobs(cfg: StudyConfig, kind: str, role: str, **spec_changes: Any) -> ExperimentPlan:
    """One job per configuration measuring every batch size.

    The worker uses one request count for all sizes of a job, so it defaults to the largest size:
    every size then runs full batches. dp's batch size is per replica (each replica batches its
    own shard), so a dp cell gets that many requests per replica.
    """
    _check_common(cfg)
    ranks = _parallel_ranks(cfg)
    sizes = sorted(set(cfg.batch_sizes))
    requests = cfg.spec.num_requests or max(sizes)
    cells = [_cell("single/r1", "baseline", cfg, mode="single", ranks=1, batch_sizes=sizes,
                   params={"mode": "single", "ranks": 1, "num_requests": requests},
                   num_requests=requests, **spec_changes)]
    skipped = []
    for mode in cfg.modes:
        key = f"{mode}/r{ranks}"
        why = _mode_problem(mode, ranks, cfg)
        # pp runs every size: a batch with fewer rows than micro_batches runs one micro-batch per row
        # (the worker records the count each size used), which is what batch 1 latency means for pp.
        usable = sizes
        if why:
            skipped.append((key, why))
            continue
        mode_requests = requests * ranks if mode == "dp" else requests
        cells.append(_cell(key, role, cfg, mode=mode, ranks=ranks, batch_sizes=usable,
                           params={"mode": mode, "ranks": ranks, "num_requests": mode_requests},
                           num_requests=mode_requests, **spec_changes))
    return ExperimentPlan(kind, cfg.name, cfg.to_dict(), tuple(cells), tuple(skipped))


def plan_batch_sweep(cfg: StudyConfig) -> ExperimentPlan:
    return _per_mode_jobs(cfg, "batch_sweep", "sweep")


def plan_profile(cfg: StudyConfig) -> ExperimentPlan:
    return _per_mode_jobs(cfg, "profile", "profile", profile=True)


def plan_quantization(cfg: StudyConfig) -> ExperimentPlan:
    """One single-rank job per (scheme, batch size); each scores its model against the unquantized one
    loaded beside it in the same job (spec.score), so accuracy never depends on another job's numbers."""
    if not cfg.name or not str(cfg.name).strip():
        raise ExperimentError("name: an experiment needs a name")
    bad = [s for s in cfg.quant_schemes if s not in QUANT_SCHEMES]
    if bad or not cfg.quant_schemes:
        raise ExperimentError(f"quant_schemes: choose from {', '.join(QUANT_SCHEMES)}, got {list(cfg.quant_schemes)}")
    if not cfg.quant_batch_sizes or any(b < 1 for b in cfg.quant_batch_sizes):
        raise ExperimentError(f"quant_batch_sizes: positive batch sizes, got {list(cfg.quant_batch_sizes)}")
    cells, skipped = [], []
    for scheme in dict.fromkeys(cfg.quant_schemes):
        for b in sorted(set(cfg.quant_batch_sizes)):
            key = f"{scheme}/b{b}"
            if scheme == "int4" and (cfg.spec.device == "cpu" or not cfg.shape.gpus):
                skipped.append((key, "int4 runs through a CUDA kernel; CPU runs compare the others"))
                continue
            requests = cfg.spec.num_requests or max(4 * b, 20)  # several batches per pass, whatever the size
            cells.append(_cell(key, "baseline" if scheme == "none" else "quant", cfg, mode="single", ranks=1,
                               batch_sizes=[b], params={"quant": scheme, "batch_size": b},
                               num_requests=requests, quant=scheme, score=True))
    return ExperimentPlan("quantization", cfg.name, cfg.to_dict(), tuple(cells), tuple(skipped))


# --- generic sweeps ---------------------------------------------------------------------------

RESOURCE_PREFIX = "resources."


def _set_path(spec_dict: dict[str, Any], resources: Resources, path: str, value: Any) -> None:
    if path.startswith(RESOURCE_PREFIX):
        name = path[len(RESOURCE_PREFIX):]
        if name not in {f.name for f in dataclasses.fields(Resources)}:
            raise ExperimentError(f"sweep axis {path!r}: Resources has no field {name!r}")
        setattr(resources, name, value)
        return
    target = spec_dict
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            raise ExperimentError(f"sweep axis {path!r}: RunSpec has no object {part!r}")
        target = target[part]
    if parts[-1] not in target:
        raise ExperimentError(f"sweep axis {path!r}: RunSpec has no field {parts[-1]!r}")
    target[parts[-1]] = value


def _value_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def plan_sweep(
    name: str,
    base_spec: RunSpec,
    base_resources: Resources,
    axes: Mapping[str, Sequence[Any]],
    *,
    paired: bool = False,
) -> ExperimentPlan:
    """One cell per combination of axis values: Cartesian product, or zipped when `paired`.

    Axis names are RunSpec fields (`max_new_tokens`, `model.seed`) or `resources.<field>`.
    Every cell is validated for its own world size (nodes x tasks_per_node); the first bad cell
    stops the plan with the cell and field named.
    """
    if not axes:
        raise ExperimentError("sweep: give at least one axis (FIELD=V1,V2,...)")
    names = list(axes)
    values = [list(axes[n]) for n in names]
    for axis, vals in zip(names, values):
        if not vals:
            raise ExperimentError(f"sweep axis {axis!r} has no values")
    if paired:
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            detail = ", ".join(f"{n}={len(v)}" for n, v in zip(names, values))
            raise ExperimentError(f"paired sweep: every axis needs the same number of values ({detail})")
        combos: Iterable[tuple[Any, ...]] = zip(*values)
    else:
        combos = itertools.product(*values)
    cells = []
    for combo in combos:
        key = ",".join(f"{n}={_value_text(v)}" for n, v in zip(names, combo))
        spec_dict = base_spec.to_dict()
        resources = copy.deepcopy(base_resources)
        for axis, value in zip(names, combo):
            _set_path(spec_dict, resources, axis, value)
        spec_dict["run_name"] = run_name(name, key)
        try:
            spec = RunSpec.from_dict(spec_dict)
        except SpecError as exc:
            detail = "; ".join(f"{k}: {v}" for k, v in sorted(exc.problems.items()))
            raise ExperimentError(f"cell {key}: {detail}") from exc
        world = resources.nodes * resources.tasks_per_node
        if spec.mode == "pp" and spec.pp_size is None:
            spec.pp_size = world
        problems = spec.problems(world_size=world)
        if problems:
            detail = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
            raise ExperimentError(f"cell {key}: {detail}")
        cells.append(Cell(key=key, role="sweep", spec=spec, resources=resources, params=dict(zip(names, combo))))
    config = {"base_spec": base_spec.to_dict(), "base_resources": dataclasses.asdict(base_resources),
              "axes": {n: v for n, v in zip(names, values)}, "paired": paired}
    return ExperimentPlan("paired_sweep" if paired else "sweep", name, config, tuple(cells))


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """`FIELD=V1,V2,...` with each value read as JSON when it parses (1 -> int, [1,8] needs quoting)."""
    if "=" not in text:
        raise ExperimentError(f"sweep axis {text!r}: write FIELD=V1,V2,...")
    name, _, raw = text.partition("=")
    values = []
    for item in raw.split(";") if ";" in raw else raw.split(","):
        item = item.strip()
        try:
            values.append(json.loads(item))
        except json.JSONDecodeError:
            values.append(item)
    return name.strip(), values
