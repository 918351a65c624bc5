"""Ingesting result bundles: every field lands in its column, and re-ingesting adds nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlmodel import func, select

from storage import repo
from storage.db import read_session, write_session
from storage.ingest import IngestError, ingest_bundle
from storage.models import (
    IMPORTED,
    Completion,
    CorrectnessResult,
    Measurement,
    RankStat,
    Run,
    RunRank,
)

TABLES = (Run, Measurement, RankStat, RunRank, Completion, CorrectnessResult)


def row_counts(engine) -> dict[str, int]:
    with read_session(engine) as session:
        return {t.__name__: session.exec(select(func.count()).select_from(t)).one() for t in TABLES}


def ingest(engine, bundle: Path, run_id: int | None = None):
    with write_session(engine) as session:
        run = None if run_id is None else repo.get_run(session=session, run_id=run_id)
        report = ingest_bundle(session=session, bundle_dir=bundle, run=run)
        session.commit()
        return report


def test_fields_land_in_columns(engine, bundle_dir):
    report = ingest(engine, bundle_dir)
    assert report.created_run and report.measurements == 2 and report.completions == 4
    assert report.correctness == 3
    result = json.loads((bundle_dir / "result.json").read_text())
    with read_session(engine) as session:
        run = repo.get_run(session=session, run_id=report.run_id)
        assert run.state == IMPORTED and run.mode == "pp" and run.num_ranks == 2 and run.num_gpus == 2
        assert run.load_time_s == result["load_time_s"]
        rows = repo.measurements_for_runs(session=session, run_ids=[run.id])
        assert [m.batch_size for m in rows] == [1, 2]
        for row, record in zip(rows, result["measurements"]):
            for field, prefix in (("ttft_s", "ttft"), ("tpot_s", "tpot"), ("itl_s", "itl"), ("e2e_s", "e2e"),
                                  ("prefill_latency_s", "prefill")):
                stat = record[field]
                assert getattr(row, f"{prefix}_median_s") == stat["median"]
                assert getattr(row, f"{prefix}_p90_s") == stat["p90"]
                assert getattr(row, f"{prefix}_mean_s") == stat["mean"]
                assert getattr(row, f"{prefix}_ci95_s") == stat["ci95"]
                assert getattr(row, f"{prefix}_n") == stat["n"]
                for part in ("p99", "std", "min", "max"):  # this bundle's worker wrote none: blank, not zero
                    assert part not in stat and getattr(row, f"{prefix}_{part}_s") is None
            for key in ("decode_throughput_tok_s", "output_throughput_tok_s", "total_throughput_tok_s",
                        "per_gpu_output_tok_s", "prompt_tokens", "output_tokens", "repeats"):
                assert getattr(row, key) == record[key]
            assert json.loads(row.wall_s_json) == record["wall_s"]
            assert json.loads(row.raw_json) == record
            assert row.load_time_s == result["load_time_s"]
        stats = repo.rank_stats_for_measurements(session=session, measurement_ids=[m.id for m in rows])
        assert len(stats) == 4
        first = result["measurements"][0]["per_rank"][1]
        assert (stats[1].rank, stats[1].peak_rss_bytes, stats[1].bubble_pct) == (
            1, first["peak_rss_bytes"], first["bubble_pct"])
        ranks = repo.ranks_for_run(session=session, run_id=run.id)
        assert [(r.rank, r.first_layer, r.last_layer_exclusive) for r in ranks] == [(0, 0, 2), (1, 2, 4)]
        completions = repo.completions_for_run(session=session, run_id=run.id, batch_size=2)
        assert [c.index for c in completions] == [0, 1]
        assert json.loads(completions[0].output_ids_json) == [11, 12, 13, 14]
        correctness = repo.correctness_for_runs(session=session, run_ids=[run.id])
        assert [(c.batch_size, c.num_prompts, c.num_exact, c.exact_match_rate) for c in correctness] == [
            (-1, 4, 2, 0.5), (1, 2, 1, 0.5), (2, 2, 1, 0.5)]  # -1: the whole run
        assert json.loads(correctness[1].first_divergences_json) == [None, 3]
        assert [c.topk_agreement_rate for c in correctness] == [1.0, 1.0, 1.0]
        assert {c.reference for c in correctness} == {"fixture-single"}


def test_reingest_adds_nothing(engine, bundle_dir):
    first = ingest(engine, bundle_dir)
    counts = row_counts(engine)
    second = ingest(engine, bundle_dir)
    assert second.run_id == first.run_id and not second.created_run
    assert row_counts(engine) == counts


def test_reingest_into_submitted_run_updates_in_place(engine, bundle_dir, tmp_path):
    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="r-1", name="r", mode="pp", spec={}, num_ranks=2)
        session.commit()
        run_id = run.id
    ingest(engine, bundle_dir, run_id)
    counts = row_counts(engine)
    # The same run's results fetched again, with one number changed: updated, not duplicated.
    changed = tmp_path / "bundle"
    shutil.copytree(bundle_dir, changed)
    result = json.loads((changed / "result.json").read_text())
    result["measurements"][0]["output_throughput_tok_s"] = 99.5
    (changed / "result.json").write_text(json.dumps(result))
    ingest(engine, changed, run_id)
    assert row_counts(engine) == counts
    with read_session(engine) as session:
        rows = repo.measurements_for_runs(session=session, run_ids=[run_id])
        assert rows[0].output_throughput_tok_s == 99.5


def test_one_bundle_cannot_belong_to_two_runs(engine, bundle_dir):
    with write_session(engine) as session:
        first = repo.create_run(session=session, uid="r-1", name="r", mode="pp", spec={})
        second = repo.create_run(session=session, uid="r-2", name="r", mode="pp", spec={})
        session.commit()
    ingest(engine, bundle_dir, first.id)
    with pytest.raises(IngestError, match=f"already stored as run {first.id} \\(r-1\\), not run {second.id}"):
        ingest(engine, bundle_dir, second.id)


def test_bad_bundle_names_field_and_writes_nothing(engine, bundle_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    result = json.loads((broken / "result.json").read_text())
    result["measurements"][1]["ttft_s"]["median"] = "fast"
    (broken / "result.json").write_text(json.dumps(result))
    with pytest.raises(IngestError, match=r"measurements\[1\]\.ttft_s\.median must be a number"):
        ingest(engine, broken)
    assert all(count == 0 for count in row_counts(engine).values())


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: r.update(measurements={"batch_size": 1}), r"measurements must be a list"),
        (lambda r: r["measurements"][0]["per_rank"].__setitem__(0, 7), r"measurements\[0\]\.per_rank\[0\] must be an object"),
        (lambda r: r.update(ranks="0,1"), r"ranks must be a list"),
        (lambda r: r["ranks"].append(None), r"ranks\[\d+\] must be an object"),
    ],
    ids=["measurements-not-list", "per-rank-item", "ranks-not-list", "ranks-item"],
)
def test_misshapen_lists_name_the_field_and_write_nothing(engine, bundle_dir, tmp_path, break_it, message):
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    result = json.loads((broken / "result.json").read_text())
    break_it(result)
    (broken / "result.json").write_text(json.dumps(result))
    with pytest.raises(IngestError, match=message):
        ingest(engine, broken)
    assert all(count == 0 for count in row_counts(engine).values())


def test_other_schema_version_refused(engine, bundle_dir, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(bundle_dir, newer)
    result = json.loads((newer / "result.json").read_text())
    result["schema_version"] = 99
    (newer / "result.json").write_text(json.dumps(result))
    with pytest.raises(IngestError, match="schema version 99"):
        ingest(engine, newer)


def test_foreign_comparison_refused(engine, bundle_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bundle_dir, other)
    (other / "comparison.json").write_text('{"kind": "something.else"}')
    with pytest.raises(IngestError, match="not a dinf comparison"):
        ingest(engine, other)


def test_missing_result_file(engine, tmp_path):
    with pytest.raises(IngestError, match="no result.json"):
        ingest(engine, tmp_path)


def _engine_columns(engine, run_id: int) -> tuple:
    with read_session(engine) as session:
        run = repo.get_run(session=session, run_id=run_id)
        return run.engine_impl, run.engine_compiled, run.engine_cuda_graphs, run.engine_capture_s


def _with_result(bundle_dir: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "changed"
    shutil.copytree(bundle_dir, copy)
    result = json.loads((copy / "result.json").read_text())
    change(result)
    (copy / "result.json").write_text(json.dumps(result))
    return copy


def test_bundle_without_engine_ran_the_reference_eagerly(engine, bundle_dir):
    assert "engine" not in json.loads((bundle_dir / "result.json").read_text())
    report = ingest(engine, bundle_dir)
    assert _engine_columns(engine, report.run_id) == ("reference", False, False, None)


def test_bundle_engine_replaces_what_the_spec_asked(engine, bundle_dir, tmp_path):
    with write_session(engine) as session:  # asked for the fast path, compiled, with CUDA graphs
        run = repo.create_run(session=session, uid="r-1", name="r", mode="pp", num_ranks=2,
                              spec={"mode": "pp", "impl": "fast", "compile": True, "cuda_graphs": True})
        session.commit()
    assert _engine_columns(engine, run.id) == ("fast", True, True, None)
    # ... and the worker reports what ran: here eagerly, graphs captured in 41.25 s
    engine_json = {"impl": "fast", "compiled": False, "cuda_graphs": True, "capture_s": 41.25}
    ingest(engine, _with_result(bundle_dir, tmp_path, lambda r: r.update(engine=engine_json)), run.id)
    assert _engine_columns(engine, run.id) == ("fast", False, True, 41.25)


def test_bundle_engine_of_deepspeed_with_no_capture(engine, bundle_dir, tmp_path):
    engine_json = {"impl": "deepspeed", "compiled": False, "cuda_graphs": False, "capture_s": None}
    report = ingest(engine, _with_result(bundle_dir, tmp_path, lambda r: r.update(engine=engine_json)))
    assert _engine_columns(engine, report.run_id) == ("deepspeed", False, False, None)


@pytest.mark.parametrize(
    ("engine_json", "message"),
    [
        ("fast", r"engine must be an object"),
        ({"compiled": True}, r"engine\.impl must be a non-empty string"),
        ({"impl": "fast", "compiled": "yes"}, r"engine\.compiled must be true or false"),
        ({"impl": "fast", "cuda_graphs": 1}, r"engine\.cuda_graphs must be true or false"),
        ({"impl": "fast", "capture_s": "41 s"}, r"engine\.capture_s must be a number"),
    ],
    ids=["not-object", "no-impl", "compiled-text", "graphs-int", "capture-text"],
)
def test_misshapen_engine_names_the_field_and_writes_nothing(engine, bundle_dir, tmp_path, engine_json, message):
    with pytest.raises(IngestError, match=message):
        ingest(engine, _with_result(bundle_dir, tmp_path, lambda r: r.update(engine=engine_json)))
    assert all(count == 0 for count in row_counts(engine).values())


def test_a_cpu_runs_per_device_rate_is_per_rank(engine, bundle_dir, tmp_path):
    # a 2-rank CPU bundle from a worker that divided by max(num_gpus, 1) = 1 (a copy: the fixture stays as committed)
    def as_cpu_run(result):
        result.update(num_gpus=0, world_size=2)
        for m in result["measurements"]:
            m["per_gpu_output_tok_s"] = m["output_throughput_tok_s"]

    copy = _with_result(bundle_dir, tmp_path, as_cpu_run)
    result = json.loads((copy / "result.json").read_text())
    report = ingest(engine, copy)
    with read_session(engine) as session:
        rows = repo.measurements_for_runs(session=session, run_ids=[report.run_id])
        assert [r.per_gpu_output_tok_s for r in rows] == [m["output_throughput_tok_s"] / 2
                                                         for m in result["measurements"]]
