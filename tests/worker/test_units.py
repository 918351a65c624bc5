"""In-process checks of the pieces: layer split, SeqState, synthetic weights, env mapping, metrics."""

from __future__ import annotations

import time

import pytest
import torch

from worker.checkpoint import SyntheticTensors, llama_config, load_stage, synthetic_tensor
from worker.contract import MODEL_CONFIGS
from worker.distributed import detect, expand_nodelist, port_for_job
from worker.generate import BatchOutput, Picker, StageTimer, StepClock, generate_local
from worker.metrics import RepeatTiming, request_stats, summarize
from worker.partition import StagePlan, split_layers
from worker.reference_model import SeqState
from worker.tokenizer import make_batches, micro_batch_bounds, pad_batch

CPU = torch.device("cpu")


def test_split_layers_is_contiguous_and_balanced():
    assert split_layers(26, 2) == [(0, 13), (13, 26)]
    assert split_layers(4, 3) == [(0, 2), (2, 3), (3, 4)]
    assert split_layers(4, 2, [1, 3]) == [(0, 1), (1, 4)]
    with pytest.raises(ValueError):
        split_layers(4, 5)
    with pytest.raises(ValueError):
        split_layers(4, 2, [2, 1])


def test_seqstate_matches_generate_positions_and_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    seq = SeqState(mask, use_mask=True)
    assert seq.position_ids.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    seq.advance()
    assert seq.position_ids.tolist() == [[2], [4]]
    assert seq.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    unpadded = SeqState(torch.ones(2, 3, dtype=torch.long), use_mask=False)
    assert unpadded.attention_mask is None and unpadded.position_ids.tolist() == [[0, 1, 2]] * 2


def test_synthetic_tensors_are_random_per_name_and_norms_are_one():
    a = synthetic_tensor(1, "model.layers.0.mlp.up_proj.weight", (64, 32), torch.float32)
    b = synthetic_tensor(1, "model.layers.1.mlp.up_proj.weight", (64, 32), torch.float32)
    assert torch.equal(a, synthetic_tensor(1, "model.layers.0.mlp.up_proj.weight", (64, 32), torch.float32))
    assert not torch.equal(a, b) and not torch.equal(a, synthetic_tensor(2, "model.layers.0.mlp.up_proj.weight",
                                                                         (64, 32), torch.float32))
    assert 0.015 < a.std().item() < 0.025 and a.unique().numel() > 1000
    assert torch.equal(synthetic_tensor(1, "model.norm.weight", (8,), torch.float32), torch.ones(8))


def _stages(splits, seed=5):
    config = llama_config(MODEL_CONFIGS["tiny"])
    source = SyntheticTensors(seed, config)
    return [load_stage(config, StagePlan.for_stage(4, i, len(splits), splits), source, torch.float32, CPU)
            for i in range(len(splits))]


def test_any_partition_holds_exactly_the_whole_models_tensors():
    (whole,) = _stages([4])
    whole_sd = {whole.checkpoint_names()[k]: v for k, v in whole.state_dict().items()}
    seen = set()
    for stage in _stages([1, 2, 1]):
        for local, tensor in stage.state_dict().items():
            name = stage.checkpoint_names()[local]
            assert torch.equal(tensor, whole_sd[name]), name
            seen.add(name)
        assert not any(p.is_meta for p in stage.parameters())
    assert seen == set(whole_sd)


def test_in_process_pipeline_equals_whole_model_on_left_padded_batch():
    batch = pad_batch([0, 1, 2], [[1, 5, 9, 33, 7, 21], [1, 8], [1, 70, 71, 72]], pad_id=0)
    picker = Picker(eos_id=2, pad_id=0, suppress_eos=True, top_k=3)
    whole = generate_local(_stages([4]), batch, 10, picker, StepClock(CPU))
    for splits in ([2, 2], [1, 1, 1, 1], [3, 1]):
        assert generate_local(_stages(splits), batch, 10, picker, StepClock(CPU)).output_ids == whole.output_ids
    rows = [generate_local(_stages([2, 2]), batch.rows(a, b), 10, picker, StepClock(CPU)).output_ids
            for a, b in micro_batch_bounds(3, 2)]
    assert rows[0] + rows[1] == whole.output_ids  # micro-batches cut by rows, never re-padded


