"""The issue-9 GPU table: dinf's engines against HF generate (eager, static/compiled), DeepSpeed and the HBM roofline.

Two device calls on the SAME 2-GPU machine (nvidia-h200-x2, carry [".whl"], timeout_s 600), the second
soon after the first so the machine is still warm (checkpoint, inductor cache and call 1's results stay in /tmp):

    bash tests/benchmarks/gpu_worker_table.sh /tmp/dinf-table --cells call1 --deadline-s 530 --copy-to $OUT/table
    bash tests/benchmarks/gpu_worker_table.sh /tmp/dinf-table --cells call2 --deadline-s 530 --copy-to $OUT/table --reuse

Call 2's $OUT/table/table.md is then the whole table. Anything a deadline cut (the plan printed first
says what it expects to cut) runs in a later call with `--cells all --reuse`, which measures only
what is missing. Without a GPU, rebuild the table from fetched result dirs (the first holding a cell wins):

    python3 tests/benchmarks/gpu_worker_table.py --out /tmp/merged --also CALL2/table --also CALL1/table --table-only

On the synthetic OpenLLaMA-3B-v2 in fp16 (a checkpoint written once under --checkpoint-dir), prompts of
exactly --prompt-tokens tokens (a prompts file made here with the checkpoint's tokenizer: the 20
shipped prompts, each extended with fixed filler text to the exact length), --max-new-tokens new
tokens (min = max), greedy, at batch 1, 8, 64 and 128. The cells (`--cells`, comma-separated names or
the groups call1 / call2 / all):

  copy-bw      device-to-device copy bandwidth of every visible card -> the HBM roofline (always run first)
  hf-eager     HF generate, default dynamic cache, 1 GPU
  hf-static    HF generate, cache_implementation="static" (transformers compiles it; first call = capture)
  ds-inject    DeepSpeed-Inference replace_with_kernel_inject=True, 1 GPU (its own process, TORCH_CUDA_ARCH_LIST=9.0)
  single-ref   dinf single --impl reference        single-fast  dinf single --impl fast
  pp2-m2/m4    dinf pp 2 stages, fast, 2 / 4 micro-batches (min(M, batch) at small batches)
  tp2-fast     dinf tp 2, fast                     tp2-ref      dinf tp 2 --impl reference (DeepSpeed AutoTP)
  dp2-fast     dinf dp 2, fast; each replica gets the batch single gets (num_requests = 2 x single's)

Each dinf cell runs the real `python -m worker run` CLI (ranks started with torchrun-style variables,
no torchrun), one invocation per group of batch sizes that share a request count (one per cell where
the worker's --num-requests takes a count per batch size, probed at start), --repeats timed
passes each (the worker's warm-up, and so its graph capture, is excluded). Requests per batch size are
chosen so one pass lasts >= ~1 s (--requests-fast/-slow/-static/-eager; --dry-plan prints the plan). Exactness
is `worker.compare`'s definition against `single-fast` at the same batch size on the first 20
requests, beside the noise floor (single-fast at bs 8 vs bs 64, same requests, other batches).

Every cell runs in its own process(es) with a timeout (also cut to what is left of --deadline-s);
a failed cell never stops the others, and its output tail is printed and kept (cell.json). table.md
is rewritten after every cell, so a call killed at its limit still leaves the table of what finished.
`--reuse` keeps any result under --out measured on a card of this machine (matched by GPU UUID), so
a second call measures only what is missing; results from other cards are re-run if selected, and
the ratios say when their two sides come from different cards.

CPU check of the logic (~5 min on 2 cores; hf-static and ds-inject are "skipped on CPU"):

    A="--config tiny --device cpu --dtype float32 --prompt-tokens 16 --max-new-tokens 8 --batch-sizes 1,8,64
       --requests-fast 1:2,8:16,64:64 --requests-slow 1:1,8:8,64:64 --requests-eager 1:1,8:8,64:64"
    python tests/benchmarks/gpu_worker_table.py --out /tmp/t --cells call1 $A
    python tests/benchmarks/gpu_worker_table.py --out /tmp/t --cells call2 --reuse $A
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

# NVLink multicast stays off on the lent hosts (GPU.md).
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
FIRST_N = 20  # requests compared for exactness (the 20 shipped prompts, extended)


# --- cells --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    name: str
    kind: str  # "copy" | "hf" | "worker"
    label: str
    speed: str = "fast"  # which request table: fast | slow | static
    engine: str | None = None  # hf: eager | static | ds-inject
    mode: str = "single"
    world: int = 1
    impl: str | None = None  # worker: fast | reference
    micro_batches: int = 1
    requests_factor: int = 1  # dp: each replica gets single's requests
    min_bs: int = 1  # pp2-m4 skips bs 1: min(4, 1) = 1 micro-batch is pp2-m2's bs-1 run again
    only: tuple[int, ...] | None = None  # "--cells hf-static:1+64": these batch sizes only, this time


CELLS = {c.name: c for c in [
    Cell("copy-bw", "copy", "copy bandwidth"),
    Cell("hf-eager", "hf", "HF generate, eager", speed="eager", engine="eager"),
    Cell("hf-static", "hf", 'HF generate, static cache (compiled)', speed="static", engine="static"),
    Cell("ds-inject", "hf", "DeepSpeed-Inference, kernel inject", speed="eager", engine="ds-inject"),
    Cell("single-ref", "worker", "dinf single, reference", speed="slow", impl="reference"),
    Cell("single-fast", "worker", "dinf single, fast", impl="fast"),
    Cell("pp2-m2", "worker", "dinf pp 2, fast, 2 micro-batches", mode="pp", world=2, impl="fast", micro_batches=2),
    Cell("pp2-m4", "worker", "dinf pp 2, fast, 4 micro-batches", mode="pp", world=2, impl="fast", micro_batches=4,
         min_bs=2),
    Cell("tp2-fast", "worker", "dinf tp 2, fast", mode="tp", world=2, impl="fast"),
    Cell("tp2-ref", "worker", "dinf tp 2, reference (DeepSpeed AutoTP)", speed="slow", mode="tp", world=2,
         impl="reference"),
    Cell("dp2-fast", "worker", "dinf dp 2, fast (same batch per replica)", mode="dp", world=2, impl="fast",
         requests_factor=2),
]}
GROUPS = {
    # Call 1, one card: single-fast vs the roofline and vs HF static need the same card. HF static at bs
    # 1 and 64 (the targets) comes second; its bs 8 and 128 (~60 s of compile each) come last, where the
    # deadline may cut them (call 2, or `--cells all --reuse`, then runs only what is missing).
    # DeepSpeed kernel inject is expected to abort after a ~45 s JIT build (GPU.md): cheap, 1 GPU.
    "call1": ["single-fast", "hf-static:1+64", "hf-eager", "single-ref", "ds-inject", "hf-static"],
    # Call 2, two cards: single-fast again only if call 1 ran on other cards (--reuse keeps it otherwise);
    # at the end, whatever call 1's deadline cut (with --reuse, what is done costs nothing).
    "call2": ["single-fast", "dp2-fast", "pp2-m2", "tp2-fast", "pp2-m4", "tp2-ref", "ds-inject", "hf-static"],
}
GROUPS["all"] = list(dict.fromkeys(GROUPS["call1"] + GROUPS["call2"]))

# Planning only: tok/s assumed per (speed, batch) on one H200 (GPU.md anchors; "fast" = issue-9 targets).
ASSUMED_TOK_S = {
    "fast": {1: 250, 8: 1800, 64: 8000, 128: 11000},
    "slow": {1: 35, 8: 280, 64: 1400, 128: 2000},
    "eager": {1: 45, 8: 400, 64: 2700, 128: 3400},
    "static": {1: 180, 8: 1200, 64: 3500, 128: 4500},
}
ASSUMED_START_S = {1: 15, 2: 20}  # process start + checkpoint load (page-cached), per invocation, by world size
ASSUMED_HF_COMPILE_S = 60  # transformers' static-cache compile, per shape (GPU.md: 46-70 s)
ASSUMED_DS_BUILD_S = 70  # DeepSpeed JIT build of the inference kernels (GPU.md: 43 s) + load


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="cell directories and table.md go here")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="more result dirs to read cells from (e.g. a first call's fetched --out); --out wins")
    p.add_argument("--cells", default="all", help="comma-separated cell names or groups (call1, call2, all)")
    p.add_argument("--table-only", action="store_true", help="rebuild table.md from --out (+ --also); run nothing")
    p.add_argument("--reuse", action="store_true",
                   help="keep results already under --out that were measured on a card of this machine")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: /tmp/dinf-ckpt-<config>-<dtype>")
    p.add_argument("--config", default="open_llama_3b_v2")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="1,8,64,128")
    p.add_argument("--prompt-tokens", type=int, default=128, help="every prompt is exactly this many tokens (with <s>)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--requests-fast", default=None,
                   help="batch:requests per pass for the fast engine, dp2 doubles them (default 1:16,8:16,64:128,"
                        "128:128, or 1:8,8:16,64:128,128:128 where the worker takes a request count per batch size)")
    p.add_argument("--requests-slow", default=None,
                   help="batch:requests for dinf reference and AutoTP (~20-30 ms per step; default 1:1,8:8,64:128,"
                        "128:128, or 64:64 where the worker takes a request count per batch size)")
    p.add_argument("--requests-static", default="1:2,8:16,64:64,128:128", help="batch:requests for HF static")
    p.add_argument("--requests-eager", default="1:1,8:8,64:64,128:128",
                   help="batch:requests for HF eager and DeepSpeed kernel inject (one process: any count is free)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker-args", default="", help="extra flags for every fast-engine worker run, written with = (e.g. --worker-args=--no-cuda-graphs)")
    p.add_argument("--run-timeout", type=int, default=300, help="seconds per worker invocation")
    p.add_argument("--hf-timeout", type=int, default=420, help="seconds for each HF generate cell")
    p.add_argument("--ds-timeout", type=int, default=240, help="seconds for the DeepSpeed kernel-inject cell")
    p.add_argument("--ds-cuda-graph", action="store_true", help="ds-inject with enable_cuda_graph=True")
    p.add_argument("--deadline-s", type=float, default=0,
                   help="stop starting work this many seconds after the script starts (0: none); each cell's "
                        "timeout is cut to what is left")
    p.add_argument("--est-compile-s", type=float, default=10,
                   help="planning: the fast engine's compile in each worker run (one layer, compiled once per process; "
                        "inductor's FX graph cache makes later runs of the same shapes cheaper)")
    p.add_argument("--est-capture-s", type=float, default=5,
                   help="planning: the fast engine's recompile + capture per batch size")
    p.add_argument("--copy-to", type=Path, default=None,
                   help="after every cell, copy --out here (e.g. $OUT on the device machine, while --out stays in "
                        "/tmp so a second call on the same warm machine can --reuse it)")
    p.add_argument("--dry-plan", action="store_true", help="print the plan and its time estimate, run nothing")
    p.add_argument("--assume-per-batch-requests", action="store_true",
                   help="plan as if the worker took one request count per batch size (with --dry-plan)")
    args = p.parse_args(argv)
    args.batch_size_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    return args


def selected_cells(spec: str) -> list[Cell]:
    """Cells in the order given; `name:1+64` restricts a cell to those batch sizes (the same cell may come again
    later, unrestricted: it then measures only what is still missing)."""
    names = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        names += GROUPS.get(part, [part])
    cells = []
    for name in dict.fromkeys(names):
        base, _, sizes = name.partition(":")
        if base not in CELLS:
            raise SystemExit(f"unknown cell {name!r}; cells: {', '.join(CELLS)} (name:1+64 for some batch sizes); "
                             f"groups: {', '.join(GROUPS)}")
        if base != "copy-bw":
            cells.append(replace(CELLS[base], only=tuple(int(b) for b in sizes.split("+"))) if sizes else CELLS[base])
    return cells


def parse_requests(text: str) -> dict[int, int]:
    out = {}
    for part in text.split(","):
        if part.strip():
            bs, n = part.split(":")
            out[int(bs)] = int(n)
    return out


def default_requests(args) -> None:
    """Request tables: grouping batch sizes into one worker run needs one request count for the group, unless the
    worker takes a count per batch size; then each size gets what times it best."""
    per = getattr(args, "per_batch_requests", False)
    if args.requests_fast is None:
        args.requests_fast = "1:8,8:16,64:128,128:128" if per else "1:16,8:16,64:128,128:128"
    if args.requests_slow is None:
        args.requests_slow = "1:1,8:8,64:64,128:128" if per else "1:1,8:8,64:128,128:128"


def requests_for(args, cell: Cell, bs: int) -> int:
    """Requests per pass at this batch size: from the cell's table, at least one full batch, whole batches."""
    table = parse_requests({"fast": args.requests_fast, "slow": args.requests_slow, "static": args.requests_static,
                            "eager": args.requests_eager}[cell.speed])
    n = max(table.get(bs, bs), bs)
    n = math.ceil(n / bs) * bs
    return n * cell.requests_factor


