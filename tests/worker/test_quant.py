"""Weight-only quantization (worker/quant.py) and the scorer that judges it (worker/score.py), on CPU.

int8 runs through the real CLI in single and in a 2-process pipeline (gloo); int4 needs CUDA and is
refused here before any work starts (its kernel is checked by tests/benchmarks/gpu_quant.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.worker.conftest import (
    COMMON_RUN_ARGS,
    launcher_output,
    read_completions,
    run_cli,
    start_slurm_ranks,
    wait_all,
)
from worker import quant
from worker.checkpoint import SyntheticTensors, llama_config
from worker.contract import MODEL_CONFIGS
from worker.generate import Picker
from worker.llama import fast_parameter_bytes, load_fast_stage
from worker.partition import StagePlan
from worker.runner import read_prompts
from worker.score import score
from worker.tokenizer import encode_prompt, load_tokenizer

CPU = torch.device("cpu")
CFG = MODEL_CONFIGS["tiny"]
# Measured on the tiny config, 20 shipped prompts, 8 greedy tokens, fp32 against int8 at batch 1 and
# 20: 14, 20, 16 and 15 of 20 prompts identical for seeds 0, 1, 2 and 3. The bar is the lowest seen.
INT8_EXACT_OF_20 = 14
QUANT_ARGS = ["--num-requests", "20", *COMMON_RUN_ARGS[2:]]


def _stage(scheme: str = "none", seed: int = 3):
    config = llama_config(CFG)
    return load_fast_stage(config, StagePlan.whole(CFG.num_hidden_layers), SyntheticTensors(seed, config),
                           torch.float32, CPU, scheme=scheme)


@pytest.fixture(scope="module")
def prompts():
    tokenizer = load_tokenizer(None, CFG)
    return [encode_prompt(tokenizer, p) for p in read_prompts(None)[:6]]


def test_int8_round_trip_is_within_half_a_step_per_row():
    w = torch.randn(64, 96)
    q = quant.quantize_int8(w)
    assert q.q.dtype == torch.int8 and q.scale.shape == (64,)
    err = (quant.dequantize(q, torch.float32) - w).abs()
    assert (err <= q.scale[:, None] / 2 + 1e-7).all()
    x = torch.randn(3, 96)
    torch.testing.assert_close(quant.matmul(x, q), x @ quant.dequantize(q, torch.float32).T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(quant.gemv(x, q), quant.matmul(x, q), rtol=1e-5, atol=1e-5)


def test_int4_groups_round_trip_within_half_a_step_per_group():
    """The int4 arithmetic (the packing itself is tinygemm's, on CUDA: see the gpu test below)."""
    w = torch.randn(8, 200)  # 200 columns: padded to 256, two groups of 128
    nibbles, scales, mins, padded = quant.int4_groups(w)
    assert padded == 256 and nibbles.shape == (8, 256) and scales.shape == mins.shape == (8, 2)
    assert int(nibbles.min()) >= 0 and int(nibbles.max()) <= 15
    back = (nibbles.reshape(8, 2, 128) * scales[..., None] + mins[..., None]).reshape(8, 256)[:, :200]
    step = scales.repeat_interleave(128, dim=1)[:, :200]
    assert ((back - w).abs() <= step / 2 + 1e-6).all()


def test_weight_bytes_shrink_by_the_expected_factor():
    fp, q = _stage(), _stage("int8")
    matmuls = [getattr(b, a) for b in fp.layers for a in ("wqkv", "wo", "w13", "w2")] + [fp.head]
    rows_cols = [(w.shape[0], w.shape[1]) for w in matmuls]
    saved = sum(n * k * (4 - 1) - n * 4 for n, k in rows_cols)  # fp32 weight -> int8 + one fp32 scale per row
    assert fast_parameter_bytes(q) == fast_parameter_bytes(fp) - saved
    for block in q.layers:  # each matmul weight: 1 byte per weight (fp32: 4) plus one fp32 scale per row
        for w in (block.wqkv, block.wo, block.w13, block.w2):
            assert isinstance(w, quant.Int8Weight)
            assert quant.weight_bytes(w) == w.q.numel() + 4 * w.q.shape[0]


def test_scorer_judges_a_model_against_itself_as_identical(prompts):
    stage = _stage()
    picker = Picker(eos_id=2, pad_id=0, suppress_eos=True, top_k=5)
    record, lines = score(stage, stage, prompts, 3, 6, picker, 0, "itself")
    assert record["kl_mean"] == 0.0 and record["kl_max"] == 0.0
    assert record["top1_agreement"] == 1.0 and record["nll_ratio"] == 1.0
    assert record["exact_match"] == len(prompts)
    assert len(lines) == len(prompts) and all(len(line["kl"]) == 6 for line in lines)
    assert record["noise_floor"]["batch_size"] == 1  # the same model at another batch split


def test_scorer_sees_int8_move_the_distribution(prompts):
    fp, q = _stage(), _stage("int8")
    picker = Picker(eos_id=2, pad_id=0, suppress_eos=True, top_k=5)
    record, lines = score(fp, q, prompts, 3, 6, picker, 0, "fp32")
    assert record["kl_mean"] > 0
    assert record["kl_mean"] > 10 * record["noise_floor"]["kl_mean"]  # beyond batching noise
    assert all(p["logprob_ref"] != p["logprob_run"] for p in lines)


def _exact(a: dict, b: dict) -> int:
    return sum(a[key] == b[key] for key in a)


def test_int8_single_and_pipeline_runs_match_the_unquantized_run(tiny_checkpoint, tmp_path):
    args = ["--checkpoint", str(tiny_checkpoint), "--batch-sizes", "4", *QUANT_ARGS]
    plain = run_cli("run", *args, "--out", str(tmp_path / "fp32"))
    single = run_cli("run", *args, "--quant", "int8", "--score", "--out", str(tmp_path / "int8"))
    assert plain.returncode == 0, plain.stderr
    assert single.returncode == 0, single.stderr
    pp_out = tmp_path / "pp"
    procs = start_slurm_ranks(2, [*args, "--mode", "pp", "--micro-batches", "2", "--quant", "int8",
                                  "--out", str(pp_out)], tmp_path / "logs")
    assert wait_all(procs) == [0, 0], launcher_output(tmp_path / "logs")

    base, q_single, q_pp = (read_completions(tmp_path / d) for d in ("fp32", "int8", "pp"))
    assert _exact(base, q_single) >= INT8_EXACT_OF_20
    assert q_pp == q_single  # per-row scales do not depend on how the layers are split

    result = json.loads((tmp_path / "int8" / "result.json").read_text())
    plain_result = json.loads((tmp_path / "fp32" / "result.json").read_text())
    assert result["quant"] == {"scheme": "int8", "group_size": None,
                               "weight_bytes_per_rank": [result["ranks"][0]["param_bytes"]]}
    assert result["ranks"][0]["param_bytes"] < plain_result["ranks"][0]["param_bytes"] / 2
    acc = result["accuracy"]
    assert acc["prompts"] == 20 and acc["tokens"] == 20 * 8 and acc["kl_mean"] > 0
    assert acc["exact_match"] >= INT8_EXACT_OF_20
    scores = [json.loads(line) for line in (tmp_path / "int8" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == 20 and all(len(s["logprob_run"]) == 8 for s in scores)
    pp_result = json.loads((pp_out / "result.json").read_text())
    assert [r["param_bytes"] for r in pp_result["ranks"]] == pp_result["quant"]["weight_bytes_per_rank"]


@pytest.mark.parametrize("flags, field", [
    (["--quant", "int4", "--device", "cpu"], "quant"),
    (["--quant", "int8", "--impl", "reference"], "quant"),
    (["--quant", "int3"], "quant"),
    (["--score", "--mode", "pp"], "score"),
])
def test_unsupported_schemes_are_refused_before_any_work(tiny_checkpoint, tmp_path, flags, field):
    out = tmp_path / "out"
    proc = run_cli("run", "--checkpoint", str(tiny_checkpoint), *QUANT_ARGS, *flags, "--out", str(out))
    assert proc.returncode == 2
    assert f"  {field}: " in proc.stderr
    assert not out.exists()  # nothing written, not even the spec


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the Triton kernels")
@pytest.mark.parametrize("rows", [1, 8, 64, 300])
def test_cuda_kernels_compute_the_dequantized_product(rows):
    torch.manual_seed(0)
    w = (torch.randn(3200, 8640, device="cuda") * 0.02).half()  # OpenLLaMA-3B's down projection: K padded for int4
    x = torch.randn(rows, 8640, device="cuda").half()
    # int8 multiplies fp16 activations (3e-4 measured on H200); tinygemm casts them to bf16, whose
    # 8-bit mantissa alone gives ~2e-3 (2.3-2.4e-3 measured): the bars sit above what was seen.
    for scheme, bar in (("int8", 1e-3), ("int4", 4e-3)):
        q = quant.quantize(w, scheme)
        want = x.float() @ quant.dequantize(q, torch.float32).T
        got = quant.matmul(x, q).float()
        assert ((got - want).norm() / want.norm()).item() < bar, scheme
