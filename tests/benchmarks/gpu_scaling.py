"""Strong and weak scaling of pp / tp / dp over 1..N GPUs of one host (issue 5), with profiling.

    python3 tests/benchmarks/gpu_scaling.py --out /tmp/dinf-scaling --gpus 1,2,4

Every run goes through the real `python -m worker run` CLI (ranks started with torchrun-style
variables by `gpu_worker_table.run_worker`) on the synthetic OpenLLaMA-3B-v2 checkpoint in fp16, with
`profile` on so each rank reports compute / communication / idle time. Strong scaling keeps the
workload fixed (--num-requests); weak scaling grows it with the GPU count (num_requests x N). The
1-GPU point of every curve is the `single` run, measured in this same invocation.

Prints one markdown table per study (speedup, efficiency and throughput scaling per METRICS.md) and
keeps the raw result directories under --out so `dinf ingest` can store and chart them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_worker_table as table  # noqa: E402  (the shared launcher and checkpoint maker; puts the repo on sys.path)

from tui.studies.analysis import efficiency, speedup, throughput_scaling  # noqa: E402  (stdlib-only, METRICS.md)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpus", default="1,2,4", help="GPU counts; 1 is the single baseline")
    p.add_argument("--modes", default="pp,tp,dp")
    p.add_argument("--batch-sizes", default="8,64")
    p.add_argument("--num-requests", type=int, default=64, help="strong-scaling workload (requests)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--studies", default="strong,weak")
    p.add_argument("--config", default="open_llama_3b_v2")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--checkpoint-dir", type=Path, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--run-timeout", type=int, default=300)
    return p.parse_args(argv)


def measurements(run_dir: Path) -> dict[int, dict]:
    path = run_dir / "result.json"
    if not path.is_file():
        return {}
    return {m["batch_size"]: m for m in json.loads(path.read_text())["measurements"]}


def rank_split(m: dict) -> str:
    """compute/comm/idle seconds per rank, as 'c/m/i' triples."""
    parts = []
    for r in m.get("per_rank", []):
        c, k, i = (r.get(f) for f in ("compute_s", "comm_s", "idle_s"))
        if c is None:
            continue
        parts.append(f"r{r['rank']} {c:.2f}/{k:.2f}/{i:.2f}")
    return "; ".join(parts) or "-"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    args.extra_worker_args = ["--profile"]  # read by table.run_worker
    ckpt = table.make_checkpoint(args)
    gpus = [int(g) for g in args.gpus.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    studies = args.studies.split(",")
    failures = 0
    dirs: dict[tuple[str, str, int], Path] = {}

    def run(study: str, mode: str, n: int) -> None:
        nonlocal failures
        requests = args.num_requests * (n if study == "weak" else 1)
        out = args.out / f"{study}-{mode}-g{n}"
        micro = max(2, n) if mode == "pp" else 1
        code = table.run_worker(args, ckpt, mode, n, out, batch_sizes, requests, micro)
        failures += code != 0
        dirs[(study, mode, n)] = out

    for study in studies:
        if 1 in gpus and not (study == "weak" and ("strong", "single", 1) in dirs):
            run(study, "single", 1)
        for mode in args.modes.split(","):
            for n in gpus:
                if n > 1:
                    run(study, mode, n)

    gpu_model = "cpu"
    for d in dirs.values():
        if (d / "result.json").is_file():
            gpu_model = json.loads((d / "result.json").read_text())["environment"].get("gpu_model") or gpu_model
            break
    lines = [f"GPU: {gpu_model} · {args.config} synthetic {args.dtype} · {args.max_new_tokens} new tokens · "
             f"strong workload {args.num_requests} requests, weak {args.num_requests}×N · profile on · "
             f"median of {args.repeats} timed pass(es)", ""]
    for study in studies:
        base_dir = dirs.get((study, "single", 1)) or dirs.get(("strong", "single", 1))
        base = measurements(base_dir) if base_dir else {}
        lines += [f"### {study} scaling", "",
                  "| mode | GPUs | bs | output tok/s | wall s | speedup | efficiency | throughput scaling "
                  "| compute/comm/idle s per rank |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode in ["single"] + args.modes.split(","):
            for n in gpus:
                d = dirs.get((study, mode, n)) if mode != "single" else (base_dir if n == 1 else None)
                if d is None or (mode != "single" and n == 1):
                    continue
                ms = measurements(d)
                for bs in batch_sizes:
                    m, b = ms.get(bs), base.get(bs)
                    if m is None:
                        lines.append(f"| {mode} | {n} | {bs} | failed | | | | | |")
                        continue
                    wall = sorted(m["wall_s"])[len(m["wall_s"]) // 2]
                    x = m["output_throughput_tok_s"]
                    cells = ["", "", ""]
                    if b:
                        t1 = sorted(b["wall_s"])[len(b["wall_s"]) // 2]
                        s = speedup(t1, wall)
                        eff = efficiency(s, n) if study == "strong" else s  # weak: E_w = T(1)/T(N)
                        x_scaling = throughput_scaling(b["output_throughput_tok_s"], x, n)
                        cells = [f"{s:.2f}", f"{eff:.2f}", f"{x_scaling:.2f}"]
                    lines.append(f"| {mode} | {n} | {bs} | {x:.1f} | {wall:.2f} | " + " | ".join(cells)
                                 + f" | {rank_split(m)} |")
        lines.append("")
    lines.append(f"Total wall time: {time.time() - started:.0f} s; failed runs: {failures}.")
    text = "\n".join(lines)
    (args.out / "scaling.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