def effective_micro_batches(cell: Cell, bs: int) -> int:
    return min(cell.micro_batches, bs) if cell.mode == "pp" else 1


def cell_batch_sizes(args, cell: Cell) -> list[int]:
    return [bs for bs in args.batch_size_list if bs >= cell.min_bs and (cell.only is None or bs in cell.only)]


def invocations(args, cell: Cell) -> list[dict]:
    """The worker runs of a cell: batch sizes grouped by (requests, micro-batches), or, where the worker takes
    one request count per batch size (args.per_batch_requests), by micro-batches only."""
    groups: dict[tuple, list[int]] = {}
    for bs in cell_batch_sizes(args, cell):
        req = None if getattr(args, "per_batch_requests", False) else requests_for(args, cell, bs)
        groups.setdefault((req, effective_micro_batches(cell, bs)), []).append(bs)
    out = []
    for (req, micro), sizes in groups.items():
        reqs = [requests_for(args, cell, bs) for bs in sizes]
        name = f"r{'-'.join(map(str, sorted(set(reqs))))}-bs{'-'.join(map(str, sizes))}"
        name += f"-m{micro}" if cell.mode == "pp" else ""
        out.append({"name": name, "batch_sizes": sizes, "requests": reqs[0] if req is not None else reqs,
                    "micro_batches": micro})
    return out


