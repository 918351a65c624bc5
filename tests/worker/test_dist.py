"""Multi-process runs (real ranks over gloo) give exactly the single-process greedy ids.

Runs use the default implementation (`fast`) unless they say `--impl reference`; `single_run` is the
fast single-process baseline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.worker.conftest import (
    COMMON_RUN_ARGS,
    REPO,
    free_port,
    launcher_output,
    read_completions,
    start_slurm_ranks,
    wait_all,
    worker_env,
)
from worker.contract import EXIT_OK, EXIT_PEER_LOST, MODEL_CONFIGS, events_file, parse_event

pytestmark = pytest.mark.dist


def _run_ranks(n: int, args: list[str], out, timeout: float = 240) -> None:
    procs = start_slurm_ranks(n, [*args, *COMMON_RUN_ARGS, "--out", str(out)], out)
    codes = wait_all(procs, timeout)
    assert codes == [EXIT_OK] * n, launcher_output(out)


def _assert_same_ids(single_run, out, batch_size: int) -> None:
    base = {k: v for k, v in read_completions(single_run).items() if k[0] == batch_size}
    got = read_completions(out)
    assert sorted(got) == sorted(base)
    mismatched = [k for k in base if got[k] != base[k]]
    assert not mismatched, f"requests {mismatched} differ from single"
    assert all(len(v) == 8 for v in got.values())


def _stage_param_bytes(stage: int, stages: int) -> int:
    """Bytes of fp32 parameters stage `stage` must hold, from the tiny config (balanced split)."""
    c = MODEL_CONFIGS["tiny"]
    h, i, v = c.hidden_size, c.intermediate_size, c.vocab_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # q,k,v,o (MHA) + gate,up,down + two norms
    layers = c.num_hidden_layers // stages
    params = layers * per_layer
    if stage == 0:
        params += v * h  # embeddings
    if stage == stages - 1:
        params += h + v * h  # final norm + lm_head
    return 4 * params


def test_pp_two_stages_one_micro_batch_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "pp2"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--micro-batches", "1",
                   "--batch-sizes", "6"], out)
    _assert_same_ids(single_run, out, 6)
    result = json.loads((out / "result.json").read_text())
    assert [r["layers"] for r in result["ranks"]] == [[0, 2], [2, 4]]
    assert [r["param_bytes"] for r in result["ranks"]] == [_stage_param_bytes(s, 2) for s in range(2)]


def test_pp_four_stages_two_micro_batches_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "pp4"
    _run_ranks(4, ["--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--micro-batches", "2",
                   "--batch-sizes", "3"], out)
    _assert_same_ids(single_run, out, 3)
    result = json.loads((out / "result.json").read_text())
    assert [r["param_bytes"] for r in result["ranks"]] == [_stage_param_bytes(s, 4) for s in range(4)]
    assert sum(r["param_bytes"] for r in result["ranks"]) == 4 * MODEL_CONFIGS["tiny"].parameter_count()


def test_pp_under_torchrun_two_micro_batches_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "pp2-torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "worker", "run", "--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--micro-batches", "2",
           "--batch-sizes", "6", *COMMON_RUN_ARGS, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=worker_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same_ids(single_run, out, 6)
    assert json.loads((out / "result.json").read_text())["environment"]["backend"] == "gloo"


def test_dp_two_replicas_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "dp2"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "dp", "--batch-sizes", "3"], out)
    _assert_same_ids(single_run, out, 3)
    result = json.loads((out / "result.json").read_text())
    assert result["measurements"][0]["output_tokens"] == 6 * 8


def _tp_shard_bytes(ranks: int) -> int:
    """Bytes of fp32 weights one fast tp rank holds: its heads and MLP slice, embeddings/norms/head whole."""
    c = MODEL_CONFIGS["tiny"]
    h, i, v = c.hidden_size, c.intermediate_size, c.vocab_size
    per_layer = (4 * h * h + 3 * h * i) // ranks + 2 * h
    return 4 * (c.num_hidden_layers * per_layer + 2 * v * h + h)


def test_pp_reference_two_micro_batches_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "pp2-reference"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--micro-batches", "2",
                   "--batch-sizes", "6", "--impl", "reference"], out)
    _assert_same_ids(single_run, out, 6)
    assert json.loads((out / "result.json").read_text())["engine"]["impl"] == "reference"


def test_tp_fast_two_ranks_matches_single_and_holds_half_the_layers(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "tp2-fast"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "tp", "--batch-sizes", "6"], out)
    _assert_same_ids(single_run, out, 6)
    result = json.loads((out / "result.json").read_text())
    assert result["engine"]["impl"] == "fast"
    assert [r["param_bytes"] for r in result["ranks"]] == [_tp_shard_bytes(2)] * 2


def test_tp_deepspeed_autotp_fp32_matches_single(tiny_checkpoint, single_run, tmp_path):
    out = tmp_path / "tp2"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "tp", "--batch-sizes", "6",
                   "--impl", "reference"], out)
    _assert_same_ids(single_run, out, 6)
    result = json.loads((out / "result.json").read_text())
    assert result["engine"]["impl"] == "deepspeed"
    full = 4 * MODEL_CONFIGS["tiny"].parameter_count()
    # AutoTP split every layer: each rank holds well under the full model (embeddings stay whole).
    assert all(r["param_bytes"] < 0.7 * full for r in result["ranks"])


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_tp_profile_counts_the_all_reduces_inside_the_forward_as_communication(
    tiny_checkpoint, single_run, tmp_path, impl
):
    out = tmp_path / f"tp2-profile-{impl}"
    _run_ranks(2, ["--checkpoint", str(tiny_checkpoint), "--mode", "tp", "--batch-sizes", "6", "--profile",
                   "--impl", impl], out)
    _assert_same_ids(single_run, out, 6)
    (m,) = json.loads((out / "result.json").read_text())["measurements"]
    assert [r["rank"] for r in m["per_rank"]] == [0, 1]
    for rank in m["per_rank"]:
        # Every layer all-reduces twice per step inside the forward: that time is comm, not compute.
        assert rank["comm_s"] > 0 and rank["compute_s"] > 0, rank
        assert rank["compute_s"] + rank["comm_s"] <= m["wall_s"][0] * 1.01, rank
        assert rank["exposed_comm_pct"] > 0


def test_killing_a_rank_ends_its_peer_with_a_clear_error(tiny_checkpoint, tmp_path):
    out = tmp_path / "killed"
    args = ["--checkpoint", str(tiny_checkpoint), "--mode", "pp", "--batch-sizes", "2", "--num-requests", "2",
            "--max-new-tokens", "900", "--warmup", "0", "--repeats", "5", "--device", "cpu",
            "--dist-timeout", "30", "--out", str(out)]
    procs = start_slurm_ranks(2, args, out)
    try:
        deadline = time.monotonic() + 120
        events = out / events_file(1)
        while time.monotonic() < deadline:
            if events.exists() and '"measure"' in events.read_text():
                break
            assert procs[1].poll() is None, launcher_output(out)
            time.sleep(0.1)
        else:
            pytest.fail("rank 1 never reached its measure phase:\n" + launcher_output(out))
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code = procs[0].wait(timeout=45)
        took = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert code == EXIT_PEER_LOST, launcher_output(out)
    assert took < 30, f"rank 0 took {took:.1f} s to notice"
    records = [parse_event(line) for line in (out / events_file(0)).read_text().splitlines()]
    errors = [r for r in records if r and r["kind"] == "error"]
    assert errors and "peer rank lost" in errors[0]["message"] and errors[0]["rank"] == 0
    assert "Traceback" in errors[0]["traceback"]
    assert records[-1]["kind"] == "phase" and records[-1]["phase"] == "failed"
    assert not (out / "result.json").exists()
