"""A database of four finished studies (correctness, strong scaling, batch sweep, profile).

Built from contract-shaped bundles through storage's repository and ingestion, exactly as the
service layer stores a finished run. The numbers (all chosen by hand, see each function) give
known verdicts:

- strong scaling, 20 requests at batch 20: 1 GPU 10.0 s; pp x2 8.0 s (S 1.25, E 0.625);
  pp x4 9.0 s (S 1.11, E 0.28); dp x2 5.0 s (S 2.00); dp x4 2.5 s (S 4.00, E 1.00);
  tp x2 FAILED, tp x4 never submitted.
- correctness, 20 prompts, 8 tokens: pp diverges on prompt 3 outside the top-k (fails); dp
  diverges on prompts 5 and 6 within top-k (18/20) and its floor (batch 10) is 18/20 (passes).
- batch sweep, 16 requests x 64 tokens: pp x2 at batch 1/4/16 gives S 0.80 / 1.00 / 2.00.
- profile: pp x2 mean over ranks 45/10/45 % compute/comm/idle at batch 1, 85/7.5/7.5 at batch 16.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from remote.cluster import Resources
from storage.db import write_session
from tests.experiments import bundles
from tests.experiments.bundles import GIB
from tui.studies import catalog
from tui.studies import presets as ex
from worker.contract import ModelSource

SHAPE = ex.ClusterShape(nodes=1, ranks_per_node=4, gpus=True)


def _config(name: str, **changes) -> ex.StudyConfig:
    values = dict(name=name, model=ModelSource(config="tiny", seed=7), dtype="float16", shape=SHAPE,
                  resources=Resources(partition="gpu", time_limit="00:20:00"), repeats=3)
    values.update(changes)
    return ex.StudyConfig.of(**values)


def _bundle(root: Path, cell: ex.Cell, measurements: list[dict], completions: list[dict] | None = None,
            hosts=("gpu-node-1",)) -> Path:
    ranks = cell.num_ranks
    result = bundles.result(cell.spec.to_dict(), world_size=ranks, num_gpus=ranks, measurements=measurements,
                            hosts=hosts)
    return bundles.write_bundle(root / cell.key.replace("/", "_"), result, completions)


def _m(cell: ex.Cell, batch: int, requests: int, walls, *, peak_gib: float, ttft=0.05, tpot=0.02,
       splits=None) -> dict:
    ranks = cell.num_ranks
    per_rank = []
    for r in range(ranks):
        split = splits[r] if splits else (None, None, None)
        per_rank.append(bundles.rank_record(r, peak=int(peak_gib * GIB), compute=split[0], comm=split[1],
                                            idle=split[2], bubble=None if split[2] is None else
                                            round(100 * split[2] / sum(split), 3)))
    return bundles.measurement(batch_size=batch, num_requests=requests, max_new_tokens=cell.spec.max_new_tokens,
                               wall_s=walls, ttft_s=ttft, tpot_s=tpot, per_rank=per_rank, num_gpus=ranks)


def strong_scaling(root: Path) -> tuple[ex.ExperimentPlan, dict]:
    plan = catalog.plan("strong_scaling", _config("scaling", modes=("pp", "tp", "dp"), rank_counts=(1, 2, 4)))
    walls = {"single/r1": ([10.2, 9.8, 10.0], 8), "pp/r2": ([8.0, 8.0, 8.0], 4), "pp/r4": ([9.1, 8.9, 9.0], 2),
             "dp/r2": ([5.1, 4.9, 5.0], 8), "dp/r4": ([2.6, 2.4, 2.5], 8)}
    bundle_dirs: dict[str, Path | None] = {"tp/r2": None}
    for key, (wall, peak) in walls.items():
        cell = plan.cell(key)
        bundle_dirs[key] = _bundle(root / "scaling", cell, [_m(cell, 20, 20, wall, peak_gib=peak)])
    return plan, bundle_dirs


def _ids(i: int, n: int) -> list[int]:
    return [100 + i + t for t in range(n)]


def _topk(ids: list[int]) -> list[list[int]]:
    return [[t, t + 1000, t + 2000, t + 3000, t + 4000] for t in ids]


def _completions(batch: int, n: int, tokens: int, changes: dict[int, tuple[int, int, bool]]) -> list[dict]:
    """20 prompts; changes[i] = (position, new token, within top-k) makes prompt i diverge there."""
    outputs, topks = [], []
    for i in range(n):
        ids = _ids(i, tokens)
        topk = _topk(ids)
        if i in changes:
            position, token, within = changes[i]
            old = ids[position]
            ids = ids[:position] + [token] + ids[position + 1:]
            # within: each side's token is among the other's top-5 at the divergence
            topk = _topk(ids)
            if within:
                topk[position] = [token, old, token + 2000, token + 3000, token + 4000]
        outputs.append(ids)
        topks.append(topk)
    lines = bundles.completions(batch, outputs, topks)
    return lines


def correctness(root: Path) -> tuple[ex.ExperimentPlan, dict]:
    plan = catalog.plan("correctness", _config("correctness", modes=("pp", "dp"), max_new_tokens=8, repeats=1))
    assert [c.key for c in plan.cells] == ["baseline", "pp/r2", "dp/r2", "noise_floor/b20", "noise_floor/b10"]
    n, tokens = 20, 8
    base_within = {}
    changes = {
        "baseline": {},
        "noise_floor/b20": {},
        "noise_floor/b10": {5: (4, 105 + 4 + 1000, True), 9: (2, 109 + 2 + 1000, True)},
        "pp/r2": {3: (6, 7777, False)},
        "dp/r2": {5: (3, 105 + 3 + 1000, True), 6: (0, 106 + 1000, True)},
    }
    # The baseline's top-k must hold the other side's token where the others diverge "within top-k".
    base_lines = _completions(20, n, tokens, base_within)
    for key, change in changes.items():
        for i, (position, token, within) in change.items():
            if within:
                base_lines[i]["topk_ids"][position] = [base_lines[i]["output_ids"][position], token, 1, 2, 3]
    bundle_dirs = {}
    for cell in plan.cells:
        batch = cell.spec.batch_sizes[0]
        lines = base_lines if cell.key == "baseline" else _completions(batch, n, tokens, changes[cell.key])
        for line in lines:
            line["batch_size"] = batch
        bundle_dirs[cell.key] = _bundle(root / "correctness", cell,
                                        [_m(cell, batch, n, [1.0], peak_gib=2)], lines)
    return plan, bundle_dirs


def batch_sweep(root: Path) -> tuple[ex.ExperimentPlan, dict]:
    plan = catalog.plan("batch_sweep", _config("sweep", modes=("pp",), batch_sizes=(1, 4, 16)))
    single, pp = plan.cell("single/r1"), plan.cell("pp/r2")
    # 16 requests x 64 tokens = 1024 tokens: single 64 / 256 / 800 tok/s; pp 51.2 / 256 / 1600 tok/s
    single_m = [_m(single, 1, 16, [16.0] * 3, peak_gib=8.1, tpot=0.015, ttft=0.020),
                _m(single, 4, 16, [4.0] * 3, peak_gib=8.4, tpot=0.016, ttft=0.030),
                _m(single, 16, 16, [1.28] * 3, peak_gib=9.6, tpot=0.020, ttft=0.080)]
    pp_m = [_m(pp, 1, 16, [20.0] * 3, peak_gib=4.05, tpot=0.019, ttft=0.025),
            _m(pp, 4, 16, [4.0] * 3, peak_gib=4.2, tpot=0.016, ttft=0.032),
            _m(pp, 16, 16, [0.64] * 3, peak_gib=4.8, tpot=0.010, ttft=0.070)]
    return plan, {"single/r1": _bundle(root / "sweep", single, single_m),
                  "pp/r2": _bundle(root / "sweep", pp, pp_m, hosts=("gpu-node-1",))}


def profile(root: Path) -> tuple[ex.ExperimentPlan, dict]:
    plan = catalog.plan("profile", _config("profile", modes=("pp",), batch_sizes=(1, 16)))
    single, pp = plan.cell("single/r1"), plan.cell("pp/r2")
    single_m = [_m(single, b, 16, [2.0] * 3, peak_gib=8, splits=[(2.0, 0.0, 0.0)]) for b in (1, 16)]
    pp_m = [_m(pp, 1, 16, [10.0] * 3, peak_gib=4, splits=[(4.0, 1.0, 5.0), (5.0, 1.0, 4.0)]),
            _m(pp, 16, 16, [10.0] * 3, peak_gib=4, splits=[(8.0, 1.0, 1.0), (9.0, 0.5, 0.5)])]
    return plan, {"single/r1": _bundle(root / "profile", single, single_m), "pp/r2": _bundle(root / "profile", pp, pp_m)}


def build(engine: Engine, root: Path) -> dict[str, int]:
    """Store the four studies; returns experiment name -> id."""
    ids = {}
    for make in (correctness, strong_scaling, batch_sweep, profile):
        plan, bundle_dirs = make(root)
        with write_session(engine) as session:
            ids[plan.name] = bundles.store_experiment(session, plan, bundle_dirs)
    return ids
