"""The non-dinf cells of the issue-9 GPU table, each run in its own process by gpu_worker_table.py.

    python3 tests/benchmarks/gpu_baselines.py copy-bw --out DIR [--device cuda]
    python3 tests/benchmarks/gpu_baselines.py generate --engine eager|static|ds-inject --checkpoint CKPT \\
        --prompts FILE --requests 1:1,8:8,64:64,128:128 --max-new-tokens 128 --out DIR

copy-bw: a large device-to-device copy per visible GPU, timed with CUDA events (warm-up first, median
of --repeats), bandwidth = 2 x bytes / time (each byte is read once and written once). Writes
copy_bw.json keyed by the card's UUID, so the table can match every cell to the card it ran on.

generate: Hugging Face `generate` on one device over the same left-padded batches the worker builds
(worker.tokenizer.make_batches), greedy, min_new_tokens = max_new_tokens. Engines:
  eager     -- the default dynamic cache;
  static    -- `cache_implementation="static"`: transformers compiles the forward itself on the first
               call of each shape; that first call is timed on its own and reported as capture_s;
  ds-inject -- DeepSpeed-Inference `init_inference(replace_with_kernel_inject=True)` (fp16), then the
               same generate (its JIT kernel build is timed as capture_s).
Per batch size: one warm-up call on the first batch (timed: capture_s), then --repeats timed passes
over all batches. Token times come from a streamer (the ids reach the host each step anyway: generate
syncs per step for its stopping check), so TTFT / TPOT follow METRICS.md. Writes result.json with
the worker's measurement layout (worker/contract.py) plus min/max on the request statistics, and
completions.jsonl of the first timed pass.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def stat(values: list[float]) -> dict:
    """worker.contract.stat_summary plus min and max (the table's spread)."""
    from worker.contract import stat_summary

    s = stat_summary(values)
    s["min"] = min(values) if values else None
    s["max"] = max(values) if values else None
    return s


def parse_requests(text: str) -> dict[int, int]:
    """'1:4,8:48' -> {1: 4, 8: 48} (batch size -> requests per pass)."""
    out = {}
    for part in text.split(","):
        if part.strip():
            bs, n = part.split(":")
            out[int(bs)] = int(n)
    return out


def card_ids(device_type: str) -> list[dict]:
    """[{index, uuid, name}] of the visible cards (CPU: one pseudo-card named after the host)."""
    if device_type != "cuda":
        return [{"index": 0, "uuid": f"cpu-{socket.gethostname()}", "name": "cpu"}]
    import torch

    cards = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        uuid = str(getattr(props, "uuid", "") or f"{socket.gethostname()}-cuda{i}")
        cards.append({"index": i, "uuid": norm_uuid(uuid), "name": props.name})
    return cards


def norm_uuid(text: str) -> str:
    return text.strip().lower().removeprefix("gpu-")


def copy_bw(args) -> int:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for card in card_ids(args.device):
        if args.device == "cuda":
            dev = torch.device("cuda", card["index"])
            with torch.cuda.device(dev):  # events record on the current device's stream: make it this card's
                n = args.copy_mib * 2**20
                src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=dev)
                dst = torch.empty_like(src)
                for _ in range(3):
                    dst.copy_(src)
                torch.cuda.synchronize(dev)
                times = []
                for _ in range(args.repeats):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    dst.copy_(src)
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b) / 1e3)
                del src, dst
                torch.cuda.empty_cache()
        else:  # CPU: a memcpy, so the table's roofline logic runs end to end in the dry run
            n = min(args.copy_mib, 64) * 2**20
            src = torch.randint(0, 255, (n,), dtype=torch.uint8)
            dst = torch.empty_like(src)
            dst.copy_(src)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                dst.copy_(src)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results.append({**card, "copy_bytes": n, "times_s": times, "median_s": med,
                        "bandwidth_Bps": 2 * n / med, "min_bandwidth_Bps": 2 * n / max(times),
                        "max_bandwidth_Bps": 2 * n / min(times), "device_type": args.device})
        print(f"copy bandwidth {card['name']} {card['uuid']}: {2 * n / med / 1e12:.3f} TB/s "
              f"(median of {len(times)}, {n / 2**20:.0f} MiB, 2 x bytes / time)", flush=True)
    (out / "copy_bw.json").write_text(json.dumps({"host": socket.gethostname(), "cards": results}, indent=2))
    return 0


class TokenClock:
    """A generate streamer that records when each generated step's ids reach the host."""

    def __init__(self, sync):
        self.sync, self.t0, self.times, self._prompt_seen = sync, 0.0, [], False

    def start(self):
        self.t0, self.times, self._prompt_seen = time.perf_counter(), [], False

    def put(self, value):
        if not self._prompt_seen:  # generate's first put is the prompt
            self._prompt_seen = True
            return
        self.sync()
        self.times.append(time.perf_counter() - self.t0)

    def end(self):
        pass