def test_eos_stops_rows_and_pads_after_it():
    picker = Picker(eos_id=2, pad_id=0, suppress_eos=False, top_k=2)
    logits = torch.tensor([[0.0, 0.0, 9.0], [0.0, 9.0, 0.0]])
    finished = torch.tensor([False, True])
    ids, topk = picker(logits, finished)
    assert ids.tolist() == [2, 0] and topk[:, 0].tolist() == [2, 1]
    assert picker.update_finished(torch.tensor([False, False]), ids).tolist() == [True, False]


def test_batches_and_micro_batches():
    batches = make_batches([[1, 2], [1], [1, 2, 3], [1, 4], [1]], 2, pad_id=0)
    assert [b.indices for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0].input_ids.tolist() == [[1, 2], [0, 1]] and batches[0].padded
    assert micro_batch_bounds(5, 2) == [(0, 3), (3, 5)] and micro_batch_bounds(1, 2) == [(0, 1)]


def test_slurm_and_torchrun_variables_map_to_ranks():
    assert expand_nodelist("gpu[01-03,7],login") == ["gpu01", "gpu02", "gpu03", "gpu7", "login"]
    assert expand_nodelist("node1") == ["node1"]
    assert port_for_job("123456") == 20000 + 123456 % 20000 and port_for_job("88_3") == 20883
    env = detect({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
                  "SLURM_JOB_NODELIST": "127.0.0.[1-2]", "SLURM_JOB_ID": "42", "SLURM_NTASKS_PER_NODE": "2(x2)"})
    assert (env.rank, env.world_size, env.local_rank, env.local_size, env.launcher) == (3, 4, 1, 2, "slurm")
    assert env.master_port == 20042
    tr = detect({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "999",
                 "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert (tr.rank, tr.world_size, tr.master_addr, tr.master_port, tr.launcher) == (1, 2, "h", 999, "torchrun")
    assert detect({}).world_size == 1


def test_request_metrics_follow_the_definitions():
    out = BatchOutput([0, 1], [[5, 6, 7], [8]], [[], []], [[0.5, 0.7, 1.0], [0.5]])
    stats = request_stats([out])
    assert stats["ttft"] == [0.5, 0.5] and stats["e2e"] == [1.0, 0.5]
    assert stats["tpot"] == [pytest.approx(0.25)]  # only requests with more than one token
    assert stats["itl"] == [pytest.approx(0.2), pytest.approx(0.3)]  # never includes TTFT
    m = summarize(2, 2, 3, [RepeatTiming(wall_s=2.0, prefill_s=[0.4], outputs=[out], prompt_tokens=6)], 2, [])
    assert m["output_throughput_tok_s"] == 2.0 and m["total_throughput_tok_s"] == 5.0
    assert m["per_gpu_output_tok_s"] == 1.0
    assert m["decode_throughput_tok_s"] == pytest.approx(2 / (1.0 - 0.4))


def test_stage_timer_moves_comm_inside_a_compute_call_out_of_compute():
    timer = StageTimer(enabled=True)

    def all_reduce():
        assert not timer.in_compute  # an all-reduce inside it is not timed a second time
        time.sleep(0.2)

    def forward_with_all_reduce():
        time.sleep(0.01)  # "matmul"
        assert timer.in_compute
        timer.timed("comm", all_reduce)  # what timing_deepspeed_all_reduces does for an all-reduce
        assert timer.in_compute

    timer.timed("compute", forward_with_all_reduce)
    assert not timer.in_compute
    assert timer.comm_ns >= 0.2e9
    assert 0.01e9 <= timer.compute_ns < 0.2e9  # the sleep inside the all-reduce is not compute
