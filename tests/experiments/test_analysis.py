"""Derived metrics on fixture measurements, against values worked out by hand."""

from __future__ import annotations

import pytest

from tests.experiments import bundles
from tui.studies import analysis
from tui.studies.analysis import Point, RankStat


def spec(mode: str, name: str) -> dict:
    from worker.contract import RunSpec

    return RunSpec(run_name=name, mode=mode, batch_sizes=[20], max_new_tokens=64).to_dict()


def point(mode: str, gpus: int, walls: list[float], *, peak_gib: float, requests: int = 20,
          batch: int = 20) -> Point:
    per_rank = [bundles.rank_record(r, peak=int(peak_gib * bundles.GIB)) for r in range(gpus)]
    m = bundles.measurement(batch_size=batch, num_requests=requests, max_new_tokens=64, wall_s=walls,
                            ttft_s=0.05, tpot_s=0.02, per_rank=per_rank, num_gpus=gpus)
    result = bundles.result(spec(mode, f"{mode}{gpus}"), world_size=gpus, num_gpus=gpus, measurements=[m])
    return analysis.points_from_result(result)[0]


@pytest.fixture
def single():
    # median of 9.8, 10.0, 10.2 is 10.0 s; 20 requests x 64 tokens = 1280 tokens -> 128 tok/s
    return point("single", 1, [10.2, 9.8, 10.0], peak_gib=8)


def test_point_from_bundle_reads_medians_and_peak(single):
    assert single.wall_s == 10.0
    assert single.output_tokens == 1280
    assert single.output_tok_s == pytest.approx(128.0)
    assert single.peak_bytes == 8 * bundles.GIB
    assert single.ttft_s == pytest.approx(0.05)
    assert single.repeats == 3
    assert single.num_nodes == 1


def test_strong_scaling_hand_checked(single):
    pp2 = point("pp", 2, [8.0, 8.0, 8.0], peak_gib=4)        # S = 10/8 = 1.25, E = 0.625
    dp4 = point("dp", 4, [2.6, 2.5, 2.4], peak_gib=8)        # S = 10/2.5 = 4.0, E = 1.0
    tp2 = point("tp", 2, [6.25, 6.0, 6.5], peak_gib=4.4)     # S = 10/6.25 = 1.6, E = 0.8
    rows = {r.point.mode: r for r in analysis.strong_scaling(single, [pp2, dp4, tp2])}
    assert rows["single"].speedup == 1.0 and rows["single"].efficiency == 1.0
    assert rows["pp"].speedup == pytest.approx(1.25)
    assert rows["pp"].efficiency == pytest.approx(0.625)
    # X(2) = 1280 / 8 = 160 tok/s; 160 / (2 * 128) = 0.625, equal to E under a fixed workload
    assert rows["pp"].throughput_scaling == pytest.approx(0.625)
    assert rows["pp"].memory_ratio == pytest.approx(0.5)
    assert rows["dp"].n == 4
    assert rows["dp"].speedup == pytest.approx(4.0)
    assert rows["dp"].efficiency == pytest.approx(1.0)
    assert rows["dp"].memory_ratio == pytest.approx(1.0)
    assert rows["tp"].speedup == pytest.approx(1.6)
    assert rows["tp"].efficiency == pytest.approx(0.8)
    assert rows["tp"].memory_ratio == pytest.approx(0.55)


def test_weak_scaling_efficiency_hand_checked(single):
    # Work doubles with N: 40 requests on 2 GPUs in 12.5 s -> E_w = 10 / 12.5 = 0.8
    dp2 = point("dp", 2, [12.5, 12.4, 12.6], peak_gib=8, requests=40)
    rows = analysis.weak_scaling(single, [dp2])
    assert [r.point.num_gpus for r in rows] == [1, 2]
    assert rows[1].speedup == pytest.approx(0.8)
    assert rows[1].efficiency == pytest.approx(0.8)
    # X(2) = 2560 / 12.5 = 204.8; 204.8 / (2 * 128) = 0.8
    assert rows[1].throughput_scaling == pytest.approx(0.8)


def test_relative_gpu_count_uses_the_baseline_size():
    base = point("dp", 2, [10.0], peak_gib=1)
    four = point("dp", 4, [5.0], peak_gib=1)
    rows = analysis.strong_scaling(base, [four])
    assert rows[-1].n == 2 and rows[-1].efficiency == pytest.approx(1.0)


def test_missing_values_give_none_not_errors():
    empty = Point(run_id=1, label="x", mode="pp", num_gpus=2, num_nodes=1, batch_size=1, num_requests=1,
                  output_tokens=0, wall_s=None)
    base = Point(run_id=0, label="b", mode="single", num_gpus=1, num_nodes=1, batch_size=1, num_requests=1,
                 output_tokens=0, wall_s=2.0)
    row = analysis.strong_scaling(base, [empty])[-1]
    assert row.speedup is None and row.efficiency is None and row.memory_ratio is None