def generate(args) -> int:
    import torch
    from transformers import LlamaForCausalLM

    from worker.checkpoint import DTYPES
    from worker.runner import read_prompts
    from worker.tokenizer import encode_prompt, load_tokenizer, make_batches

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as each worker rank runs (OMP_NUM_THREADS=1)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    tok = load_tokenizer(args.checkpoint)
    t_load = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(str(args.checkpoint), dtype=DTYPES[args.dtype]).to(device).eval()
    engine = {"impl": f"hf-{args.engine}", "compiled": args.engine == "static", "cuda_graphs": args.engine == "static",
              "capture_s": None}
    if args.engine == "ds-inject":
        import deepspeed

        t0 = time.perf_counter()
        ds = deepspeed.init_inference(model, dtype=DTYPES[args.dtype], replace_with_kernel_inject=True,
                                      enable_cuda_graph=args.ds_cuda_graph)
        model = ds.module
        engine.update(impl="deepspeed-kernel-inject", compiled=False, cuda_graphs=args.ds_cuda_graph,
                      init_s=time.perf_counter() - t0)
        print(f"deepspeed init_inference (kernel inject) took {engine['init_s']:.1f} s", flush=True)
    load_s = time.perf_counter() - t_load
    prompts = read_prompts(args.prompts)
    n = args.max_new_tokens
    clock = TokenClock(sync)
    extra = {"cache_implementation": "static"} if args.engine == "static" else {}

    def gen(batch, streamer=None):
        with torch.inference_mode():
            return model.generate(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                                  max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                                  streamer=streamer, **extra)[:, batch.input_ids.shape[1]:]

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    import transformers

    result = {
        "kind": "dinf.baseline", "engine": engine, "load_time_s": load_s, "world_size": 1, "num_gpus": 1,
        "environment": {"gpu_model": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
                        "host": socket.gethostname()},
        "cards": card_ids(args.device)[:1],
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "measurements": [],
    }
    measurements, records, captures = result["measurements"], [], []
    for bs, requests in parse_requests(args.requests).items():  # in the order given: the most needed first
        ids = [encode_prompt(tok, prompts[i % len(prompts)]) for i in range(requests)]
        batches = make_batches(ids, bs, tok.pad_token_id)
        sync()
        t0 = time.perf_counter()
        gen(batches[0])  # first call of this shape: compile + capture for `static`
        sync()
        first_call_s = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            gen(batches[0])
        walls, tps, ttft, tpot = [], [], [], []
        for rep in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            for b in batches:
                clock.start()
                o = gen(b, clock)
                times = list(clock.times)
                for _ in b.indices:
                    ttft.append(times[0])
                    if len(times) > 1:
                        tpot.append((times[-1] - times[0]) / (len(times) - 1))
                if rep == 0:
                    for i, row in zip(b.indices, o.tolist()):
                        records.append({"batch_size": bs, "index": i, "output_ids": row, "topk_ids": []})
            sync()
            walls.append(time.perf_counter() - t0)
            tps.append(requests * n / walls[-1])
        if args.engine == "static":  # did transformers really compile the forward? (it does only on CUDA)
            engine["compiled"] = engine["cuda_graphs"] = getattr(model, "_compiled_call", None) is not None
        capture = first_call_s if args.engine == "static" else None
        captures.append(first_call_s)
        measurements.append({
            "batch_size": bs, "num_requests": requests, "max_new_tokens": n, "prompt_tokens": sum(map(len, ids)),
            "output_tokens": requests * n, "repeats": args.repeats, "wall_s": walls,
            "ttft_s": stat(ttft), "tpot_s": stat(tpot), "output_throughput_tok_s": statistics.median(tps),
            "raw": {"output_throughput_tok_s": tps}, "first_call_s": first_call_s, "capture_s": capture,
        })
        print(f"== {engine['impl']} bs {bs}: {statistics.median(tps):.1f} tok/s (first call {first_call_s:.1f} s, "
              f"{requests} requests x {args.repeats} passes)", flush=True)
        if args.engine == "static":
            engine["capture_s"] = sum(captures)
        save(out, result, records)  # after every batch size: a timeout keeps what was measured
    return 0


def save(out: Path, result: dict, records: list[dict]) -> None:
    for name, text in (("completions.jsonl", "".join(json.dumps(r) + "\n" for r in records)),
                       ("result.json", json.dumps(result, indent=2))):
        tmp = out / (name + ".partial")
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("copy-bw")
    c.add_argument("--out", required=True)
    c.add_argument("--device", default="cuda")
    c.add_argument("--copy-mib", type=int, default=2048)
    c.add_argument("--repeats", type=int, default=10)
    g = sub.add_parser("generate")
    g.add_argument("--engine", choices=("eager", "static", "ds-inject"), required=True)
    g.add_argument("--checkpoint", required=True)
    g.add_argument("--prompts", required=True)
    g.add_argument("--requests", required=True, help="batch:requests,...")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--dtype", default="float16")
    g.add_argument("--device", default="cuda")
    g.add_argument("--warmup", type=int, default=1)
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--ds-cuda-graph", action="store_true")
    g.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return copy_bw(args) if args.command == "copy-bw" else generate(args)


if __name__ == "__main__":
    sys.exit(main())
