"""The issue-9 GPU table's own logic, on synthetic result records (no GPU, no worker runs).

tests/benchmarks/gpu_worker_table.py is run by hand on a lent GPU machine; what decides its verdicts —
cell planning, the roofline, the target ratios with pass/fail, the flags for impossible figures,
exactness beside the noise floor, failure reasons, reading cells back — is checked here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_worker_table as table

GB = 1e9
A, B, C = "card-a", "card-b", "card-c"


def stat(median, lo=None, hi=None):
    s = {"n": 10, "median": median, "p90": median * 1.1, "mean": median, "ci95": None}
    if lo is not None:
        s.update(min=lo, max=hi)
    return s


def comp(bs, idx, ids, topk=None):
    return {"batch_size": bs, "index": idx, "output_ids": ids, "topk_ids": topk or [[i, 9, 8, 7, 6] for i in ids]}


def row(tok_s, tpot_s, ttft_s=0.05, completions=None, engine=None, raw=None):
    return {"tok_s": tok_s, "tok_s_raw": raw or [tok_s * 0.98, tok_s, tok_s * 1.01], "tpot": stat(tpot_s),
            "ttft": stat(ttft_s), "capture_s": 3.0, "engine": engine or {"impl": "fast", "compiled": True,
                                                                         "cuda_graphs": True, "capture_s": 3.0},
            "requests": 16, "repeats": 3, "micro_batches": None, "completions": completions or {}}


def cell(name, rows, cards, world=1, mode="single", impl="fast", status="ok", reason=None, failed=None):
    meta = {"cell": name, "label": table.CELLS[name].label, "world": world, "mode": mode, "impl": impl,
            "cards": cards, "status": status, "reason": reason, "micro_batches": table.CELLS[name].micro_batches}
    return {"meta": meta, "rows": rows, "failed": failed or {}}


def data(**cells):
    # 6.85 GB of weights at 4.28 TB/s: a 1.6 ms roofline step.
    return {"copy_bw": {A: {"name": "H200", "bandwidth_Bps": 4.28e12, "min_bandwidth_Bps": 4.2e12,
                            "max_bandwidth_Bps": 4.3e12},
                        B: {"name": "H200", "bandwidth_Bps": 4.28e12, "min_bandwidth_Bps": 4.2e12,
                            "max_bandwidth_Bps": 4.3e12}},
            "weight_bytes": 6.85 * GB, "setup": None, "cells": dict(cells)}


def good_run():
    same = {(bs, i): comp(bs, i, [1, 2, 3]) for bs in (8, 64) for i in range(20)}
    single = cell("single-fast", {
        1: row(380.0, 0.0025),  # 1.6 / 2.5 = 64% of the roofline
        8: row(2900.0, 0.0027, completions={k: v for k, v in same.items() if k[0] == 8}),
        64: row(9000.0, 0.0070, completions={k: v for k, v in same.items() if k[0] == 64}),
    }, [A])
    static = cell("hf-static", {1: row(180.0, 0.0055), 64: row(3500.0, 0.018)}, [A], impl=None)
    pp = cell("pp2-m2", {64: row(8800.0, 0.0140)}, [A, B], world=2, mode="pp")
    dp = cell("dp2-fast", {1: row(700.0, 0.0026), 8: row(5600.0, 0.0028), 64: row(17500.0, 0.0072)}, [A, B],
              world=2, mode="dp")
    tp = cell("tp2-fast", {1: row(520.0, 0.0018)}, [A, B], world=2, mode="tp")
    return data(**{"single-fast": single, "hf-static": static, "pp2-m2": pp, "dp2-fast": dp, "tp2-fast": tp})


def by_name(checks):
    return {c["name"]: c for c in checks}


def test_roofline_and_targets_pass_and_fail():
    d = good_run()
    step, same = table.roofline_step_s(d, "single-fast")
    assert step == pytest.approx(6.85e9 / 4.28e12) and same
    assert table.pct_roofline(d, "single-fast", 1) == pytest.approx(step / 0.0025)
    # tp's roofline is the shard: half the weights per card.
    assert table.roofline_step_s(d, "tp2-fast")[0] == pytest.approx(step / 2)

    checks = by_name(table.ratio_checks(d, [1, 8, 64]))
    assert checks["single fast bs 1: % of HBM roofline"]["passed"] is True
    assert checks["single fast bs 1 / HF static bs 1 (tok/s)"]["value"] == pytest.approx(380 / 180)
    assert checks["single fast bs 1 / HF static bs 1 (tok/s)"]["passed"] is True
    assert checks["single fast bs 64 / HF static bs 64 (tok/s)"]["value"] == pytest.approx(9000 / 3500)
    assert checks["pp2-m2 bs 64 / single fast bs 64 (tok/s)"]["passed"] is True  # 0.978 >= 0.95
    assert checks["pp2-m4 bs 64 / single fast bs 64 (tok/s)"]["passed"] is None  # not measured
    assert checks["dp2 bs 1 (per replica) / single fast bs 1 (tok/s)"]["passed"] is False  # 1.84 < 1.9
    assert checks["dp2 bs 8 (per replica) / single fast bs 8 (tok/s)"]["passed"] is True
    tp = checks["tp2 fast bs 1 TPOT / single fast bs 1 TPOT"]
    assert tp["value"] == pytest.approx(0.72) and tp["passed"] is True
    assert all(not c["note"] for c in checks.values())  # everything on the same card
    assert table.implausible(d, [1, 8, 64]) == []


def test_cross_card_ratios_and_impossible_figures_are_said_in_words():
    d = good_run()
    d["cells"]["hf-static"]["meta"]["cards"] = [C]  # HF static measured on another machine's card
    d["cells"]["single-fast"]["rows"][1]["tpot"] = stat(0.0012)  # faster than streaming the weights once
    d["cells"]["dp2-fast"]["rows"][64]["tok_s"] = 19000.0  # 2.1x single on 2 GPUs
    checks = by_name(table.ratio_checks(d, [1, 8, 64]))
    assert "different cards" in checks["single fast bs 1 / HF static bs 1 (tok/s)"]["note"]
    flags = "\n".join(table.implausible(d, [1, 8, 64]))
    assert "single-fast bs 1" in flags and "roofline" in flags
    assert "dp2-fast bs 64" in flags and "efficiency above 1" in flags
    text = table.build_table(d, [1, 8, 64])
    assert "Impossible-looking figures" in text and "(!)" in text


def test_table_shows_failures_skips_exactness_and_noise_floor():
    d = good_run()
    # tp2-fast diverges on request 3 at bs 1, with both tokens in the other's top-5.
    base1 = {(1, i): comp(1, i, [1, 2, 3]) for i in range(2)}
    d["cells"]["single-fast"]["rows"][1]["completions"] = base1
    d["cells"]["tp2-fast"]["rows"][1]["completions"] = {
        (1, 0): comp(1, 0, [1, 2, 3]),
        (1, 1): comp(1, 1, [1, 9, 3], topk=[[1], [9, 2], [3]]),
    }
    d["cells"]["single-fast"]["rows"][64]["completions"][(64, 5)] = comp(64, 5, [1, 4, 4])  # noise: 19/20
    d["cells"]["ds-inject"] = cell(
        "ds-inject", {}, [A], impl=None, status="failed",
        reason="Assertion `padded_head_size <= hw_warp_size * T_per_elem' failed.",
        failed={1: "Assertion `padded_head_size <= hw_warp_size * T_per_elem' failed."})
    d["cells"]["tp2-ref"] = cell("tp2-ref", {}, [C], world=2, mode="tp", impl="reference", status="skipped",
                                 reason="skipped on CPU")
    text = table.build_table(d, [1, 8, 64], "GPU: test")
    assert "does not run: Assertion `padded_head_size" in text
    assert "skipped: skipped on CPU" in text
    tp_row = next(ln for ln in text.splitlines() if ln.startswith("| dinf tp 2, fast | 2 | 1 |"))
    assert "| 1/2 | 1/1 |" in tp_row  # exact 1 of 2, top-5 agree at 1 of 1 divergence
    assert "single fast at bs 8 vs bs 64" in text and "19/20 exact" in text
    assert "- PASS: single fast bs 1: % of HBM roofline = 64.0%" in text
    assert "- FAIL: dp2 bs 1 (per replica)" in text
    assert "- NOT MEASURED: pp2-m4 bs 64" in text


def test_engine_reported_against_the_impl_asked_for():
    meta = {"impl": "fast", "mode": "single"}
    assert table.engine_text({"engine": {"impl": "fast", "compiled": True, "cuda_graphs": True}}, meta) == \
        "fast, compiled, graphs"
    assert "asked for fast" in table.engine_text({"engine": {"impl": "reference"}}, meta)
    assert table.engine_text({"engine": {"impl": "deepspeed"}}, {"impl": "reference", "mode": "tp"}) == "deepspeed"
    assert table.engine_text({"engine": None}, {"impl": "fast", "impl_flag": False}).startswith("not reported")


def plan_args(**kw):
    args = table.parse_args(["--out", "/tmp/unused", *kw.pop("argv", [])])
    for k, v in kw.items():
        setattr(args, k, v)
    table.default_requests(args)
    return args


def test_plan_groups_batches_and_sizes_requests():
    args = plan_args(per_batch_requests=False)
    single = table.invocations(args, table.CELLS["single-fast"])
    assert [(i["batch_sizes"], i["requests"]) for i in single] == [([1, 8], 16), ([64, 128], 128)]
    dp = table.invocations(args, table.CELLS["dp2-fast"])
    assert [(i["batch_sizes"], i["requests"]) for i in dp] == [([1, 8], 32), ([64, 128], 256)]  # 2x single's
    pp4 = table.invocations(args, table.CELLS["pp2-m4"])
    assert [(i["batch_sizes"], i["micro_batches"]) for i in pp4] == [([8], 4), ([64, 128], 4)]  # no bs 1: M = 1
    pp2 = table.invocations(args, table.CELLS["pp2-m2"])
    assert [(i["batch_sizes"], i["micro_batches"]) for i in pp2] == [([1], 1), ([8], 2), ([64, 128], 2)]
    # Requests are whole batches, never fewer than one batch.
    args = plan_args(argv=["--requests-fast", "1:3,8:20,64:10"], batch_size_list=[1, 8, 64])
    assert [table.requests_for(args, table.CELLS["single-fast"], b) for b in (1, 8, 64)] == [3, 24, 64]
    # With per-batch request counts in the worker, one run per cell (per micro-batch count).
    args = plan_args(per_batch_requests=True)
    assert [(i["batch_sizes"], i["requests"]) for i in table.invocations(args, table.CELLS["single-fast"])] == \
        [([1, 8, 64, 128], [8, 16, 128, 128])]
    assert [(i["batch_sizes"], i["requests"]) for i in table.invocations(args, table.CELLS["tp2-ref"])] == \
        [([1, 8, 64, 128], [1, 8, 64, 128])]
    assert table.estimate_s(plan_args(per_batch_requests=False), table.CELLS["hf-static"]) > 4 * 46


def test_cells_and_groups():
    call1 = table.selected_cells("call1")
    assert [(c.name, c.only) for c in call1[:2]] == [("single-fast", None), ("hf-static", (1, 64))]
    assert (call1[-1].name, call1[-1].only) == ("hf-static", None)  # the rest of HF static, last
    assert all(c.world == 1 for c in call1)
    both = {c.name for c in table.selected_cells("call1,call2")}
    assert both == set(table.CELLS) - {"copy-bw"}  # the two calls make the whole table
    assert {c.name for c in table.selected_cells("all")} == both  # copy-bw always runs, never selected
    args = plan_args(per_batch_requests=False)
    assert table.cell_batch_sizes(args, table.selected_cells("pp2-m4:1+64")[0]) == [64]  # min_bs still applies
    with pytest.raises(SystemExit):
        table.selected_cells("single-fats")


def test_failure_reason_prefers_the_real_cause():
    stderr = """Building extension module transformer_inference...
