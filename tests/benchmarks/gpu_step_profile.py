"""Where a decode step's time goes: the fast engine's step vs the HBM roofline, with a kernel profile.

    python3 tests/benchmarks/gpu_step_profile.py --checkpoint DIR [--batch-sizes 1,64] [--profile]

For each batch size it makes one session of the fast engine (compiled, captured), times N replays of
the decode step with CUDA events (median of R repeats, min-max shown), measures the card's copy
bandwidth in the same run, and prints the step time against the roofline (weights + KV cache bytes a
step must read / copy bandwidth). The same step without compile and without graphs is timed beside
it (the baselines of this table). `--profile` adds the top kernels of one replayed step (torch profiler).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def copy_bandwidth(torch, n_bytes: int = 2 << 30, repeats: int = 10) -> float:
    """Device-to-device copy rate in bytes/s (reads n and writes n bytes), median of `repeats`."""
    src = torch.empty(n_bytes // 2, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return 2 * n_bytes / statistics.median(times[2:])


def time_steps(torch, session, steps: int, repeats: int) -> list[float]:
    """Seconds per decode step, one value per repeat of `steps` steps."""
    out = []
    for _ in range(repeats):
        session.slot.fill_(0)  # keep slots in range; values don't matter for timing
        session.pos.fill_(0)
        if session.last:
            session.step.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(steps):
            session.decode()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3 / steps)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--batch-sizes", default="1,8,64,128")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--variants", default="fast,graphs-only,eager")
    args = p.parse_args(argv)

    import torch

    from worker.checkpoint import CheckpointTensors, load_config
    from worker.engine import EngineSettings, Session, cache_length
    from worker.generate import Picker
    from worker.llama import fast_parameter_bytes, load_fast_stage
    from worker.partition import StagePlan

    config = load_config(args.checkpoint)
    # Under torchrun (WORLD_SIZE > 1): one tensor-parallel shard per rank, as the worker's fast tp runs it.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    stage = load_fast_stage(config, StagePlan.whole(config.num_hidden_layers), CheckpointTensors(args.checkpoint),
                            torch.float16, device, rank, world)
    if world > 1:
        import torch.distributed as dist

        from worker.tensor_parallel import all_reduce_fn

        dist.init_process_group("nccl", device_id=device)
        stage.reduce = all_reduce_fn(dist.group.WORLD, traced=True)
        if rank != 0:  # only rank 0 prints
            sys.stdout = open(os.devnull, "w")
    weights = fast_parameter_bytes(stage) - stage.embed.numel() * 2  # the embedding reads one row per token
    bw = copy_bandwidth(torch)
    print(f"tensor parallel ranks: {world}; card: {torch.cuda.get_device_name(device)}; copy bandwidth {bw / 1e12:.2f} TB/s; "
          f"weights read per step {weights / 1e9:.2f} GB")
    picker = Picker(config.eos_token_id, config.pad_token_id, True, 5)
    print("| batch | variant | capture s | step ms (median, min-max) | tok/s (decode) | roofline step ms | % of roofline |")
    print("|---|---|---|---|---|---|---|")
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        length = cache_length(args.prompt_len, args.new_tokens)
        s = stage.shape
        kv = 2 * s.kv_heads * s.head_dim * 2 * config.num_hidden_layers * bs * (args.prompt_len + args.new_tokens // 2)
        roof = (weights + kv) / bw
        for variant in args.variants.split(","):
            settings = EngineSettings(compile=variant == "fast", cuda_graphs=variant != "eager")
            t0 = time.perf_counter()
            session = Session(stage, bs, length, args.new_tokens, picker, settings)
            if session.graph is None:  # eager: warm up once
                session.decode()
            torch.cuda.synchronize()
            capture = time.perf_counter() - t0
            steps = 20 if variant == "eager" else 100
            per = time_steps(torch, session, steps, args.repeats)
            med = statistics.median(per)
            print(f"| {bs} | {variant} | {capture:.1f} | {med * 1e3:.3f} ({min(per) * 1e3:.3f}-{max(per) * 1e3:.3f}) | "
                  f"{bs / med:,.0f} | {roof * 1e3:.3f} | {100 * roof / med:.0f}% |", flush=True)
            if args.profile and variant == "fast":
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        session.decode()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
            del session
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