def test_compare_by_batch_pairs_shared_sizes_only():
    base = [point("single", 1, [4.0], peak_gib=2, batch=b, requests=b) for b in (1, 8)]
    pp = [point("pp", 2, [5.0], peak_gib=1, batch=b, requests=b) for b in (1, 8, 32)]
    rows = analysis.compare_by_batch(base, pp)
    assert [r.batch_size for r in rows] == [1, 8]
    assert rows[0].speedup == pytest.approx(0.8)         # 4.0 / 5.0
    assert rows[0].efficiency == pytest.approx(0.4)
    assert rows[0].memory_ratio == pytest.approx(0.5)


def test_time_split_fractions():
    p = Point(run_id=1, label="pp", mode="pp", num_gpus=2, num_nodes=1, batch_size=1, num_requests=1,
              output_tokens=1, wall_s=1.0,
              ranks=(RankStat(1, 0, 3.0, 1.0, 6.0, 60.0, 10.0), RankStat(0, 0, 5.0, 1.0, 4.0, 40.0, 10.0)))
    splits = analysis.time_split(p)
    assert [s.rank for s in splits] == [0, 1]
    assert (splits[0].compute, splits[0].comm, splits[0].idle) == pytest.approx((0.5, 0.1, 0.4))
    assert (splits[1].compute, splits[1].comm, splits[1].idle) == pytest.approx((0.3, 0.1, 0.6))


def _line(index, ids, topk):
    return {"index": index, "prompt": f"p{index}", "output_ids": ids, "topk_ids": topk, "text": ""}


def test_correctness_first_divergence_and_topk():
    k = [[7, 8, 9]] * 4
    baseline = [_line(0, [5, 6, 7, 8], k), _line(1, [5, 6, 7, 8], [[5], [6], [7, 3], [8]]),
                _line(2, [5, 6, 7, 8], [[5], [6], [7], [8]])]
    candidate = [_line(0, [5, 6, 7, 8], k), _line(1, [5, 6, 3, 8], [[5], [6], [3, 7], [8]]),
                 _line(2, [5, 9, 7, 8], [[5], [9, 1], [7], [8]])]
    result = analysis.compare_completions(baseline, candidate)
    assert result.n == 3 and result.exact_matches == 1
    assert result.exact_match_rate == pytest.approx(1 / 3)
    c0, c1, c2 = result.checks
    assert c0.exact and c0.first_divergence is None
    assert c1.first_divergence == 2 and (c1.baseline_token, c1.candidate_token) == (7, 3) and c1.topk_agree
    # prompt 2: candidate's 9 is not in the baseline's top-k [6] at position 1
    assert c2.first_divergence == 1 and c2.topk_agree is False
    assert not result.all_divergences_topk


def test_correctness_missing_candidate_line_is_divergent():
    result = analysis.compare_completions([_line(0, [1, 2], [[1], [2]])], [])
    assert result.checks[0].first_divergence == 0 and result.checks[0].topk_agree is False


def test_verdict_rule_floor_and_topk():
    topk = [[1, 2], [2, 1]]
    same = _line(0, [1, 2], topk)
    near = _line(0, [1, 1], topk)  # diverges at 1, both tokens in each other's top-2
    exact = analysis.compare_completions([same, {**same, "index": 1}], [same, {**same, "index": 1}])
    half = analysis.compare_completions([same, {**same, "index": 1}], [same, {**near, "index": 1}])
    assert analysis.correctness_verdict(half, exact).passed is False        # 50% below a 100% floor
    assert analysis.correctness_verdict(half, half).passed is True          # equal to the floor
    assert analysis.correctness_verdict(exact, None).passed is True
    assert analysis.correctness_verdict(half, None).passed is False         # no floor: identical ids required
    verdict = analysis.correctness_verdict(half, exact)
    assert "1/2 exact (50%)" in verdict.reason and "noise floor 2/2 (100%)" in verdict.reason


def test_diff_fields_only_differences():
    a = {"spec": {"mode": "pp", "batch_sizes": [1, 8], "model": {"config": "tiny"}}, "gpus": 2}
    b = {"spec": {"mode": "dp", "batch_sizes": [1, 8], "model": {"config": "tiny"}}, "extra": 1, "gpus": 2}
    assert analysis.diff_fields([a, b]) == [("extra", [None, 1]), ("spec.mode", ["pp", "dp"])]
    assert analysis.diff_fields([a, a]) == []
    assert analysis.diff_fields([a, b], ignore=["extra"]) == [("spec.mode", ["pp", "dp"])]
