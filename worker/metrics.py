"""The numbers of a measurement, exactly as ../shared/METRICS.md defines them, and the environment.

Input: per repeat, the wall time (barrier to barrier), the prefill-only time of each batch, and each
request's token times (seconds since its batch started, taken on the rank that picks tokens). Output:
one `measurements[]` entry of the result bundle. Raw timings are kept beside every statistic so the
laptop can recompute any of them. Request-level statistics pool all requests of all timed repeats;
throughputs are computed per repeat and reported as the median over repeats.

Memory and the compute/communication split are read here too; collecting them across ranks is the
runner's job.
"""

from __future__ import annotations

import platform
import socket
import statistics
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from worker.contract import stat_summary
from worker.generate import BatchOutput


@dataclass
class RepeatTiming:
    """One timed pass over all requests at one batch size."""

    wall_s: float
    prefill_s: list[float]  # per batch: a max_new_tokens=1 generation of that batch
    outputs: list[BatchOutput] = field(default_factory=list)  # per batch (all ranks' rows, merged)
    prompt_tokens: int = 0
    decode_s: float | None = None
    """T_generate − T_prefill of the pass; None = sum over batches (ranks that run batches one after another).
    Data-parallel replicas decode concurrently, so there the runner passes the slowest replica's."""


def batch_generate_s(out: BatchOutput) -> float:
    """T_generate of one batch: its start to its last token."""
    return max((t[-1] for t in out.token_times_s if t), default=0.0)


def request_stats(outputs: list[BatchOutput]) -> dict[str, list[float]]:
    """TTFT_i, E2E_i, TPOT_i per request and the pooled ITL gaps."""
    ttft, e2e, tpot, itl = [], [], [], []
    for out in outputs:
        for times in out.token_times_s:
            if not times:
                continue
            ttft.append(times[0])
            e2e.append(times[-1])
            if len(times) > 1:
                tpot.append((times[-1] - times[0]) / (len(times) - 1))
                itl += [b - a for a, b in zip(times, times[1:])]
    return {"ttft": ttft, "e2e": e2e, "tpot": tpot, "itl": itl}


def summarize(
    batch_size: int,
    num_requests: int,
    max_new_tokens: int,
    repeats: list[RepeatTiming],
    devices: int,
    per_rank: list[dict],
) -> dict:
    """One measurement record of result.json (layout in worker/contract.py).

    `devices` is what the per-GPU rate divides by: the GPUs used (PP x TP x DP), or the ranks of a
    CPU run (dividing a 2-rank CPU run by one "GPU" doubled its per-device rate)."""
    pooled: dict[str, list[float]] = {"ttft": [], "e2e": [], "tpot": [], "itl": []}
    decode_tps, output_tps, total_tps = [], [], []
    for rep in repeats:
        stats = request_stats(rep.outputs)
        for k in pooled:
            pooled[k] += stats[k]
        n_out = sum(len(ids) for out in rep.outputs for ids in out.output_ids)
        output_tps.append(n_out / rep.wall_s)
        total_tps.append((n_out + rep.prompt_tokens) / rep.wall_s)
        # decode throughput: B·(N−1) / (T_generate − T_prefill), summed over the pass's batches.
        decode_tokens = sum(max(len(ids) - 1, 0) for out in rep.outputs for ids in out.output_ids)
        decode_s = rep.decode_s
        if decode_s is None:
            decode_s = sum(batch_generate_s(out) for out in rep.outputs) - sum(rep.prefill_s)
        decode_tps.append(decode_tokens / decode_s if decode_s > 0 and decode_tokens else 0.0)
    first = repeats[0]
    output_median = statistics.median(output_tps)
    return {
        "batch_size": batch_size,
        "num_requests": num_requests,
        "max_new_tokens": max_new_tokens,
        "prompt_tokens": first.prompt_tokens,
        "output_tokens": sum(len(ids) for out in first.outputs for ids in out.output_ids),
        "repeats": len(repeats),
        "wall_s": [r.wall_s for r in repeats],
        "prefill_s": [sum(r.prefill_s) for r in repeats],
        "ttft_s": stat_summary(pooled["ttft"]),
        "tpot_s": stat_summary(pooled["tpot"]),
        "itl_s": stat_summary(pooled["itl"]),
        "e2e_s": stat_summary(pooled["e2e"]),
        "prefill_latency_s": stat_summary([p for r in repeats for p in r.prefill_s]),
        "decode_throughput_tok_s": statistics.median(decode_tps),
        "output_throughput_tok_s": output_median,
        "total_throughput_tok_s": statistics.median(total_tps),
        "per_gpu_output_tok_s": output_median / max(devices, 1),
        "raw": {
            "output_throughput_tok_s": output_tps,
            "decode_throughput_tok_s": decode_tps,
            "total_throughput_tok_s": total_tps,
        },
        "per_rank": per_rank,
    }


# --- memory -----------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> dict:
    record = {"peak_allocated_bytes": None, "peak_reserved_bytes": None, "peak_rss_bytes": _vm_hwm()}
    if device.type == "cuda":
        record["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        record["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return record


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def time_split(compute_s: float | None, comm_s: float | None, wall_s: float) -> dict:
    """compute / comm / idle per rank, with exposed-communication % and bubble (idle) %."""
    if compute_s is None or comm_s is None or wall_s <= 0:
        return {"compute_s": None, "comm_s": None, "idle_s": None, "bubble_pct": None, "exposed_comm_pct": None}
    idle = max(wall_s - compute_s - comm_s, 0.0)
    return {
        "compute_s": compute_s,
        "comm_s": comm_s,
        "idle_s": idle,
        "bubble_pct": 100.0 * idle / wall_s,
        "exposed_comm_pct": 100.0 * comm_s / wall_s,
    }


# --- environment ------------------------------------------------------------------------------


def rank_environment(device: torch.device) -> dict:
    env = {"host": socket.gethostname(), "device": str(device), "gpu_model": None}
    if device.type == "cuda":
        env["gpu_model"] = torch.cuda.get_device_name(device)
    return env


def environment(rank_envs: list[dict], backend: str | None) -> dict:
    import transformers

    try:  # the installed version, without paying for `import deepspeed`
        ds_version = metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        ds_version = None
    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception:
            nccl = None
    gpus = [e["gpu_model"] for e in rank_envs if e.get("gpu_model")]
    return {
        "hosts": sorted({e["host"] for e in rank_envs}),
        "gpu_model": gpus[0] if gpus else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "deepspeed": ds_version,
        "nccl": nccl,
        "python": platform.python_version(),
        "backend": backend or "none",
    }
