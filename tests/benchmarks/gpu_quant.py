"""Issue 10's GPU table: fp16, int8 and int4 weight-only on the fast engine, speed against accuracy, one card.

    python3 tests/benchmarks/gpu_quant.py --out /tmp/dinf-quant            # on the GPU machine (~6 min)
    python3 tests/benchmarks/gpu_quant.py --out DIR --table-only            # rebuild the table from DIR

First a kernel check (int4 and int8 matmuls against their dequantized weights, including the padded
8,640-wide input of the MLP's down projection), then the card's copy bandwidth (the roofline), then per
scheme two real `python -m worker run` jobs on the synthetic OpenLLaMA-3B-v2 in fp16, prompts of exactly
--prompt-tokens tokens and --max-new-tokens new tokens (min = max), --repeats timed passes after the
worker's warm-up (compile and graph capture excluded):

  bs 1      8 requests
  bs 64, 8  64 requests, then `--score`: the job loads the fp16 model beside the quantized one and
            judges it on the 20 prompts at batch 20 (greedy ids; teacher-forced KL, top-1, NLL ratio),
            beside the noise floor (fp16 at batch 20 against fp16 at batch 1)

The table gives tok/s and TPOT (median, min-max over repeats), the weight GB on the card, the share
of the HBM roofline (the bytes of weights a decode step streams, embeddings excepted, over the
measured copy bandwidth, against the measured TPOT), the speed-up over fp16 at the same batch size,
and the accuracy figures. Every ratio is within this one run on this one card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gpu_worker_table as table  # noqa: E402  (the shared launcher, checkpoint and prompt makers, copy bandwidth)

SCHEMES = ("none", "int8", "int4")
LABEL = {"none": "fp16", "int8": "int8 (per channel)", "int4": "int4 (group 128)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--jobs", default="bs1,bs64-8", help="which of each scheme's two jobs to run")
    p.add_argument("--config", default="open_llama_3b_v2")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--checkpoint-dir", type=Path, default=None)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run-timeout", type=int, default=300)
    p.add_argument("--deadline-s", type=float, default=0, help="skip jobs once this many seconds have passed")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--no-compiled-kernel", action="store_true",
                   help="leave torch.compile's int8 out of the kernel table (a compile per shape)")
    return p.parse_args(argv)


LAYER_SHAPES = {"wqkv": (9600, 3200), "wo": (3200, 3200), "w13": (17280, 3200), "w2": (3200, 8640)}


def kernel_check(device: str, compiled: bool = True) -> list[str]:
    """Each quantized matmul against its own dequantized weight (relative error), then the kernel table:
    microseconds and effective GB/s of weight read for every layer shape at 1, 8 and 64 rows, for
    fp16 cuBLAS, dinf's Triton int8 kernel, int8 through torch.compile's fusion (gpt-fast's
    `F.linear(x, q.to(x.dtype)) * scale`) and int4 through torch core's tinygemm (the kernel torchao's
    default int4 layout calls; what dinf runs). Timed with triton.testing.do_bench (L2 flushed between
    calls). A Triton int4 kernel of dinf's own lost to tinygemm at every shape here (results/issue10-H200)."""
    import torch
    import triton.testing

    from worker import quant

    lines = []
    torch.manual_seed(0)
    rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()
    for name, (n, k) in LAYER_SHAPES.items():
        w = (torch.randn(n, k, device=device) * 0.02).half()
        for m in (1, 8, 64):
            x = torch.randn(m, k, device=device).half()
            i8, i4 = quant.quantize(w, "int8"), quant.quantize(w, "int4")
            checks = {s: rel(quant.matmul(x, q), x @ quant.dequantize(q, torch.float16).T) for s, q in (("int8", i8), ("int4", i4))}
            timings = {
                "fp16 cuBLAS": (triton.testing.do_bench(lambda: x @ w.T), n * k * 2),
                "int8 triton": (triton.testing.do_bench(lambda: quant.matmul(x, i8)), n * k),
            }
            if compiled:
                compiled_i8 = torch.compile(lambda a, q=i8.q, sc=i8.scale: torch.nn.functional.linear(a, q.to(a.dtype)) * sc)
                timings["int8 compiled"] = (triton.testing.do_bench(lambda: compiled_i8(x)), n * k)
            timings["int4 tinygemm"] = (triton.testing.do_bench(lambda: quant.matmul(x, i4)), n * k // 2)
            cells = ", ".join(f"{label} {ms * 1e3:.1f} us {nbytes / (ms / 1e3) / 1e9:,.0f} GB/s"
                              for label, (ms, nbytes) in timings.items())
            lines.append(f"{name} [{n}x{k}] M={m}: err int8 {checks['int8']:.1e} int4 {checks['int4']:.1e}; {cells}")
    return lines


def invocations(scheme: str) -> list[dict]:
    return [
        {"name": "bs1", "batch_sizes": [1], "requests": 8, "extra": ["--quant", scheme]},
        {"name": "bs64-8", "batch_sizes": [64, 8], "requests": 64, "extra": ["--quant", scheme, "--score"]},
    ]


def collect(out: Path, schemes: list[str]) -> dict:
    rows, accuracy, weights = {}, {}, {}
    for scheme in schemes:
        for inv in invocations(scheme):
            path = out / scheme / inv["name"] / "result.json"
            if not path.is_file():
                continue
            result = json.loads(path.read_text())
            weights[scheme] = result["ranks"][0]["param_bytes"]
            for m in result["measurements"]:
                rows[(scheme, m["batch_size"])] = m
            if "accuracy" in result:
                accuracy[scheme] = result["accuracy"]
    return {"rows": rows, "accuracy": accuracy, "weights": weights}


def spread(stat: dict, scale: float, digits: int) -> str:
    if not stat or stat.get("median") is None:
        return "-"
    return f"{stat['median'] * scale:.{digits}f} ({stat['min'] * scale:.{digits}f}-{stat['max'] * scale:.{digits}f})"


def render(out: Path, schemes: list[str], bandwidth: float | None, embed_bytes: int, card: str) -> str:
    data = collect(out, schemes)
    lines = [f"# fp16 / int8 / int4 weight-only on the fast engine: one {card}", ""]
    if bandwidth:
        lines.append(f"Copy bandwidth (the roofline's denominator): {bandwidth / 1e12:.2f} TB/s.")
    lines += ["", "| scheme | batch | tok/s (median, min-max) | TPOT ms (median, min-max) | weights GB | "
                  "% of its roofline | × fp16 |", "|---|---|---|---|---|---|---|"]
    for scheme in schemes:
        for bs in sorted({b for (s, b) in data["rows"] if s == scheme}):
            m = data["rows"][(scheme, bs)]
            tok = m.get("output_throughput_tok_s")
            tpot = m.get("tpot_s") or {}
            wb = data["weights"].get(scheme)
            pct = "-"
            if bandwidth and wb and tpot.get("median"):
                pct = f"{(wb - embed_bytes) / bandwidth / tpot['median']:.0%}"
            base = data["rows"].get(("none", bs), {}).get("output_throughput_tok_s")
            ratio = f"{tok / base:.2f}×" if tok and base else "-"
            tok_text = f"{tok:,.0f}" if tok else "-"
            per_repeat = (m.get("raw") or {}).get("output_throughput_tok_s") or []
            if len(per_repeat) > 1:
                tok_text += f" ({min(per_repeat):,.0f}-{max(per_repeat):,.0f})"
            lines.append(f"| {LABEL[scheme]} | {bs} | {tok_text} | {spread(tpot, 1e3, 3)} | "
                         f"{wb / 1e9:.2f} | {pct} | {ratio} |" if wb else f"| {LABEL[scheme]} | {bs} | {tok_text} | "
                         f"{spread(tpot, 1e3, 3)} | - | {pct} | {ratio} |")
    lines += ["", "Accuracy against the fp16 model loaded in the same job (20 prompts, greedy, teacher-forced "
                  "on fp16's continuations), beside the noise floor (fp16 at another batch split):", "",
              "| scheme | batch | exact ids | top-k agree at divergence | KL mean | KL p99 | top-1 agree | "
              "NLL ratio | floor: exact | floor: KL mean | floor: top-1 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scheme in schemes:
        a = data["accuracy"].get(scheme)
        if not a:
            continue
        f = a["noise_floor"]
        topk = "-" if a["topk_agree_at_divergence"] is None else f"{a['topk_agree_at_divergence']:.0%}"
        lines.append(
            f"| {LABEL[scheme]} | {a['batch_size']} | {a['exact_match']}/{a['prompts']} | {topk} | {a['kl_mean']:.2e} | "
            f"{a['kl_p99']:.2e} | {a['top1_agreement']:.2%} | {a['nll_ratio']:.4f} | "
            f"{f['exact_match']}/{f['prompts']} (bs {f['batch_size']}) | {f['kl_mean']:.2e} | {f['top1_agreement']:.2%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    schemes = [s for s in args.schemes.split(",") if s]
    from worker.contract import MODEL_CONFIGS

    cfg = MODEL_CONFIGS[args.config]
    embed_bytes = cfg.vocab_size * cfg.hidden_size * 2
    setup_path = args.out / "setup.json"
    if args.table_only:
        setup = json.loads(setup_path.read_text())
        print(render(args.out, schemes, setup.get("bandwidth_Bps"), embed_bytes, setup.get("card", "?")))
        return 0
    clock = table.Clock(args.deadline_s)
    checks = kernel_check(args.device, compiled=not args.no_compiled_kernel)
    print("== kernel check\n" + "\n".join(checks), flush=True)
    cards = table.run_copy_bw(args, clock)
    bw_files = sorted((args.out / "copy-bw").glob("*/copy_bw.json"))
    bw = None
    if bw_files:
        measured = json.loads(bw_files[-1].read_text()).get("cards", [])
        bw = min(c["bandwidth_Bps"] for c in measured) if measured else None
    import torch

    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    setup = {"bandwidth_Bps": bw, "card": card, "kernel_check": checks, "cards": cards}
    setup_path.write_text(json.dumps(setup, indent=2))
    ckpt = table.make_checkpoint(args)
    prompts = table.make_prompts(ckpt, args.prompt_tokens, args.out / "prompts.jsonl")
    failures = 0
    for scheme in schemes:
        for inv in invocations(scheme):
            if inv["name"] not in args.jobs.split(","):
                continue
            run_dir = args.out / scheme / inv["name"]
            if (run_dir / "result.json").is_file():
                continue
            if clock.left() < 60:
                print(f"== skip {scheme}/{inv['name']} (deadline)", flush=True)
                continue
            t0 = time.time()
            code = table.run_worker(args, ckpt, "single", 1, run_dir, inv["batch_sizes"], inv["requests"], 1,
                                    prompts=prompts, extra=inv["extra"], timeout=clock.timeout(args.run_timeout))
            failures += code != 0
            print(f"== {scheme}/{inv['name']}: exit {code} in {time.time() - t0:.0f} s", flush=True)
            (args.out / "table.md").write_text(render(args.out, schemes, bw, embed_bytes, card))
    text = render(args.out, schemes, bw, embed_bytes, card)
    (args.out / "table.md").write_text(text)
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
