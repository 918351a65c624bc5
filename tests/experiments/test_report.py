"""The report from a fixture database: its sections, its numbers, and byte-for-byte determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import make_engine, read_session
from tests.experiments import fixture_db
from tui.studies import report, results


def build(engine, ids, **kwargs) -> str:
    with read_session(engine) as session:
        experiments = results.load_experiments(session, list(ids.values()))
    return report.build_report(experiments, **kwargs)


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_sections_in_order(study_db):
    engine, ids = study_db
    text = build(engine, ids)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Findings", "## Measurement warnings", "## Setup", "## Method", "## Metric definitions",
        "## 1. Correctness: correctness", "## 2. Strong scaling: scaling", "## 3. Batch sweep: sweep",
        "## 4. Profile: profile", "## Limitations",
    ]
    setup = section(text, "## Setup")
    assert "| NVIDIA H100 80GB HBM3 | nccl | 2.11.0+cu130 | 5.17.0 | 0.19.8 | 2.27.3 | 3.12.3 | gpu-node-1 | 14 |" in setup
    assert "tiny (LLaMA shape: 4 layers, hidden 128" in setup and "seed 7, float16" in setup
    assert "| scaling | tp/r4 | – | 1 | 4 | 4 | gpu |" in setup


def test_correctness_numbers_and_verdicts(study_db):
    engine, ids = study_db
    text = section(build(engine, ids), "## 1. Correctness")
    assert "| pp | 2 | 19/20 | 95.0% | 0/1 | 20/20 (noise_floor/b20) | FAIL |" in text
    assert "| dp | 2 | 18/20 | 90.0% | 2/2 | 18/20 (noise_floor/b10) | PASS |" in text
    assert "| noise_floor/b10 | 10 of 20 | 18/20 | 90.0% | yes |" in text
    assert "pp on 2 ranks: fails: 19/20 exact (95%); prompt 3 diverges outside the top-k." in text
    assert "dp on 2 ranks: passes: 18/20 exact (90%), not below the noise floor 18/20 (90%)" in text
    # the divergent tokens side by side
    assert "| 3 | 6 | 109 | 7777 | no | 109 110 | 7777 110 |" in text
    assert "| 6 | 0 | 106 | 1106 | yes |" in text
    assert "full bar: all 8 tokens identical; 19/20 prompts exact" in text


def test_strong_scaling_numbers_and_verdicts(study_db):
    engine, ids = study_db
    text = section(build(engine, ids), "## 2. Strong scaling")
    assert "| single | 1 | 1 | 20 | 10.000 (n=3) | 9.800–10.200, ±0.497 | 128.0 | 1.00 | 1.00 | 1.00 | 1.00 |" in text
    assert text.count("| single | 1 |") == 1
    assert "| pp | 2 | 1 | 20 | 8.000 (n=3) | 8.000–8.000, ±0.000 | 160.0 | 1.25 | 0.62 | 0.62 | 0.50 |" in text
    assert "| dp | 4 | 1 | 20 | 2.500 (n=3) | 2.400–2.600, ±0.248 | 512.0 | 4.00 | 1.00 | 1.00 | 1.00 |" in text
    assert "dp on 4 GPUs: scales, S = 4.00, E = 1.00" in text
    assert "pp on 4 GPUs: faster than 1 GPU but far from linear, S = 1.11, E = 0.28" in text
    assert "tp: no verdict; none of its runs has results (tp/r2 FAILED, tp/r4 NOT_SUBMITTED)." in text
    assert "key: o dp   x pp   . ideal (N x 1-GPU rate)" in text


def test_batch_sweep_says_where_pipeline_parallelism_paid_and_why(study_db):
    engine, ids = study_db
    text = section(build(engine, ids), "## 3. Batch sweep")
    assert "| 1 | 64.0 | 51.2 | 0.80 | 0.40 | 20.00 / 25.00 | 15.00 / 19.00 | 8.10 GiB / 4.05 GiB | 0.50 |" in text
    assert ("pp on 2 GPUs: faster than 1 GPU at batch sizes 16; paid for its 2 GPUs (E >= 0.9) at batch sizes 16."
            in text)
    # the reason comes from the profile study of the same report
    assert ("batch 1: did not pay for itself: S = 0.80, E = 0.40 (TPOT 19.00 ms vs 15.00 ms on 1 GPU; "
            "profiled ranks spend 45.0% computing, 10.0% communicating, 45.0% idle") in text
    assert "batch 16: paid for itself: S = 2.00, E = 1.00" in text
    for title in ("Output tokens/s vs batch size", "Peak memory of the largest rank", "TTFT (median)",
                  "TPOT (median)"):
        assert title in text


def test_profile_numbers(study_db):
    engine, ids = study_db
    text = section(build(engine, ids), "## 4. Profile")
    assert "| pp | 2 | 1 | 0 | 40.0% | 10.0% | 50.0% | 50.0 | 10.0 |" in text
    assert ("pp on 2 GPUs: at batch 1 ranks compute 45.0%, communicate 10.0% and sit idle 45.0% of the time "
            "(mean over ranks); at batch 16 ranks compute 85.0%, communicate 7.5% and sit idle 7.5%") in text
    assert "key: █ compute   ▒ communication   ░ idle" in text


def test_limitations_come_from_the_data(study_db):
    engine, ids = study_db
    text = section(build(engine, ids), "## Limitations")
    assert "scaling: 2 of 7 cells have no results (tp/r2 FAILED, tp/r4 NOT_SUBMITTED)" in text
    # why the failed cell failed: the failure summary (first rank to die, its node, its signal)
    assert ("scaling: tp/r2 FAILED: rank 1 on node2 died first: killed by signal 9 (SIGKILL); "
            "then rank 0 on node1: killed by signal 15 (SIGTERM)") in text
    # wall times 9.8..10.2 around 10.0 move 4%; 9.1..8.9 around 9.0 is 2.2%; 5.1..4.9 around 5.0 is 4%;
    # 2.6..2.4 around 2.5 is 8%: the largest spread is 8.0%
    assert "moved by up to 8.0% between repeats of one measurement (max - min over median; scaling:dp/r4 at batch 20)" in text
    assert "n = 1, 3 repeats" in text
    assert "quantization study is declared but not available" not in text  # the worker quantizes now


def test_findings_collect_every_verdict(study_db):
    engine, ids = study_db
    text = build(engine, ids)
    findings = section(text, "## Findings")
    for heading in ("## 1. Correctness", "## 2. Strong scaling", "## 3. Batch sweep", "## 4. Profile"):
        body = section(text, heading)
        verdict_lines = body.split("Verdict:\n\n", 1)[1].strip().splitlines()
        for line in verdict_lines:
            assert line in findings


def test_report_is_deterministic_across_runs_and_rebuilt_databases(study_db, tmp_path: Path):
    engine, ids = study_db
    first = build(engine, ids)
    assert build(engine, ids) == first
    other = make_engine(tmp_path / "again" / "dinf.db")
    try:
        again = build(other, fixture_db.build(other, tmp_path / "again" / "bundles"))
    finally:
        other.dispose()
    assert again == first


def test_write_report_with_png_charts(study_db, tmp_path: Path):
    pytest.importorskip("matplotlib")
    engine, ids = study_db
    with read_session(engine) as session:
        experiments = results.load_experiments(session, [ids["scaling"], ids["profile"]])
    out = tmp_path / "out" / "paper.md"
    written = report.write_report(experiments, out, png=True)
    text = out.read_text()
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 4  # scaling: tok/s and efficiency; profile: pp at batch 1 and 16
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](paper-charts/{png.name})" in text
    first_bytes = [p.read_bytes() for p in pngs]
    report.write_report(experiments, out, png=True)
    assert out.read_text() == text
    assert [p.read_bytes() for p in pngs] == first_bytes


def test_no_experiments_is_an_error():
    with pytest.raises(ValueError, match="name at least one experiment"):
        report.build_report([])


def test_superlinear_speedup_is_flagged_not_celebrated():
    from tui.studies.analysis import Point, ScalingRow

    base = Point(run_id=1, label="b", mode="single", num_gpus=1, num_nodes=1, batch_size=16, num_requests=64,
                 output_tokens=2048, wall_s=5.0)
    dp = Point(run_id=2, label="d", mode="dp", num_gpus=2, num_nodes=1, batch_size=16, num_requests=64,
               output_tokens=2048, wall_s=1.9)
    row = ScalingRow(point=dp, n=2, speedup=5.0 / 1.9, efficiency=5.0 / 3.8, throughput_scaling=None,
                     memory_ratio=None)
    text = report._scaling_verdict("dp", row, base, weak=False)
    assert text.startswith("dp on 2 GPUs: no verdict; S = 2.63, E = 1.32")
    assert "More GPUs alone cannot give E > 1" in text and "scales" not in text


def _store(engine, plan, walls_and_requests, tmp_path):
    from storage.db import write_session
    from tests.experiments import bundles

    dirs = {}
    for cell in plan.cells:
        wall, requests = walls_and_requests[cell.key]
        per_rank = [bundles.rank_record(r, peak=bundles.GIB) for r in range(cell.num_ranks)]
        m = bundles.measurement(batch_size=cell.spec.batch_sizes[0], num_requests=requests,
                                max_new_tokens=cell.spec.max_new_tokens, wall_s=wall, ttft_s=0.1, tpot_s=0.01,
                                per_rank=per_rank, num_gpus=cell.num_ranks)
        result = bundles.result(cell.spec.to_dict(), world_size=cell.num_ranks, num_gpus=cell.num_ranks,
                                measurements=[m])
        dirs[cell.key] = bundles.write_bundle(tmp_path / plan.name / cell.key.replace("/", "_"), result)
    with write_session(engine) as session:
        return bundles.store_experiment(session, plan, dirs)


def test_weak_scaling_section(tmp_path):
    from tui.studies import catalog
    from tui.studies import presets as ex
    from worker.contract import ModelSource

    engine = make_engine(tmp_path / "weak.db")
    plan = catalog.plan("weak_scaling", ex.StudyConfig.of(
        name="weak", model=ModelSource(config="tiny"), modes=("dp", "pp"), num_requests=20, rank_counts=(1, 2),
        shape=ex.ClusterShape(nodes=1, ranks_per_node=2)))
    # 20 requests in 10 s on 1 GPU; 40 requests in 12.5 s with dp (E_w 0.8), in 25 s with pp (E_w 0.4)
    exp_id = _store(engine, plan, {"single/r1": ([10.0], 20), "dp/r2": ([12.5], 40), "pp/r2": ([25.0], 40)},
                    tmp_path)
    text = build(engine, {"weak": exp_id})
    engine.dispose()
    assert "## 1. Weak scaling: weak" in text
    assert "| dp | 2 | 1 | 40 | 12.500 (n=1) | 12.500–12.500, no interval (n=1) | 204.8 | 0.80 | 0.80 | 1.00 |" in text
    assert "dp on 2 GPUs: weak scaling holds, E_w = 0.80" in text
    assert "pp on 2 GPUs: weak scaling breaks down, E_w = 0.40" in text


def test_sweep_section_names_the_best_cell(tmp_path):
    from remote.cluster import Resources
    from tui.studies import presets as ex
    from worker.contract import ModelSource, RunSpec

    engine = make_engine(tmp_path / "sweep.db")
    base = RunSpec(model=ModelSource(config="tiny"), mode="pp", batch_sizes=[4], max_new_tokens=8)
    plan = ex.plan_sweep("mb", base, Resources(tasks_per_node=2), {"micro_batches": [1, 2]})
    exp_id = _store(engine, plan, {"micro_batches=1": ([2.0], 8), "micro_batches=2": ([1.6], 8)}, tmp_path)
    text = build(engine, {"mb": exp_id})
    engine.dispose()
    assert "Cartesian sweep over micro_batches = [1, 2]." in text
    assert "| micro_batches=2 | COMPLETED | 4 | 40.0 |" in text
    assert "mb, batch 4: highest output rate 40.0 tok/s with micro_batches=2." in text


def test_profile_section_draws_each_timeline_and_states_its_bubble(tmp_path):
    """The timeline a real 2-process pp run recorded (tests/tui/timeline_pp2_cpu.json), in a profile study."""
    import json

    from storage.db import write_session
    from tests.experiments import bundles
    from tui.studies import catalog
    from tui.studies import presets as ex
    from tui.studies.timeline import bubble_fraction, timeline_from
    from worker.contract import ModelSource

    recorded = json.loads((Path(__file__).parents[1] / "tui" / "timeline_pp2_cpu.json").read_text())
    plan = catalog.plan("profile", ex.StudyConfig.of(name="prof", model=ModelSource(config="tiny"), modes=("pp",),
                                             batch_sizes=(4,), num_requests=8, micro_batches=2,
                                             shape=ex.ClusterShape(nodes=1, ranks_per_node=2)))
    dirs = {}
    for cell in plan.cells:
        per_rank = [bundles.rank_record(r, peak=bundles.GIB, compute=1.0, comm=2.0, idle=1.0)
                    for r in range(cell.num_ranks)]
        m = bundles.measurement(batch_size=4, num_requests=8, max_new_tokens=6, wall_s=[4.0], ttft_s=0.1,
                                tpot_s=0.05, per_rank=per_rank, num_gpus=cell.num_ranks)
        if cell.spec.mode == "pp":
            m["timeline"] = recorded["timeline"]
        result = bundles.result(cell.spec.to_dict(), world_size=cell.num_ranks, num_gpus=cell.num_ranks,
                                measurements=[m])
        dirs[cell.key] = bundles.write_bundle(tmp_path / cell.key.replace("/", "_"), result)
    engine = make_engine(tmp_path / "prof.db")
    with write_session(engine) as session:
        exp_id = bundles.store_experiment(session, plan, dirs)
    text = section(build(engine, {"prof": exp_id}), "## 1. Profile: prof")
    engine.dispose()
    timeline = timeline_from(recorded["timeline"])
    expected = ", ".join(f"rank {r.rank} {bubble_fraction(r, timeline.window_s) * 100:.0f}%" for r in timeline.ranks)
    assert f"- pp x2, batch 4: bubble over 4 decode steps: {expected}." in text
    block = text[text.index("```text\npp x2, batch 4: 4 decode steps x 2 micro-batches"):]
    rows = [line for line in block.splitlines()[:8] if line.startswith("rank ")]
    assert [r[:8] for r in rows] == ["rank 0 |", "rank 1 |"] and all(len(r) <= 80 for r in rows)
    assert "A rank's bubble is the share of those steps' wall time it spent not computing" in text
