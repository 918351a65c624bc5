"""The issue-2 GPU table: single / pp / tp / dp on a synthetic OpenLLaMA-3B-v2 in fp16, vs HF generate.

Run on a machine with 2 GPUs (no torchrun needed; it starts the ranks itself with RANK/WORLD_SIZE/...):

    python3 tests/benchmarks/gpu_worker_table.py --out /tmp/dinf-gpu

It writes a synthetic checkpoint (fp16) under --checkpoint-dir, runs every mode through the real
`python -m worker run` CLI with raw result directories under --out, runs `compare` of each against
`single`, measures Hugging Face `generate` (1 GPU, the same left-padded batches, min_new_tokens =
max_new_tokens) in the same run, and prints one markdown table (also saved as --out/table.md).

Batch 1 runs on --bs1-requests requests (64 sequential requests at ~20 ms/token would take minutes);
batches 8 and 64 on --num-requests (64, so batch 64 is full). Exactness is reported on the first 20
requests (the 20 shipped prompts) at batch 8 and 64, beside the one-GPU noise floor (single at batch 8
vs single at batch 64: the same prompts in other batches). Check its logic on CPU with
`--config tiny --device cpu --dtype float32`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# NVLink multicast stays off on the lent hosts (GPU.md).
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="raw result directories and table.md go here")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: /tmp/dinf-ckpt-<config>-<dtype>")
    p.add_argument("--config", default="open_llama_3b_v2")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--modes", default="single,pp,tp,dp")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-requests", type=int, default=64)
    p.add_argument("--bs1-requests", type=int, default=4)
    p.add_argument("--micro-batches", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--run-timeout", type=int, default=420)
    p.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    p.add_argument("--reuse", action="store_true",
                   help="keep result dirs already under --out (split the table over two calls: the second "
                        "call with --reuse runs only what the first did not)")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, **NCCL_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def make_checkpoint(args) -> Path:
    ckpt = args.checkpoint_dir or Path(f"/tmp/dinf-ckpt-{args.config}-{args.dtype}")
    if (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file():
        print(f"== reusing checkpoint {ckpt}", flush=True)
        return ckpt
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "worker", "make-checkpoint", "--config", args.config, "--seed", "0",
         "--dtype", args.dtype, "--out", str(ckpt)],
        cwd=REPO, env=child_env(), check=True,
    )
    print(f"== checkpoint written in {time.time() - t0:.0f} s", flush=True)
    return ckpt


def run_worker(args, ckpt: Path, mode: str, world: int, out: Path, batch_sizes: list[int], requests: int,
               micro_batches: int) -> int:
    """Start `world` ranks of `python -m worker run` with torchrun-style variables; returns the worst exit code."""
    cmd = [sys.executable, "-m", "worker", "run", "--checkpoint", str(ckpt), "--mode", mode,
           "--batch-sizes", ",".join(map(str, batch_sizes)), "--num-requests", str(requests),
           "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype, "--device", args.device,
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--dist-timeout", "120",
           "--run-name", out.name, "--out", str(out)]
    if mode == "pp":
        cmd += ["--pp-size", str(world), "--micro-batches", str(micro_batches)]
    cmd += getattr(args, "extra_worker_args", [])  # e.g. --profile, from gpu_scaling.py
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(world):
        env = child_env({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                         "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        if world == 1:
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(k)
        log = open(out / f"launcher-rank{rank}.out", "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    t0 = time.time()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, args.run_timeout - (time.time() - t0))))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append(124)
    worst = max(codes, key=lambda c: c != 0)
    print(f"== {out.name}: exit {codes} in {time.time() - t0:.0f} s", flush=True)
    if worst != 0:
        for rank in range(world):
            tail = (out / f"launcher-rank{rank}.out").read_text()[-2500:]
            print(f"--- {out.name} rank {rank} (tail)\n{tail}", flush=True)
    return worst


def throughput(run_dir: Path) -> dict[int, float]:
    path = run_dir / "result.json"
    if not path.is_file():
        return {}
    result = json.loads(path.read_text())
    return {m["batch_size"]: m["output_throughput_tok_s"] for m in result["measurements"]}


def completions(run_dir: Path) -> dict[tuple[int, int], dict]:
    path = run_dir / "completions.jsonl"
    if not path.is_file():
        return {}
    return {(c["batch_size"], c["index"]): c for c in map(json.loads, path.read_text().splitlines())}


def exactness(base: dict, run: dict, batch_size: int, first_n: int = 20, base_bs: int | None = None):
    """(exact, compared, top-k agreeing divergences, divergences) over the first `first_n` requests."""
    from worker.compare import compare_one

    exact = total = agree = divergent = 0
    for i in range(first_n):
        a, b = base.get((base_bs or batch_size, i)), run.get((batch_size, i))
        if a is None or b is None:
            continue
        r = compare_one(a, b)
        total += 1
        exact += r["exact"]
        if not r["exact"]:
            divergent += 1
            agree += bool(r.get("topk_agree"))
    return exact, total, agree, divergent


def hf_generate(args, ckpt: Path, out: Path) -> dict:
    """HF generate on one device over the same padded batches the worker uses; tok/s and ids per batch size."""
    import torch
    from transformers import LlamaForCausalLM

    from worker.checkpoint import DTYPES
    from worker.runner import read_prompts
    from worker.tokenizer import encode_prompt, load_tokenizer, make_batches

    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as each worker rank runs (OMP_NUM_THREADS=1): a like-for-like CPU check
    tok = load_tokenizer(ckpt)
    model = LlamaForCausalLM.from_pretrained(str(ckpt), dtype=DTYPES[args.dtype]).to(device).eval()
    prompts = read_prompts(None)
    n = args.max_new_tokens
    results, records = {}, []

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def gen(batch):
        with torch.inference_mode():
            return model.generate(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                                  max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=tok.pad_token_id)[:, batch.input_ids.shape[1]:]

    for bs, requests in ((1, args.bs1_requests), (8, args.num_requests), (64, args.num_requests)):
        ids = [encode_prompt(tok, prompts[i % len(prompts)]) for i in range(requests)]
        batches = make_batches(ids, bs, tok.pad_token_id)
        for _ in range(args.warmup):
            gen(batches[0])
        walls = []
        for rep in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            outs = [gen(b) for b in batches]
            sync()
            walls.append(time.perf_counter() - t0)
            if rep == 0:
                for b, o in zip(batches, outs):
                    for i, row in zip(b.indices, o.tolist()):
                        records.append({"batch_size": bs, "index": i, "output_ids": row, "topk_ids": []})
        walls.sort()
        median = walls[len(walls) // 2] if len(walls) % 2 else sum(walls[len(walls) // 2 - 1 : len(walls) // 2 + 1]) / 2
        results[bs] = requests * n / median
        print(f"== hf generate bs {bs}: {results[bs]:.1f} tok/s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "throughput.json").write_text(json.dumps(results))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(args)
    modes = args.modes.split(",")
    rows = {}
    for mode in modes:
        world = 1 if mode == "single" else args.nproc
        if mode == "tp":
            probe = subprocess.run([sys.executable, "-c", "import deepspeed"], env=child_env(), capture_output=True)
            if probe.returncode != 0:
                print("== tp skipped: deepspeed does not import here", flush=True)
                rows[mode] = {"skipped": "deepspeed not importable"}
                continue
        small = args.out / f"{mode}-bs1"
        big = args.out / f"{mode}-bs8-64"
        codes = []
        for out_dir, sizes, requests, micro in ((small, [1], args.bs1_requests, 1),
                                                (big, [8, 64], args.num_requests, args.micro_batches)):
            if args.reuse and (out_dir / "result.json").is_file():
                print(f"== {out_dir.name}: reusing the result already there", flush=True)
                codes.append(0)
                continue
            codes.append(run_worker(args, ckpt, mode, world, out_dir, sizes, requests, micro))
        tps = {**throughput(small), **throughput(big)}
        rows[mode] = {"world": world, "codes": codes, "tok_s": tps, "dirs": [small, big]}
    if "single" in rows and "dirs" in rows["single"]:
        base_dirs = rows["single"]["dirs"]
        for mode, row in rows.items():
            if mode == "single" or "dirs" not in row:
                continue
            for b, r in zip(base_dirs, row["dirs"]):
                if (b / "completions.jsonl").is_file() and (r / "completions.jsonl").is_file():
                    subprocess.run([sys.executable, "-m", "worker", "compare", str(b), str(r)], cwd=REPO,
                                   env=child_env(), capture_output=True)
    hf = {}
    hf_dir = args.out / "hf-generate"
    if args.reuse and (hf_dir / "throughput.json").is_file():
        hf = {int(k): v for k, v in json.loads((hf_dir / "throughput.json").read_text()).items()}
        rows["hf generate"] = {"world": 1, "codes": [0], "tok_s": hf, "dirs": [hf_dir]}
    elif not args.no_hf:
        hf = hf_generate(args, ckpt, hf_dir)
        rows["hf generate"] = {"world": 1, "codes": [0], "tok_s": hf, "dirs": [hf_dir]}

    gpu = "cpu"
    for row in rows.values():
        for d in row.get("dirs", []):
            if (d / "result.json").is_file():
                gpu = json.loads((d / "result.json").read_text())["environment"].get("gpu_model") or gpu
    base = {}
    if "single" in rows and "dirs" in rows["single"]:
        base = completions(rows["single"]["dirs"][1])
    lines = [
        f"GPU: {gpu} × {args.nproc} · model {args.config} synthetic ({args.dtype}) · {args.max_new_tokens} new tokens, "
        f"greedy, min_new_tokens = max_new_tokens · bs1 on {args.bs1_requests} requests, bs 8/64 on "
        f"{args.num_requests} · median of {args.repeats} timed passes",
        "",
        "| mode | GPUs | exact vs single, bs 8 (first 20) | exact vs single, bs 64 (first 20) "
        "| top-k (k=5) agree at divergence | tok/s bs 1 | tok/s bs 8 | tok/s bs 64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in rows.items():
        label = {"pp": f"pp ({args.nproc} stages, {args.micro_batches} micro-batches; 1 at bs 1)",
                 "tp": f"tp {args.nproc} (DeepSpeed AutoTP)", "dp": f"dp {args.nproc}"}.get(mode, mode)
        if "skipped" in row:
            lines.append(f"| {label} | - | {row['skipped']} | | | | | |")
            continue
        cells = []
        agree_total = div_total = 0
        run = completions(row["dirs"][-1]) if mode != "hf generate" else completions(row["dirs"][0])
        for bs in (8, 64):
            if mode == "single":
                cells.append("baseline")
                continue
            e, t, a, d = exactness(base, run, bs)
            agree_total, div_total = agree_total + a, div_total + d
            cells.append(f"{e}/{t}" if t else "n/a")
        agree = "-" if mode == "single" else (f"{agree_total}/{div_total}" if div_total else "all exact")
        if mode == "hf generate" and div_total:
            agree = f"n/a ({div_total} divergent; generate keeps no top-k)"
        failed = [c for c in row["codes"] if c != 0]
        tps = [f"{row['tok_s'][bs]:.1f}" if bs in row["tok_s"] else ("failed" if failed else "n/a") for bs in (1, 8, 64)]
        lines.append(f"| {label} | {row['world']} | {cells[0]} | {cells[1]} | {agree} | " + " | ".join(tps) + " |")
    if base:
        e, t, a, d = exactness(base, base, 8, base_bs=64)
        lines += ["", f"Noise floor, one GPU: single at bs 8 vs single at bs 64 (same prompts, other batches): "
                      f"{e}/{t} exact, top-k agree at {a}/{d} divergences."]
    lines.append(f"Total wall time of this script: {time.time() - started:.0f} s.")
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print("\n" + table, flush=True)
    return 0 if all(c == 0 for row in rows.values() for c in row.get("codes", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
