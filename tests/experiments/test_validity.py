"""The measurement warnings: they fire on a crafted overlapping pair, on E > 1 and on a short timing,
and stay silent on a clean pair. Bundles go through storage's ingestion into a real SQLite file and
come back through `tui.studies.results`, as a finished run's would; the report and the comparison are the
real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote.cluster import Resources
from storage.db import make_engine, read_session, write_session
from tests.experiments import bundles
from tui.studies import catalog, report, results, validity
from tui.studies import presets as ex
from tui.studies.comparison import compare_runs, format_comparison
from worker.contract import ModelSource

T0 = 1_790_000_000.0
"""A fixed Unix time the crafted windows are placed around."""


def _plan(name: str) -> ex.ExperimentPlan:
    cfg = ex.StudyConfig.of(name=name, model=ModelSource(config="tiny"), dtype="float32", device="cpu", modes=("pp",),
                         shape=ex.ClusterShape(nodes=1, ranks_per_node=2, gpus=False), resources=Resources(),
                         batch_size=4, num_requests=16, max_new_tokens=8, repeats=3, rank_counts=(1, 2))
    return catalog.plan("strong_scaling", cfg)


def _experiment(tmp_path: Path, name: str, cells: dict[str, tuple[list[float], float, str]]):
    """cells: key -> (wall per repeat, timed part's start in seconds after T0, host)."""
    plan = _plan(name)
    dirs = {}
    for cell in plan.cells:
        walls, start, host = cells[cell.key]
        per_rank = [bundles.rank_record(r, peak=bundles.GIB) for r in range(cell.num_ranks)]
        m = bundles.measurement(batch_size=4, num_requests=16, max_new_tokens=8, wall_s=walls, ttft_s=0.01,
                                tpot_s=0.01, per_rank=per_rank, num_gpus=cell.num_ranks)
        m["timed_window_unix"] = [T0 + start, T0 + start + sum(walls)]
        result = bundles.result(cell.spec.to_dict(), world_size=cell.num_ranks, num_gpus=0, measurements=[m],
                                hosts=(host,), gpu_model=None)
        dirs[cell.key] = bundles.write_bundle(tmp_path / name / cell.key.replace("/", "_"), result)
    engine = make_engine(tmp_path / f"{name}.db")
    with write_session(engine) as session:
        bundles.store_experiment(session, plan, dirs)
    with read_session(engine) as session:
        exp = results.load_experiment(session, name)
    engine.dispose()
    return exp


def _warnings(exp) -> tuple[list[str], list[str]]:
    text = report.build_report([exp])
    start = text.index("## Measurement warnings")
    section = text[start:text.index("\n## ", start + 1)]
    comparison = compare_runs([c.run for c in exp.cells])
    return [line for line in section.splitlines() if line.startswith("- ")], list(comparison.warnings)


def test_a_clean_pair_raises_no_warning(tmp_path):
    # 3 s then 2.5 s on 2 ranks (S = 1.2, E = 0.6), one after the other on the same host
    exp = _experiment(tmp_path, "clean", {"single/r1": ([3.0, 3.0, 3.1], 0.0, "laptop"),
                                          "pp/r2": ([2.5, 2.5, 2.6], 60.0, "laptop")})
    in_report, in_compare = _warnings(exp)
    assert in_report == [] and in_compare == []
    assert "None: no efficiency above 1, no two runs at the same time on the same host, no timed part under 2 s." \
        in report.build_report([exp])


def test_an_overlapping_pair_on_one_host_is_named(tmp_path):
    # pp's timed part starts 4 s into the single run's 9 s: they shared the laptop's cores
    exp = _experiment(tmp_path, "overlap", {"single/r1": ([3.0, 3.0, 3.0], 0.0, "laptop"),
                                            "pp/r2": ([2.5, 2.5, 2.5], 4.0, "laptop")})
    in_report, in_compare = _warnings(exp)
    single, pp = exp.cell("single/r1").run, exp.cell("pp/r2").run
    overlap = [w for w in in_report if "ran at the same time" in w]
    assert len(overlap) == 1
    assert f"#{single.id} overlap:single/r1 and #{pp.id} overlap:pp/r2" in overlap[0] and "on laptop" in overlap[0]
    # their windows: single from T0 - 4.5 s (its load) to T0 + 9; pp from T0 - 0.5 to T0 + 11.5
    assert "for 9.5 s" in overlap[0]
    assert [w for w in in_compare if "ran at the same time" in w] == [overlap[0][2:]]


def test_the_same_windows_on_different_hosts_are_not_an_overlap(tmp_path):
    exp = _experiment(tmp_path, "apart", {"single/r1": ([3.0, 3.0, 3.0], 0.0, "node1"),
                                          "pp/r2": ([2.5, 2.5, 2.5], 4.0, "node2")})
    assert _warnings(exp) == ([], [])


def test_efficiency_above_one_and_a_short_timing_are_flagged(tmp_path):
    # 2 ranks 2.5x faster than one (E = 1.25); pp's timed part 1.2 s, under MIN_TIMED_S
    exp = _experiment(tmp_path, "superlinear", {"single/r1": ([3.0, 3.0, 3.0], 0.0, "laptop"),
                                                "pp/r2": ([1.2, 1.2, 1.2], 60.0, "laptop")})
    in_report, in_compare = _warnings(exp)
    pp = exp.cell("pp/r2").run
    assert any(w.startswith("- superlinear: pp on 2 ranks: E = 1.25 is above 1") for w in in_report)
    assert any(f"#{pp.id} superlinear:pp/r2 at batch 4: the timed part lasted 1.200 s, under the 2 s" in w
               for w in in_report)
    assert any(w.startswith(f"#{pp.id} pp x2 at batch 4 vs #") and "E = 1.25 is above 1" in w for w in in_compare)
    assert "! " in format_comparison(compare_runs([c.run for c in exp.cells]), with_charts=False)
    # and the verdict no longer calls it scaling
    assert "pp on 2 ranks: no verdict; S = 2.50, E = 1.25" in report.build_report([exp])


@pytest.mark.parametrize("samples, text", [([5.0], "5.000–5.000, no interval (n=1)"),
                                           ([4.0, 5.0, 6.0], "4.000–6.000, ±2.484")])
def test_spread_states_min_max_and_a_t_interval(samples, text):
    # n = 3: std 1, t(2) = 4.303, 4.303 / sqrt(3) = 2.484 (a normal 1.96 would claim ±1.132)
    assert validity.spread_text(samples) == text