def estimate_s(args, cell: Cell) -> float:
    """Planning estimate of a cell's wall time on H200 (ASSUMED_* above); printed before running."""
    rate = ASSUMED_TOK_S[cell.speed]
    n_new = args.max_new_tokens

    def passes(bs, req):
        known = [k for k in sorted(rate) if k <= bs] or [min(rate)]
        per_batch = bs * n_new / rate.get(bs, rate[known[-1]])
        batches = math.ceil(req / max(bs, 1) / cell.requests_factor)  # dp: replicas run side by side
        return (args.warmup + args.repeats * batches) * per_batch * 1.1  # + the prefill-only runs

    if cell.kind == "hf":
        sizes = cell_batch_sizes(args, cell)
        total = ASSUMED_START_S[1] + sum(passes(bs, requests_for(args, cell, bs)) for bs in sizes)
        if cell.engine == "static":
            total += ASSUMED_HF_COMPILE_S * len(sizes)
        if cell.engine == "ds-inject":
            total = ASSUMED_START_S[1] + ASSUMED_DS_BUILD_S  # expected to abort after the build (GPU.md)
        return total
    total = 0.0
    for inv in invocations(args, cell):
        total += ASSUMED_START_S[min(cell.world, 2)]
        if cell.impl == "fast":
            total += args.est_compile_s + args.est_capture_s * len(inv["batch_sizes"])
        total += sum(passes(bs, requests_for(args, cell, bs)) for bs in inv["batch_sizes"])
    return total


# --- processes ----------------------------------------------------------------------------------------


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


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def failure_reason(text: str, code: int | None = None) -> str:
    """One line saying why a process failed, from its real output (an assertion, the last exception, ...)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pattern in (r"Assertion .*failed", r"\b\w*(Error|Exception)\b: .+", r"\berror\b:? .+", r"Traceback"):
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1][:240]
    if code == 124:
        return "timed out"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"killed by signal {name}" + (f"; last output: {lines[-1][:160]}" if lines else "")
    return (lines[-1][:240] if lines else f"exit code {code}")


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes; on timeout every process group we started is killed (by its id) and gets 124."""
    t0 = time.time()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, timeout - (time.time() - t0))))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    try:
                        os.killpg(q.pid, signal.SIGKILL)
                    except OSError:
                        pass
            for q in procs[len(codes):]:
                q.wait()
            codes += [124] * (len(procs) - len(codes))
            break
    return codes


def worst_code(codes: list[int]) -> int:
    bad = [c for c in codes if c != 0]
    return bad[0] if bad else 0


