"""Ingest a bundle the real worker just wrote (`python -m worker run`, tiny synthetic model, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import func, select

from storage import repo
from storage.db import read_session, write_session
from storage.ingest import ingest_bundle
from storage.models import STAT_COLUMNS, STAT_PARTS, Completion, Measurement, RankStat, Run

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_worker(out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "worker", "run", "--synthetic-config", "tiny", "--mode", "single",
        "--batch-sizes", "1,2", "--max-new-tokens", "3", "--num-requests", "2", "--warmup", "0",
        "--repeats", "2", "--device", "cpu", "--run-name", "real-bundle", "--out", str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_real_worker_bundle_ingests_once(engine, tmp_path):
    out = tmp_path / "out"
    run_worker(out)
    # `compare` writes comparison.json into the run's directory; against itself every token matches.
    done = subprocess.run([sys.executable, "-m", "worker", "compare", str(out), str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "result.json").read_text())
    for _ in range(2):
        with write_session(engine) as session:
            report = ingest_bundle(session=session, bundle_dir=out)
            session.commit()
    assert report.measurements == len(result["measurements"]) == 2
    with read_session(engine) as session:
        counts = {t.__name__: session.exec(select(func.count()).select_from(t)).one()
                  for t in (Run, Measurement, RankStat, Completion)}
        assert counts == {"Run": 1, "Measurement": 2, "RankStat": 2, "Completion": 4}
        correctness = repo.correctness_for_runs(session=session, run_ids=[report.run_id])
        assert [(c.batch_size, c.num_prompts, c.exact_match_rate) for c in correctness] == [
            (-1, 4, 1.0), (1, 2, 1.0), (2, 2, 1.0)]
        run = repo.get_run(session=session, run_id=report.run_id)
        assert run.name == "real-bundle" and run.mode == "single"
        # the engine as the worker reported it (a worker from before the fast path reports none: reference)
        reported = result.get("engine") or {"impl": "reference", "compiled": False, "cuda_graphs": False,
                                            "capture_s": None}
        assert (run.engine_impl, run.engine_compiled, run.engine_cuda_graphs, run.engine_capture_s) == (
            reported["impl"], reported["compiled"], reported["cuda_graphs"], reported["capture_s"])
        rows = repo.measurements_for_runs(session=session, run_ids=[run.id])
        for row, record in zip(rows, result["measurements"]):
            assert row.batch_size == record["batch_size"]
            assert row.ttft_median_s == record["ttft_s"]["median"]
            assert row.itl_n == record["itl_s"]["n"]
            assert row.output_throughput_tok_s == record["output_throughput_tok_s"]
            assert row.output_tokens == record["output_tokens"] == 2 * 3
            for field, prefix in STAT_COLUMNS.items():  # every part of every latency Stat, p99 to max
                for part, suffix in STAT_PARTS.items():
                    assert getattr(row, f"{prefix}_{suffix}") == record[field][part], (field, part)
            assert row.ttft_min_s <= row.ttft_median_s <= row.ttft_p99_s <= row.ttft_max_s
            assert row.itl_std_s is not None  # 2 repeats x 2 requests x 2 gaps