[1/9] c++ ... ok
python3: /tmp/apply_rotary_pos_emb.cu:105: Assertion `padded_head_size <= hw_warp_size * T_per_elem' failed.
"""
    assert table.failure_reason(stderr, -6).startswith("python3: /tmp/apply_rotary_pos_emb.cu:105: Assertion")
    tb = "Traceback (most recent call last):\n  File x\nValueError: invalid literal for int() with base 10: '0a'\n"
    assert table.failure_reason(tb, 1) == "ValueError: invalid literal for int() with base 10: '0a'"
    assert table.failure_reason("", 124) == "timed out"
    assert "SIGKILL" in table.failure_reason("", -9)


def test_exact_length_prompts():
    count = lambda text: 1 + len(text.split())  # <s> + one token per word
    text = table.exact_length_text(count, "Hello", 12, offset=3)
    assert count(text) == 12 and text.startswith("Hello ")
    long_base = " ".join(["word"] * 40)
    assert count(table.exact_length_text(count, long_base, 12, offset=0)) == 12  # a long prompt is cut


def test_results_read_back_from_disk(tmp_path: Path):
    """cell.json + result.json as the runs write them, including an HF cell cut by the deadline after bs 1."""
    out = tmp_path / "out"
    run = out / "single-fast" / "r16-bs1-8"
    run.mkdir(parents=True)
    m = {"batch_size": 1, "num_requests": 16, "repeats": 3, "output_throughput_tok_s": 400.0,
         "raw": {"output_throughput_tok_s": [390.0, 400.0, 410.0]}, "tpot_s": stat(0.0024), "ttft_s": stat(0.01)}
    (run / "result.json").write_text(json.dumps({"engine": {"impl": "fast", "capture_s": 4.0},
                                                 "environment": {"gpu_model": "H200"}, "measurements": [m]}))
    (run / "completions.jsonl").write_text("".join(json.dumps(comp(1, i, [5, 6])) + "\n" for i in range(25)))
    (out / "single-fast" / "cell.json").write_text(json.dumps({
        "cell": "single-fast", "label": "dinf single, fast", "world": 1, "mode": "single", "impl": "fast",
        "cards": [A], "status": "partial", "reason": None,
        "invocations": [{"name": "r16-bs1-8", "batch_sizes": [1, 8], "requests": 16, "micro_batches": 1,
                         "status": "ok"}]}))
    (out / "copy-bw" / "x").mkdir(parents=True)
    (out / "copy-bw" / "x" / "copy_bw.json").write_text(json.dumps({"cards": [
        {"uuid": A, "name": "H200", "bandwidth_Bps": 4e12, "min_bandwidth_Bps": 3.9e12, "max_bandwidth_Bps": 4.1e12}]}))
    (out / "setup.json").write_text(json.dumps({"weight_bytes": 6.85e9, "batch_sizes": [1, 8]}))
    d = table.load_all([out])
    r = d["cells"]["single-fast"]["rows"][1]
    assert r["tok_s"] == 400.0 and r["capture_s"] == 4.0 and len(r["completions"]) == 20  # first 20 only
    assert 8 in d["cells"]["single-fast"]["failed"]
    assert table.pct_roofline(d, "single-fast", 1) == pytest.approx(6.85e9 / 4e12 / 0.0024)
    args = argparse.Namespace(out=out, also=[], batch_size_list=[1, 8], device="cuda", config="c", dtype="float16",
                              prompt_tokens=128, max_new_tokens=128, repeats=3)
    text = table.write_table(args)
    assert (out / "table.md").read_text().strip() == text.strip()
    assert "400.0 (390.0–410.0)" in text and "GPU: H200" in text


def test_hf_cell_resumes_only_missing_batch_sizes(tmp_path: Path, monkeypatch):
    """--reuse keeps HF batch sizes measured on this card (even by a run the deadline cut) and runs only the rest."""
    cdir = tmp_path / "hf-static"
    (cdir / "run-bs1-64-8").mkdir(parents=True)
    (cdir / "run-bs1-64-8" / "result.json").write_text(json.dumps({"measurements": [{"batch_size": 1},
                                                                                  {"batch_size": 64}]}))
    old = {"invocations": [{"name": "run-bs1-64-8", "batch_sizes": [1, 64, 8], "status": "partial", "cards": [A]}]}
    ran = []
    monkeypatch.setattr(table, "run_hf_sizes", lambda *a: ran.append(a[-1]) or {"name": "new", "status": "ok"})
    args = plan_args(reuse=True, batch_size_list=[1, 8, 64])
    cell_ = table.CELLS["hf-static"]
    invs = table.run_hf_cell(args, cell_, None, None, cdir, old, [A, B], None)
    assert ran == [[8]] and invs[0]["reused"] and invs[1]["name"] == "new"
    ran.clear()
    args.batch_size_list = [1, 64]
    assert [i["name"] for i in table.run_hf_cell(args, cell_, None, None, cdir, old, [A], None)] == ["run-bs1-64-8"]
    assert ran == []
    table.run_hf_cell(args, cell_, None, None, cdir, old, [C], None)  # another machine: measure again
    assert ran == [[1, 64]]