def run_worker(args, ckpt: Path, mode: str, world: int, out: Path, batch_sizes: list[int], requests: int,
               micro_batches: int, *, prompts: Path | None = None, extra: list[str] | None = None,
               timeout: float | None = None) -> int:
    """Start `world` ranks of `python -m worker run` with torchrun-style variables; returns the worst exit code.

    Shared with gpu_scaling.py (which sets args.extra_worker_args). On failure every rank's output tail is printed.
    """
    cmd = [sys.executable, "-m", "worker", "run", "--checkpoint", str(ckpt), "--mode", mode,
           "--batch-sizes", ",".join(map(str, batch_sizes)),
           "--num-requests", ",".join(map(str, requests)) if isinstance(requests, list) else str(requests),
           "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype, "--device", args.device,
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--dist-timeout", "120",
           "--run-name", out.name, "--out", str(out)]
    if mode == "pp":
        cmd += ["--pp-size", str(world), "--micro-batches", str(micro_batches)]
    if prompts is not None:
        cmd += ["--prompts", str(prompts)]
    cmd += list(extra or []) + list(getattr(args, "extra_worker_args", []))  # e.g. --profile, from gpu_scaling.py
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(" ".join(cmd) + "\n")
    port = free_port()
    procs = []
    for rank in range(world):
        env = child_env({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                         "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        if world == 1:
            for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(k)
        with open(out / f"launcher-rank{rank}.out", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    t0 = time.time()
    codes = wait_all(procs, timeout or args.run_timeout)
    worst = worst_code(codes)
    print(f"== {out.parent.name}/{out.name}: exit {codes} in {time.time() - t0:.0f} s", flush=True)
    if worst != 0:
        for rank in range(world):
            print(f"--- {out.name} rank {rank} (tail)\n{tail(out / f'launcher-rank{rank}.out', 2500)}", flush=True)
    return worst


def run_script(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.with_name("command.txt").write_text(" ".join(cmd) + "\n")
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=REPO, env=env or child_env(), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    code = wait_all([p], timeout)[0]
    if code != 0:
        print(f"--- {log.parent.name} (exit {code}, tail)\n{tail(log, 2500)}", flush=True)
    return code


def machine_cards(device: str) -> list[str]:
    """UUIDs of this machine's cards in CUDA order (nvidia-smi; no CUDA context here). CPU: one pseudo-card."""
    if device != "cuda":
        return [f"cpu-{socket.gethostname()}"]
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, check=False,
                              text=True, timeout=30).stdout
        cards = [ln.strip().lower().removeprefix("gpu-") for ln in text.splitlines() if ln.strip()]
    except (OSError, subprocess.TimeoutExpired):
        cards = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible and cards and all(v.strip().isdigit() for v in visible.split(",")):
        cards = [cards[int(v)] for v in visible.split(",") if int(v) < len(cards)]
    return cards or [f"{socket.gethostname()}-cuda{i}" for i in range(8)]


def worker_takes_per_batch_requests() -> bool:
    """Does `--num-requests` take one count per batch size (e.g. 4,128 with --batch-sizes 1,64)? argparse
    rejects the list before it reaches --help when it does not."""
    probe = [sys.executable, "-m", "worker", "run", "--batch-sizes", "1,2", "--num-requests", "1,2", "--help"]
    r = subprocess.run(probe, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120, check=False)
    return r.returncode == 0


def worker_flags() -> str:
    """`python -m worker run --help` (to see which of --impl / --no-compile / --no-cuda-graphs exist)."""
    r = subprocess.run([sys.executable, "-m", "worker", "run", "--help"], cwd=REPO, env=child_env(), check=False,
                       capture_output=True, text=True, timeout=120)
    return r.stdout + r.stderr


# --- checkpoint and prompts ---------------------------------------------------------------------------


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


FILLER = (
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun. "
    "Distributed inference splits a large language model across several GPUs on one or more nodes. "
    "Pipeline parallelism gives each stage a slice of the layers; tensor parallelism splits each layer. "
    "Water boils at 100 degrees Celsius at sea level; at higher altitudes it boils at lower temperatures. "
    "A recipe for bread: flour, water, salt and yeast, kneaded, left to rise, then baked for forty minutes. "
)


def exact_length_text(count, base: str, target: int, offset: int) -> str | None:
    """The shortest prefix of `base + filler` (base cut if it is longer) whose token count (`count(text)`, <s> included) is exactly `target`."""
    words = FILLER.split()
    filler = " ".join(words[offset % len(words):] + words[: offset % len(words)])
    text = base
    while count(text) < target + 8:
        text += " " + filler
    for k in range(1, len(text) + 1):  # linear: BPE counts are not monotone in the prefix length
        if count(text[:k]) == target:
            return text[:k]
    return None


def make_prompts(ckpt: Path, target: int, out: Path, n: int = FIRST_N) -> Path:
    """A JSON-lines prompts file of `n` distinct prompts, each exactly `target` tokens with the checkpoint's tokenizer."""
    from worker.runner import read_prompts
    from worker.tokenizer import encode_prompt, load_tokenizer

    tok = load_tokenizer(ckpt)
    count = lambda text: len(encode_prompt(tok, text))
    shipped = read_prompts(None)
    prompts = []
    for i in range(n):
        base = shipped[i % len(shipped)]
        text = None
        for attempt in range(20):
            text = exact_length_text(count, base, target, 7 * i + 13 * attempt)
            if text is not None:
                break
        if text is None or count(text) != target:
            raise RuntimeError(f"could not make prompt {i} exactly {target} tokens long")
        prompts.append(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    print(f"== {out}: {n} prompts of exactly {target} tokens each", flush=True)
    return out


# --- running cells ------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Clock:
    def __init__(self, deadline_s: float):
        self.t0, self.deadline_s = time.time(), deadline_s

    def left(self) -> float:
        return math.inf if not self.deadline_s else self.deadline_s - (time.time() - self.t0)

    def timeout(self, limit: float) -> float:
        return min(limit, self.left())


def run_copy_bw(args, clock: Clock) -> list[str]:
    """Copy bandwidth of every visible card, every call (~10 s); returns the cards' UUIDs in CUDA order (the
    order the ranks' LOCAL_RANK picks), or nvidia-smi's list if the measurement failed."""
    d = args.out / "copy-bw" / f"{socket.gethostname()}-{time.strftime('%H%M%S')}"
    code = run_script([sys.executable, str(HERE / "gpu_baselines.py"), "copy-bw", "--out", str(d), "--device",
                       args.device], d / "log.out", clock.timeout(180))
    cards = [c["uuid"] for c in (read_json(d / "copy_bw.json") or {}).get("cards", [])]
    if code != 0 or not cards:
        print(f"== copy-bw failed: {failure_reason(tail(d / 'log.out'), code)}", flush=True)
        return machine_cards(args.device)
    return cards


def run_cell(args, cell: Cell, ckpt: Path, prompts: Path, cards: list[str], flags: str, clock: Clock) -> dict:
    """Run (or reuse) one cell; returns and writes its cell.json. Never raises for a failed run."""
    cdir = args.out / cell.name
    cdir.mkdir(parents=True, exist_ok=True)
    old = read_json(cdir / "cell.json") or {}
    my_cards = cards[: cell.world] if args.device == "cuda" else cards[:1]  # CPU ranks share the host
    label = cell.label
    if cell.engine == "ds-inject":
        label += ", CUDA graphs" if args.ds_cuda_graph else " (no CUDA graphs)"
    if cell.impl == "fast" and args.worker_args:
        label += f" ({args.worker_args})"
    meta = {"cell": cell.name, "label": label, "mode": cell.mode, "world": cell.world, "impl": cell.impl,
            "micro_batches": cell.micro_batches, "cards": my_cards, "host": socket.gethostname(),
            "status": "ok", "reason": None, "invocations": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t_cell = time.time()
    if args.device == "cuda" and cell.world > len(cards):
        meta.update(status="not run", reason=f"needs {cell.world} GPUs, this machine has {len(cards)}")
    elif args.device != "cuda" and cell.engine in ("static", "ds-inject"):
        meta.update(status="skipped", reason="skipped on CPU")
    elif cell.kind == "hf":
        meta["invocations"] += run_hf_cell(args, cell, ckpt, prompts, cdir, old, cards, clock)
    else:
        impl_flag = "--impl" in flags
        meta["impl_flag"] = impl_flag
        extra = []
        if cell.impl and impl_flag:
            extra += ["--impl", cell.impl]
        if cell.impl == "fast" and args.worker_args:
            extra += args.worker_args.split()
        if cell.mode == "tp" and cell.impl == "reference" and not deepspeed_imports():
            meta.update(status="not run", reason="deepspeed does not import here (carry .whl/, see GPU.md)")
        else:
            for inv in invocations(args, cell):
                meta["invocations"].append(run_invocation(args, cell, inv, ckpt, prompts, cdir, old, cards, extra, clock))
    names = {i["name"] for i in meta["invocations"]}
    covered = set(cell_batch_sizes(args, cell))
    for inv in old.get("invocations", []):  # runs of other batch sizes (an earlier `name:1+64`) stay in the cell
        if (inv.get("name") not in names and not set(inv.get("batch_sizes") or []) & covered
                and set(inv.get("cards") or []) <= set(cards) and (args.reuse or inv.get("call") == args.call_id)):
            meta["invocations"].append(dict(inv, reused=True))
    inv_status = [i["status"] for i in meta["invocations"]]
    if meta["status"] == "ok" and inv_status and any(s != "ok" for s in inv_status):
        meta["status"] = "failed" if all(s in ("failed", "not run") for s in inv_status) else "partial"
        meta["reason"] = next(i["reason"] for i in meta["invocations"] if i["status"] != "ok")
    meta["wall_s"] = time.time() - t_cell
    if meta["invocations"] and all(i.get("reused") for i in meta["invocations"]):
        meta["wall_s"], meta["started"] = old.get("wall_s", meta["wall_s"]), old.get("started", meta["started"])
    write_json(cdir / "cell.json", meta)
    print(f"== cell {cell.name}: {meta['status']}{' (' + meta['reason'] + ')' if meta['reason'] else ''} "
          f"in {meta['wall_s']:.0f} s", flush=True)
    return meta


def reusable(args, old: dict, name: str, run_dir: Path, cards: list[str]) -> dict | None:
    if not (run_dir / "result.json").is_file():
        return None
    prev = next((i for i in old.get("invocations", []) if i.get("name") == name and i.get("status") == "ok"), None)
    if prev is None or not (args.reuse or prev.get("call") == args.call_id):
        return None
    if not set(prev.get("cards") or old.get("cards") or []) <= set(cards):
        print(f"== {run_dir.parent.name}/{name}: measured on other cards; running it again here", flush=True)
        return None
    print(f"== {run_dir.parent.name}/{name}: reusing the result already there", flush=True)
    return dict(prev, reused=True)


def run_invocation(args, cell, inv, ckpt, prompts, cdir, old, cards, extra, clock) -> dict:
    run_dir = cdir / inv["name"]
    prev = reusable(args, old, inv["name"], run_dir, cards)
    if prev is not None:
        return prev
    rec = {**inv, "cards": cards[: cell.world] if args.device == "cuda" else cards[:1], "status": "ok", "reason": None,
           "code": None, "call": args.call_id}
    if clock.left() < 20:
        return {**rec, "status": "not run", "reason": "the call's --deadline-s was reached"}
    if (run_dir / "result.json").is_file():
        (run_dir / "result.json").unlink()  # never read a stale result as this run's
    t0 = time.time()
    timeout = clock.timeout(args.run_timeout)
    try:
        code = run_worker(args, ckpt, cell.mode, cell.world, run_dir, inv["batch_sizes"], inv["requests"],
                          inv["micro_batches"], prompts=prompts, extra=extra, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 — a launcher error is this cell's failure, not the table's
        code, rec["reason"] = 1, f"launcher: {exc!r}"
    rec.update(code=code, wall_s=time.time() - t0, timeout_s=timeout)
    if code != 0 or not (run_dir / "result.json").is_file():
        text = "\n".join(tail(run_dir / f"launcher-rank{r}.out", 6000) for r in range(cell.world))
        reason = rec["reason"] or failure_reason(text, code)
        if code == 124:
            reason = f"timed out after {timeout:.0f} s" + (" (the call's deadline)" if timeout < args.run_timeout else "")
        wrote = (run_dir / "result.json").is_file()  # results written, then a failure (e.g. in teardown)
        rec.update(status="partial" if wrote else "failed", reason=(f"exit {code} after writing results: " if wrote
                                                                     else "") + reason, tail=text[-3000:])
    return rec


def run_hf_cell(args, cell, ckpt, prompts, cdir, old, cards, clock) -> list[dict]:
    """One process over the batch sizes, the targets' (1, 64) first, saving after each. With --reuse, sizes already
    measured on this card (also by a run the deadline cut short) are kept and only the rest run, in a new dir; so is
    a run that failed for a reason of its own (DeepSpeed's abort), not for time. Within one call, without --reuse too."""
    kept, done = [], set()
    for inv in old.get("invocations", []):
        if not (args.reuse or inv.get("call") == getattr(args, "call_id", None)):
            continue
        if not set(inv.get("cards") or []) <= set(cards):
            continue
        measured = [m["batch_size"] for m in (read_json(cdir / inv["name"] / "result.json") or {}).get("measurements", [])]
        final_failure = inv.get("status") == "failed" and inv.get("code") not in (None, 124)
        if (inv.get("status") in ("ok", "partial") and measured) or final_failure:
            kept.append(dict(inv, reused=True))
            done |= set(measured) if measured else set(inv.get("batch_sizes") or [])
    order = sorted(cell_batch_sizes(args, cell), key=lambda b: (b not in (1, 64), b))  # the targets' sizes first
    order = [b for b in order if b not in done]
    if kept:
        print(f"== {cell.name}: reusing bs {', '.join(map(str, sorted(done)))} measured on this card"
              + (f"; running bs {', '.join(map(str, order))}" if order else ""), flush=True)
    if not order:
        return kept
    return [*kept, run_hf_sizes(args, cell, ckpt, prompts, cdir, cards, clock, order)]


def run_hf_sizes(args, cell, ckpt, prompts, cdir, cards, clock, order) -> dict:
    name = "run-bs" + "-".join(map(str, order))
    run_dir = cdir / name
    requests = ",".join(f"{bs}:{requests_for(args, cell, bs)}" for bs in order)
    rec = {"name": name, "batch_sizes": order, "requests": requests, "cards": cards[:1],
           "status": "ok", "reason": None, "code": None, "call": getattr(args, "call_id", None)}
    if clock.left() < 20:
        return {**rec, "status": "not run", "reason": "the call's --deadline-s was reached"}
    if (run_dir / "result.json").is_file():
        (run_dir / "result.json").unlink()
    cmd = [sys.executable, str(HERE / "gpu_baselines.py"), "generate", "--engine", cell.engine, "--checkpoint",
           str(ckpt), "--prompts", str(prompts), "--requests", requests, "--max-new-tokens", str(args.max_new_tokens),
           "--dtype", args.dtype, "--device", args.device, "--warmup", str(args.warmup), "--repeats",
           str(args.repeats), "--out", str(run_dir)]
    env = child_env()
    limit = args.hf_timeout
    if cell.engine == "ds-inject":
        limit = args.ds_timeout
        env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # GPU.md: the default "9.0a" breaks DeepSpeed's JIT build
        # A one-rank "world" so DeepSpeed's init_distributed never falls back to MPI discovery (no mpi4py there).
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()))
        if args.ds_cuda_graph:
            cmd.append("--ds-cuda-graph")
    t0 = time.time()
    timeout = clock.timeout(limit)
    code = run_script(cmd, run_dir / "log.out", timeout, env)
    rec.update(code=code, wall_s=time.time() - t0, timeout_s=timeout)
    if code != 0 or not (run_dir / "result.json").is_file():
        text = tail(run_dir / "log.out", 8000)
        reason = failure_reason(text, code)
        if code == 124:
            reason = f"timed out after {timeout:.0f} s" + (" (the call's deadline)" if timeout < limit else "")
        done = [m["batch_size"] for m in (read_json(run_dir / "result.json") or {}).get("measurements", [])]
        rec.update(status="partial" if done else "failed", reason=reason, tail=text[-3000:])
    return rec


def deepspeed_imports() -> bool:
    r = subprocess.run([sys.executable, "-c", "import deepspeed"], env=child_env(), capture_output=True, timeout=300, check=False)
    return r.returncode == 0


# --- reading results (stdlib only: --table-only runs anywhere) ----------------------------------------


def load_completions(path: Path, first_n: int = FIRST_N) -> dict[tuple[int, int], dict]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    c = json.loads(line)
                    if c["index"] < first_n:
                        out[(int(c["batch_size"]), int(c["index"]))] = c
    except (OSError, ValueError, KeyError):
        pass
    return out


def row_from_measurement(m: dict, result: dict, run_dir: Path, inv: dict) -> dict:
    raw = (m.get("raw") or {}).get("output_throughput_tok_s") or []
    engine = result.get("engine")
    capture = m.get("capture_s")
    if capture is None and isinstance(engine, dict):
        capture = engine.get("capture_s")
    return {
        "tok_s": m.get("output_throughput_tok_s"), "tok_s_raw": raw, "tpot": m.get("tpot_s") or {},
        "ttft": m.get("ttft_s") or {}, "capture_s": capture, "first_call_s": m.get("first_call_s"),
        "engine": engine, "requests": m.get("num_requests"), "repeats": m.get("repeats"),
        "micro_batches": inv.get("micro_batches"), "invocation": inv.get("name"),
        "capture_shared_by": inv.get("batch_sizes") if m.get("capture_s") is None else None,
        "gpu_model": (result.get("environment") or {}).get("gpu_model"),
        "completions": load_completions(run_dir / "completions.jsonl"),
    }


def load_cell(cdir: Path) -> dict | None:
    meta = read_json(cdir / "cell.json")
    if meta is None:
        return None
    cell = {"meta": meta, "rows": {}, "failed": {}}
    for inv in meta.get("invocations", []):
        run_dir = cdir / inv["name"]
        result = read_json(run_dir / "result.json") if inv.get("status") in ("ok", "partial") else None
        for m in (result or {}).get("measurements", []):
            cell["rows"][m["batch_size"]] = row_from_measurement(m, result, run_dir, inv)
        for bs in inv.get("batch_sizes", []):
            if bs not in cell["rows"]:
                cell["failed"][bs] = inv.get("reason") or inv.get("status") or "no result.json"
    for bs in cell["rows"]:  # measured by a later run (--reuse resumed it)
        cell["failed"].pop(bs, None)
    return cell


def load_all(dirs: list[Path]) -> dict:
    """Every cell and copy-bandwidth record under the dirs (the first dir holding a cell wins)."""
    data = {"cells": {}, "copy_bw": {}, "weight_bytes": None, "setup": None}
    for d in dirs:
        for f in sorted(d.glob("copy-bw/*/copy_bw.json")):
            for c in (read_json(f) or {}).get("cards", []):
                data["copy_bw"].setdefault(c["uuid"], c)
        setup = read_json(d / "setup.json")
        if setup and data["setup"] is None:
            data["setup"] = setup
            data["weight_bytes"] = setup.get("weight_bytes")
        for name in CELLS:
            if name not in data["cells"] and (d / name / "cell.json").is_file():
                cell = load_cell(d / name)
                if cell is not None:
                    data["cells"][name] = cell
    return data


# --- the table (pure functions of `data`; tests/worker/test_gpu_table_logic.py) -----------------------


def fmt_spread(median, lo, hi, scale=1.0, digits=1) -> str:
    if median is None:
        return "n/a"
    s = f"{median * scale:.{digits}f}"
    if lo is not None and hi is not None:
        s += f" ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"
    return s


def fmt_stat(st: dict, scale=1e3, digits=2) -> str:
    """median (min–max) when the statistic has them, else median (p90 …)."""
    if not st or st.get("median") is None:
        return "n/a"
    if st.get("min") is not None and st.get("max") is not None:
        return fmt_spread(st["median"], st["min"], st["max"], scale, digits)
    s = f"{st['median'] * scale:.{digits}f}"
    if st.get("p90") is not None:
        s += f" (p90 {st['p90'] * scale:.{digits}f})"
    return s


def bandwidth_for(data: dict, cards: list[str]) -> tuple[float | None, bool]:
    """(copy bandwidth of the cell's cards (the slowest), measured on those very cards?)."""
    bws = [data["copy_bw"][c]["bandwidth_Bps"] for c in cards if c in data["copy_bw"]]
    if bws:
        return min(bws), True
    others = [c["bandwidth_Bps"] for c in data["copy_bw"].values()]
    return (min(others), False) if others else (None, False)


def roofline_step_s(data: dict, name: str) -> tuple[float | None, bool]:
    """Min decode-step time from HBM: weight bytes one card streams per step / its copy bandwidth.

    The whole model for single, HF, dp (per replica) and pp (a token crosses every stage in turn); the
    shard for tp. Weights only: KV-cache reads are not counted, so at large batches this floor is low.
    """
    cell = data["cells"].get(name)
    if cell is None or not data.get("weight_bytes"):
        return None, False
    meta = cell["meta"]
    bw, same = bandwidth_for(data, meta.get("cards") or [])
    if not bw:
        return None, False
    share = meta.get("world", 1) if meta.get("mode") == "tp" else 1
    return data["weight_bytes"] / share / bw, same


def pct_roofline(data: dict, name: str, bs: int) -> float | None:
    row = data["cells"].get(name, {}).get("rows", {}).get(bs)
    step, _ = roofline_step_s(data, name)
    tpot = (row or {}).get("tpot", {}).get("median")
    if step is None or not tpot:
        return None
    return step / tpot


def exactness(base: dict, run: dict, batch_size: int, first_n: int = FIRST_N, base_bs: int | None = None):
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


def same_cards(data: dict, a: str, b: str) -> bool:
    ca = (data["cells"].get(a) or {}).get("meta", {}).get("cards") or []
    cb = (data["cells"].get(b) or {}).get("meta", {}).get("cards") or []
    return bool(ca and cb and (ca[0] in cb or cb[0] in ca))


def metric(data: dict, name: str, bs: int, what: str) -> float | None:
    row = data["cells"].get(name, {}).get("rows", {}).get(bs)
    if row is None:
        return None
    if what == "tok_s":
        return row.get("tok_s")
    return (row.get(what) or {}).get("median")


def ratio_checks(data: dict, batch_sizes: list[int]) -> list[dict]:
    """The issue-9 targets, each {name, value, target, passed (None: not measured), note}."""
    checks = []

    def add(name, value, op, target, pair=None, unit="×"):
        passed = None if value is None else (value >= target if op == ">=" else value <= target)
        note = ""
        if value is not None and pair and not same_cards(data, *pair):
            note = f"{pair[0]} and {pair[1]} ran on different cards: not a within-run ratio"
        checks.append({"name": name, "value": value, "op": op, "target": target, "passed": passed, "note": note,
                       "unit": unit})

    pct = pct_roofline(data, "single-fast", 1)
    _, same = roofline_step_s(data, "single-fast")
    add("single fast bs 1: % of HBM roofline", None if pct is None else 100 * pct, ">=", 60, unit="%")
    if pct is not None and not same:
        checks[-1]["note"] = "copy bandwidth not measured on single-fast's card"

    def ratio(a, b, bs, what="tok_s"):
        x, y = metric(data, a, bs, what), metric(data, b, bs, what)
        return x / y if x and y else None

    add("single fast bs 1 / HF static bs 1 (tok/s)", ratio("single-fast", "hf-static", 1), ">=", 2.0,
        ("single-fast", "hf-static"))
    add("single fast bs 64 / HF static bs 64 (tok/s)", ratio("single-fast", "hf-static", 64), ">=", 1.5,
        ("single-fast", "hf-static"))
    for cell in ("pp2-m2", "pp2-m4"):
        for bs in (b for b in batch_sizes if b >= 64):
            add(f"{cell} bs {bs} / single fast bs {bs} (tok/s)", ratio(cell, "single-fast", bs), ">=", 0.95,
                (cell, "single-fast"))
    for bs in batch_sizes:
        add(f"dp2 bs {bs} (per replica) / single fast bs {bs} (tok/s)", ratio("dp2-fast", "single-fast", bs), ">=",
            1.9, ("dp2-fast", "single-fast"))
    add("tp2 fast bs 1 TPOT / single fast bs 1 TPOT", ratio("tp2-fast", "single-fast", 1, "tpot"), "<=", 0.75,
        ("tp2-fast", "single-fast"))
    return checks


def implausible(data: dict, batch_sizes: list[int]) -> list[str]:
    """Figures that cannot be right (efficiency > 1), in words."""
    flags = []
    for name, cell in data["cells"].items():
        for bs, row in sorted(cell["rows"].items()):
            pct = pct_roofline(data, name, bs)
            if pct is not None and pct > 1.0:
                flags.append(f"{name} bs {bs}: TPOT {row['tpot']['median'] * 1e3:.2f} ms is {100 * pct:.0f}% of the "
                             "HBM roofline — faster than streaming the weights once per step; check the timing "
                             "(or that the copy bandwidth was measured on this card)")
        world = cell["meta"].get("world", 1)
        if world > 1 and name != "single-fast":
            for bs in batch_sizes:
                x, y = metric(data, name, bs, "tok_s"), metric(data, "single-fast", bs, "tok_s")
                if x and y and x / y > world * 1.02:
                    flags.append(f"{name} bs {bs}: {x / y:.2f}× single on {world} GPUs — a parallel efficiency "
                                 f"above 1 ({x / y / world:.2f}); look for unequal work or a slow single run")
                t1, t2 = metric(data, "single-fast", bs, "tpot"), metric(data, name, bs, "tpot")
                if cell["meta"].get("mode") == "tp" and t1 and t2 and t2 < t1 / world / 1.02:
                    flags.append(f"{name} bs {bs}: TPOT {t2 * 1e3:.2f} ms is less than single's / {world} "
                                 f"({t1 * 1e3 / world:.2f} ms): superlinear, check it")
    return flags


def engine_text(row: dict, meta: dict) -> str:
    e = row.get("engine")
    if not isinstance(e, dict):
        return "not reported" + ("" if meta.get("impl_flag", True) else " (worker had no --impl)")
    bits = [str(e.get("impl"))]
    if e.get("compiled"):
        bits.append("compiled")
    if e.get("cuda_graphs"):
        bits.append("graphs")
    text = ", ".join(bits)
    want = meta.get("impl")
    got = e.get("impl")
    if want == "reference" and meta.get("mode") == "tp":
        want = "deepspeed"
    if want and got and not str(got).startswith("hf") and got != want and not (want == "reference" and got == "deepspeed"):
        text += f" (asked for {meta.get('impl')}!)"
    return text


def cell_label(name: str, meta: dict, bs: int | None, row: dict | None) -> str:
    label = meta.get("label") or CELLS.get(name, Cell(name, "?", name)).label
    if meta.get("mode") == "pp" and row and row.get("micro_batches") and bs is not None:
        m = row["micro_batches"]
        if m < meta.get("micro_batches", m):
            label += f" (M = {m}: min(M, batch))"
    return label


def build_table(data: dict, batch_sizes: list[int], header: str = "") -> str:
    cells = data["cells"]
    base = cells.get("single-fast", {}).get("rows", {})
    lines = [header, ""] if header else []

    # Compact overview: output tok/s medians.
    lines += ["| config | GPUs | " + " | ".join(f"tok/s bs {b}" for b in batch_sizes) + " |",
              "|---|---|" + "---|" * len(batch_sizes)]
    for name in CELLS:
        if name not in cells:
            continue
        c = cells[name]
        meta = c["meta"]
        vals = []
        for b in batch_sizes:
            r = c["rows"].get(b)
            if r and r.get("tok_s") is not None:
                vals.append(f"{r['tok_s']:.1f}")
            elif meta.get("status") in ("skipped", "not run"):
                vals.append(meta["status"])
            elif b in c["failed"]:
                vals.append("failed" if meta.get("cell") != "ds-inject" else "does not run")
            else:
                vals.append("n/a")
        lines.append(f"| {meta.get('label', name)} | {meta.get('world', 1)} | " + " | ".join(vals) + " |")

    # Detail: one row per (cell, batch).
    lines += ["", ("| config | GPUs | bs | requests × passes | output tok/s median (min–max) | TPOT ms median (spread) "
                   "| TTFT ms median (spread) | % of roofline | exact vs single fast (first 20) "
                   "| top-5 agree at divergence | capture s | engine |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in CELLS:
        if name not in cells:
            continue
        c = cells[name]
        meta = c["meta"]
        if meta.get("status") in ("skipped", "not run") or not c["rows"]:
            why = meta.get("reason") or next(iter(c["failed"].values()), None) or meta.get("status")
            what = {"skipped": "skipped", "not run": "not run"}.get(meta.get("status"), "does not run")
            lines.append(f"| {meta.get('label', name)} | {meta.get('world', 1)} | all | | {what}: {why} "
                         "| | | | | | | |")
            continue
        for b in batch_sizes:
            row = c["rows"].get(b)
            label = cell_label(name, meta, b, row)
            if row is None:
                reason = c["failed"].get(b)
                if reason is None and b < CELLS.get(name, Cell(name, "?", name)).min_bs:
                    lines.append(f"| {label} | {meta.get('world', 1)} | {b} | | not run: min(M, {b}) = {b} "
                                 "micro-batch, the same run as pp2-m2's | | | | | | | |")
                    continue
                if reason is None:
                    continue
                word = "does not run" if name == "ds-inject" else "failed"
                lines.append(f"| {label} | {meta.get('world', 1)} | {b} | | {word}: {reason} | | | | | | | |")
                continue
            raw = row.get("tok_s_raw") or []
            tps = fmt_spread(row.get("tok_s"), min(raw) if raw else None, max(raw) if raw else None)
            pct = pct_roofline(data, name, b)
            pct_s = "n/a" if pct is None else f"{100 * pct:.0f}%" + (" (!)" if pct > 1 else "")
            if name == "single-fast":
                ex, agree = "baseline", "-"
            elif b in base:
                e, t, a, d = exactness(base[b]["completions"], row["completions"], b)
                ex = f"{e}/{t}" if t else "n/a"
                if not d:
                    agree = "all exact" if t else "n/a"
                elif not any(r.get("topk_ids") for r in row["completions"].values()):
                    agree = f"n/a ({d} divergent; no top-k kept)"
                else:
                    agree = f"{a}/{d}"
            else:
                ex, agree = "no baseline", "-"
            cap = row.get("capture_s")
            cap_s = "n/a" if cap is None else f"{cap:.1f}"
            if cap is not None and len(row.get("capture_shared_by") or []) > 1:
                cap_s += f" (bs {', '.join(map(str, row['capture_shared_by']))} together)"
            reps = f"{row.get('requests')} × {row.get('repeats')}"
            lines.append(f"| {label} | {meta.get('world', 1)} | {b} | {reps} | {tps} | {fmt_stat(row.get('tpot'))} "
                         f"| {fmt_stat(row.get('ttft'))} | {pct_s} | {ex} | {agree} | {cap_s} | "
                         f"{engine_text(row, meta)} |")

    # Noise floor.
    lines.append("")
    if 8 in base and 64 in base:
        e, t, a, d = exactness(base[64]["completions"], base[8]["completions"], 8, base_bs=64)
        lines.append(f"Noise floor, one GPU: single fast at bs 8 vs bs 64 (same requests, other batches): {e}/{t} exact, "
                     f"top-5 agree at {a}/{d} divergences.")
    else:
        lines.append("Noise floor: not measured (needs single-fast at bs 8 and 64).")

    # Roofline.
    step, same = roofline_step_s(data, "single-fast")
    bw_lines = [f"{c.get('name', '?')} {u[:13]}: {c['bandwidth_Bps'] / 1e12:.3f} TB/s "
                f"({c['min_bandwidth_Bps'] / 1e12:.3f}–{c['max_bandwidth_Bps'] / 1e12:.3f})"
                for u, c in data["copy_bw"].items()]
    if bw_lines:
        lines.append("Copy bandwidth (2 × bytes / time of a device-to-device copy, median of 10): " + "; ".join(bw_lines)
                     + ".")
    if step is not None:
        lines.append(f"HBM roofline of one decode step (weights {data['weight_bytes'] / 1e9:.4g} GB / copy bandwidth): "
                     f"{step * 1e3:.3f} ms on single-fast's card{'' if same else ' (bandwidth from another card!)'}; "
                     "% of roofline = roofline step / TPOT median (tp: the shard; weights only, KV-cache reads not "
                     "counted, so large batches read low).")

    # Targets.
    lines += ["", "Targets (issue 9), ratios within this run:", ""]
    for chk in ratio_checks(data, batch_sizes):
        if chk["value"] is None:
            verdict, val = "NOT MEASURED", "n/a"
        else:
            verdict = "PASS" if chk["passed"] else "FAIL"
            val = f"{chk['value']:.1f}%" if chk["unit"] == "%" else f"{chk['value']:.2f}×"
        tgt = f"{chk['op']} {chk['target']}{'%' if chk['unit'] == '%' else '×'}"
        lines.append(f"- {verdict}: {chk['name']} = {val} (target {tgt})" + (f" — {chk['note']}" if chk["note"] else ""))
    flags = implausible(data, batch_sizes)
    if flags:
        lines += ["", "Impossible-looking figures:", ""] + [f"- {f}" for f in flags]

    # Notes.
    notes = []
    if any(c["meta"].get("mode") == "pp" for c in cells.values()):
        notes.append("pp cells use min(M, batch) micro-batches (M = 4 gives 1 at bs 1, 4 at bs 8).")
    if "dp2-fast" in cells:
        notes.append("dp2 runs 2 × single's requests, so each replica gets single's batch size and request count.")
    if "ds-inject" in cells and "CUDA graphs)" in cells["ds-inject"]["meta"].get("label", ""):
        notes.append("DeepSpeed kernel inject runs without its CUDA graphs (enable_cuda_graph captures one fixed-shape "
                     "forward, and generate's shapes change every step); --ds-cuda-graph turns them on.")
    if "hf-static" in cells:
        notes.append("HF static's capture = the wall time of the first generate call of each shape (compile + "
                     "graph capture + one run); dinf's = engine.capture_s of the worker run.")
    if any(not c["meta"].get("impl_flag", True) for c in cells.values()):
        notes.append("Some dinf cells ran on a worker without --impl: their engine is the worker's only one.")
    walls = [f"{n} {c['meta']['wall_s']:.0f} s" for n, c in cells.items() if (c["meta"].get("wall_s") or 0) >= 0.5]
    if walls:
        notes.append("Cell wall times (incl. start, load and capture): " + ", ".join(walls) + ".")
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def table_header(data: dict, args) -> str:
    setup = data.get("setup") or {}
    gpus = sorted({r.get("gpu_model") for c in data["cells"].values() for r in c["rows"].values() if r.get("gpu_model")})
    hosts = sorted({c["meta"].get("host") for c in data["cells"].values() if c["meta"].get("host")})
    return (f"GPU: {', '.join(gpus) or setup.get('device', args.device)} · hosts {', '.join(hosts) or '?'} · model "
            f"{setup.get('config', args.config)} synthetic ({setup.get('dtype', args.dtype)}) · prompts of exactly "
            f"{setup.get('prompt_tokens', args.prompt_tokens)} tokens · {setup.get('max_new_tokens', args.max_new_tokens)} "
            f"new tokens, greedy, min = max · warm-up excluded, {setup.get('repeats', args.repeats)} timed passes per "
            "cell; tok/s: median (min–max) over passes; TPOT/TTFT: median over requests (min–max where the record "
            "has them, else p90)")


def write_table(args, batch_sizes: list[int] | None = None) -> str:
    data = load_all([args.out, *args.also])
    sizes = batch_sizes or (data.get("setup") or {}).get("batch_sizes") or args.batch_size_list
    table = build_table(data, sizes, table_header(data, args))
    (args.out / "table.md").write_text(table + "\n")
    return table


# --- main ---------------------------------------------------------------------------------------------


def print_plan(args, cells: list[Cell]) -> float:
    total, cut = 30.0, []  # copy bandwidth + checks
    print(f"== plan (estimates assume H200 rates, ASSUMED_TOK_S; fast engine: {args.est_compile_s:.0f} s compile per run "
          f"+ {args.est_capture_s:.0f} s capture per batch size; HF static {ASSUMED_HF_COMPILE_S} s compile per shape):",
          flush=True)
    planned: dict[str, set[int]] = {}  # batch sizes an earlier entry of this call measures (hf-static:1+64)
    for cell in cells:
        old = read_json(args.out / cell.name / "cell.json") or {}
        done = set(planned.get(cell.name, set()))
        for i in old.get("invocations", []) if args.reuse else []:  # kept if measured on a card of this machine
            if i.get("status") == "ok" or (i.get("status") == "failed" and cell.kind == "hf"
                                           and i.get("code") not in (None, 124)):
                done |= set(i.get("batch_sizes") or [])
        todo = tuple(b for b in cell_batch_sizes(args, cell) if b not in done)
        planned.setdefault(cell.name, set()).update(todo)
        est = estimate_s(args, replace(cell, only=todo)) if todo else 0.0
        if cell.kind == "worker" and todo and not getattr(args, "per_batch_requests", False):
            est = estimate_s(args, cell)  # worker runs are kept or re-run whole
        total += est
        if args.deadline_s and total > args.deadline_s:
            cut.append(cell.name)
        if cell.kind == "hf":
            parts = ", ".join(f"bs {bs}: {requests_for(args, cell, bs)} req" for bs in todo) or "done"
        else:
            parts = "; ".join(f"bs {','.join(map(str, i['batch_sizes']))}: {i['requests']} req"
                              + (f", M={i['micro_batches']}" if cell.mode == "pp" else "") for i in invocations(args, cell))
        name = cell.name + (":" + "+".join(map(str, cell.only)) if cell.only else "")
        print(f"   {name:16s} ~{est:4.0f} s   {parts}", flush=True)
    print(f"   total ~{total:.0f} s incl. copy bandwidth (+ the checkpoint write on a fresh machine)"
          + (f"; deadline {args.deadline_s:.0f} s" if args.deadline_s else ""), flush=True)
    if cut:
        print(f"   by this estimate the deadline cuts: {', '.join(cut)} (each cell saves what it finished; run the rest "
              "in a later call with --reuse)", flush=True)
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        print(write_table(args), flush=True)
        return 0
    clock = Clock(args.deadline_s)
    args.call_id = f"{socket.gethostname()}-{os.getpid()}-{int(clock.t0)}"
    cells = selected_cells(args.cells)
    args.per_batch_requests = args.assume_per_batch_requests or worker_takes_per_batch_requests()
    default_requests(args)
    print(f"== worker --num-requests per batch size: {'yes (one run per cell)' if args.per_batch_requests else 'no'}",
          flush=True)
    print_plan(args, cells)
    if args.dry_plan:
        return 0
    ckpt = make_checkpoint(args)
    prompts = make_prompts(ckpt, args.prompt_tokens, args.out / f"prompts-{args.prompt_tokens}.jsonl")
    from worker.contract import MODEL_CONFIGS

    cfg = json.loads((ckpt / "config.json").read_text())
    n_params = MODEL_CONFIGS[args.config].parameter_count() if args.config in MODEL_CONFIGS else None
    elem = {"float32": 4, "float16": 2, "bfloat16": 2}[args.dtype]
    write_json(args.out / "setup.json", {
        "config": args.config, "dtype": args.dtype, "device": args.device, "batch_sizes": args.batch_size_list,
        "prompt_tokens": args.prompt_tokens, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "warmup": args.warmup, "weight_bytes": n_params * elem if n_params else None,
        "hidden_size": cfg.get("hidden_size"), "num_hidden_layers": cfg.get("num_hidden_layers"),
    })
    flags = worker_flags()
    missing = [f for f in ("--impl", "--no-compile", "--no-cuda-graphs") if f not in flags]
    if missing:
        print(f"== note: this worker has no {', '.join(missing)}; fast / reference cells run its default engine "
              "and the table says so", flush=True)
    cards = run_copy_bw(args, clock)
    print(f"== cards: {', '.join(c[:13] for c in cards)}", flush=True)
    copy_out(args)
    failures = []
    for cell in cells:
        try:
            meta = run_cell(args, cell, ckpt, prompts, cards, flags, clock)
            if meta["status"] in ("failed", "partial") and cell.name != "ds-inject":
                failures.append(cell.name)
        except Exception as exc:  # noqa: BLE001 — never let one cell stop the others
            import traceback

            traceback.print_exc()
            write_json(args.out / cell.name / "cell.json", {
                "cell": cell.name, "label": cell.label, "world": cell.world, "mode": cell.mode, "impl": cell.impl,
                "cards": cards[: cell.world], "status": "failed", "reason": f"table script: {exc!r}", "invocations": []})
            failures.append(cell.name)
        try:
            write_table(args)
        except Exception:  # noqa: BLE001 — a table bug must not cost the remaining cells
            import traceback

            traceback.print_exc()
        copy_out(args)
    print("\n" + write_table(args), flush=True)
    print(f"\nTotal wall time of this call: {time.time() - clock.t0:.0f} s.", flush=True)
    copy_out(args)
    return 1 if failures else 0


def copy_out(args) -> None:
    if args.copy_to is None:
        return
    import shutil

    try:
        shutil.copytree(args.out, args.copy_to, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.partial"))
    except (OSError, shutil.Error) as exc:
        print(f"== copying {args.out} to {args.copy_to} failed: {exc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
