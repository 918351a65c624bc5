"""The single-process baseline: identical to HF generate, and its records follow the contract."""

from __future__ import annotations

import json

import torch

from tests.worker.conftest import read_completions
from worker import contract
from worker.tokenizer import pad_batch

STAT_KEYS = {"n", "median", "p90", "p99", "mean", "std", "min", "max", "ci95"}


def test_single_equals_hf_generate_on_the_same_padded_batches(tiny_checkpoint, single_run):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    records = [json.loads(line) for line in (single_run / contract.COMPLETIONS_FILE).read_text().splitlines()]
    for batch_size in (3, 6):
        rows = sorted((r for r in records if r["batch_size"] == batch_size), key=lambda r: r["index"])
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = pad_batch([r["index"] for r in chunk], [r["prompt_ids"] for r in chunk], pad_id=0)
            assert batch.padded  # prompts of different lengths: left padding is exercised
            ref = model.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8,
                min_new_tokens=8, do_sample=False, pad_token_id=0,
            )[:, batch.input_ids.shape[1]:]
            assert [r["output_ids"] for r in chunk] == ref.tolist()


def test_result_bundle_follows_the_contract(single_run):
    result = contract.read_result((single_run / contract.RESULT_FILE).read_text())
    assert result["status"] == "completed" and result["world_size"] == 1
    assert contract.RunSpec.from_dict(result["spec"]).mode == "single"
    env = result["environment"]
    assert {"hosts", "gpu_model", "torch", "transformers", "deepspeed", "nccl", "python", "backend"} <= set(env)
    assert result["load_time_s"] > 0
    (rank,) = result["ranks"]
    assert rank["layers"] == [0, 4] and rank["param_bytes"] == 4 * contract.MODEL_CONFIGS["tiny"].parameter_count()
    assert [m["batch_size"] for m in result["measurements"]] == [3, 6]
    for m in result["measurements"]:
        assert m["num_requests"] == 6 and m["repeats"] == 2 and len(m["wall_s"]) == 2
        assert m["output_tokens"] == 6 * 8
        for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "prefill_latency_s"):
            assert set(m[key]) == STAT_KEYS
        assert m["ttft_s"]["n"] == 6 * 2 and m["itl_s"]["n"] == 6 * 7 * 2
        assert 0 < m["ttft_s"]["median"] <= m["e2e_s"]["median"]
        assert m["output_throughput_tok_s"] > 0 and m["decode_throughput_tok_s"] > 0
        assert m["total_throughput_tok_s"] > m["output_throughput_tok_s"]
        (per_rank,) = m["per_rank"]
        assert per_rank["peak_rss_bytes"] > 0
        assert per_rank["compute_s"] > 0 and per_rank["idle_s"] >= 0  # --profile was on
    completions = read_completions(single_run)
    assert len(completions) == 12
    first = json.loads((single_run / contract.COMPLETIONS_FILE).read_text().splitlines()[0])
    assert set(first) == {"batch_size", "index", "prompt", "prompt_ids", "output_ids", "text", "topk_ids"}
    assert len(first["topk_ids"]) == 8 and all(len(k) == 5 for k in first["topk_ids"])
    assert all(k[0] == t for k, t in zip(first["topk_ids"], first["output_ids"]))  # greedy = top-1


def test_events_show_phases_progress_and_heartbeat(single_run):
    lines = (single_run / contract.events_file(0)).read_text().splitlines()
    records = [contract.parse_event(line) for line in lines]
    assert all(records), "every line is a complete event"
    phases = [r["phase"] for r in records if r["kind"] == "phase"]
    assert phases == ["start", "init", "load", "warmup", "measure", "warmup", "measure", "done"]
    progress = [r for r in records if r["kind"] == "progress"]
    assert progress[-1]["tokens_done"] == progress[-1]["tokens_expected"] == 6 * 8
    assert any(r["kind"] == "heartbeat" for r in records)
    assert all(r["rank"] == 0 for r in records)
    log = (single_run / contract.log_file(0)).read_text()
    assert "phase measure batch_size=6" in log and "phase done" in log


def test_events_carry_the_plan_the_laptop_folds_into_one_progress_bar(single_run):
    """Batch sizes 3 and 6 (the first and second of two), 2 repeats, 6 requests x 8 tokens a pass:
    every warmup, measure and progress event says where it stands, and the laptop's RankState turns
    them into one share of the whole run that only grows and ends at 1."""
    from tui.core.logs.buffers import RankState

    records = [contract.parse_event(line) for line in (single_run / contract.events_file(0)).read_text().splitlines()]
    planned = [r for r in records if r["kind"] == "progress" or r.get("phase") in ("warmup", "measure")]
    assert {(r["batch_size"], r["batch_index"], r["batch_count"], r["repeats"]) for r in planned} == {
        (3, 1, 2, 2), (6, 2, 2, 2)}
    passes = [(r["batch_size"], r["repeat"]) for r in records if r["kind"] == "progress"
              and r["tokens_done"] == r["tokens_expected"]]
    assert passes == [(3, 1), (3, 2), (6, 1), (6, 2)]
    state, shares = RankState(0), []
    for record in records:
        state.apply(record)
        if state.fraction is not None:
            shares.append(state.fraction)
    assert shares == sorted(shares) and shares[-1] == 1.0
    assert 0.25 in shares and 0.5 in shares and 0.75 in shares  # the end of each of the 4 passes
