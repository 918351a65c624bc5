"""`dinf-worker` (and `python -m worker`): run | make-checkpoint | compare.

`run --spec FILE` reads a RunSpec; every spec field is also a flag, and flags override the file, so a
run can start from a shell with no JSON at all:

    dinf-worker run --checkpoint DIR --mode pp --pp-size 2 --micro-batches 2 --batch-sizes 1,4 \\
        --max-new-tokens 16 --prompts FILE --dtype float32 --impl fast --out DIR

Parsing only: the work is in runner.py, checkpoint.py and compare.py.
"""

from __future__ import annotations

import time

PROCESS_START_NS = time.perf_counter_ns()  # "load time" starts here (as early as the worker can see)

import argparse  # noqa: E402 — after the clock starts
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from worker import contract  # noqa: E402
from worker.contract import MODEL_CONFIGS, RunSpec, SpecError  # noqa: E402


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinf-worker", description="Distributed LLaMA inference worker")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one measurement job (one process per rank)")
    run.add_argument("--spec", type=Path, help="RunSpec JSON file; the flags below override its fields")
    run.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    flags = run.add_argument_group("spec fields")
    flags.add_argument("--run-name", dest="run_name")
    flags.add_argument("--checkpoint", help="local Hugging Face model directory (model.source = checkpoint)")
    flags.add_argument("--synthetic-config", dest="synthetic_config", choices=sorted(MODEL_CONFIGS),
                       help="synthetic model made from (seed, tensor name), no files")
    flags.add_argument("--seed", type=int, help="seed of the synthetic model")
    flags.add_argument("--dtype", help="float32 | float16 | bfloat16")
    flags.add_argument("--mode", help="single | pp | tp | dp")
    flags.add_argument("--impl", help="fast (default: fused model, static cache, captured steps) | reference "
                                      "(the HF modules; DeepSpeed AutoTP in tp mode)")
    flags.add_argument("--compile", type=_bool, nargs="?", const=True, help="fast impl on CUDA (default true)")
    flags.add_argument("--no-compile", dest="compile", action="store_const", const=False)
    flags.add_argument("--cuda-graphs", dest="cuda_graphs", type=_bool, nargs="?", const=True,
                       help="fast impl on CUDA (default true)")
    flags.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_const", const=False)
    flags.add_argument("--quant", help="none (default) | int8 | int4: weight-only quantization (fast impl; int4 on CUDA)")
    flags.add_argument("--score", type=_bool, nargs="?", const=True,
                       help="judge the model against the unquantized one in the same job (single mode)")
    flags.add_argument("--pp-size", dest="pp_size", type=int)
    flags.add_argument("--micro-batches", dest="micro_batches", type=int)
    flags.add_argument("--pp-layer-split", dest="pp_layer_split", type=_int_list, help="e.g. 2,2")
    flags.add_argument("--batch-sizes", dest="batch_sizes", type=_int_list, help="e.g. 1,4")
    flags.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    flags.add_argument("--prompts", dest="prompts_file", help='JSON-lines file of {"prompt": ...}')
    flags.add_argument("--num-requests", dest="num_requests", type=int)
    flags.add_argument("--warmup", type=int)
    flags.add_argument("--repeats", type=int)
    flags.add_argument("--profile", type=_bool, nargs="?", const=True)
    flags.add_argument("--ignore-eos", dest="ignore_eos", type=_bool, nargs="?", const=True)
    flags.add_argument("--top-k", dest="top_k", type=int)
    flags.add_argument("--device", help="auto | cpu | cuda")
    flags.add_argument("--dist-timeout", dest="dist_timeout_s", type=float, help="seconds")
    flags.add_argument("--out", dest="output_dir", help="output directory")

    mk = sub.add_parser("make-checkpoint", help="write a synthetic checkpoint + tokenizer to a directory")
    mk.add_argument("--config", required=True, choices=sorted(MODEL_CONFIGS))
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--out", required=True, type=Path)
    mk.add_argument("--dtype", default="float32", choices=contract.DTYPES)

    cmp = sub.add_parser("compare", help="greedy-id agreement of a run with a baseline run")
    cmp.add_argument("baseline_dir", type=Path)
    cmp.add_argument("run_dir", type=Path)
    cmp.add_argument("--batch-size", type=int, help="compare this batch size's completions (default: each common one)")
    return parser


_SPEC_FIELDS = (
    "run_name", "dtype", "mode", "impl", "compile", "cuda_graphs", "quant", "score", "pp_size", "micro_batches", "pp_layer_split", "batch_sizes", "max_new_tokens",
    "prompts_file", "num_requests", "warmup", "repeats", "profile", "ignore_eos", "top_k", "device",
    "dist_timeout_s", "output_dir",
)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The spec file (if any) with the flags laid over it; raises SpecError naming every bad field."""
    data: dict = {}
    if args.spec is not None:
        try:
            data = json.loads(args.spec.read_text())
        except OSError as exc:
            raise SpecError({"--spec": f"cannot read {args.spec}: {exc.strerror}"}) from None
        except json.JSONDecodeError as exc:
            raise SpecError({"--spec": f"{args.spec} is not valid JSON: {exc}"}) from None
        if not isinstance(data, dict):
            raise SpecError({"--spec": f"{args.spec} must hold a JSON object"})
    for name in _SPEC_FIELDS:
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    model = dict(data.get("model") or {}) if isinstance(data.get("model", {}), dict) else data.get("model")
    if isinstance(model, dict):
        if args.checkpoint is not None:
            model.update(source="checkpoint", path=str(Path(args.checkpoint).resolve()))
        if args.synthetic_config is not None:
            model.update(source="synthetic", config=args.synthetic_config, path=None)
        if args.seed is not None:
            model["seed"] = args.seed
    data["model"] = model
    return RunSpec.from_dict(data)


def run_command(argv: list[str] | None = None) -> int:
    """Parse and run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "make-checkpoint":
        from worker.checkpoint import write_synthetic_checkpoint

        out = write_synthetic_checkpoint(MODEL_CONFIGS[args.config], args.seed, args.out, args.dtype)
        print(f"wrote synthetic {args.config} (seed {args.seed}, {args.dtype}) to {out}")
        return contract.EXIT_OK
    if args.command == "compare":
        from worker.compare import CompareError, compare_dirs

        try:
            compare_dirs(args.baseline_dir, args.run_dir, batch_size=args.batch_size)
        except CompareError as exc:
            print(f"dinf-worker compare: {exc}", file=sys.stderr)
            return contract.EXIT_BAD_SPEC
        return contract.EXIT_OK
    try:
        spec = spec_from_args(args)
    except SpecError as exc:
        if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
            print(f"dinf-worker: {exc}", file=sys.stderr)
        return contract.EXIT_BAD_SPEC
    from worker.runner import run

    return run(spec, PROCESS_START_NS)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the command and exits with its code."""
    code = run_command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file the run writes is closed by now. Leave without the interpreter's teardown: a failed
    # run must not hang there waiting for a dead peer, and a finished one must not die there either
    # (gloo/DeepSpeed destructors racing the other rank's exit aborted a rank now and then: exit -6
    # after "phase done").
    os._exit(code)


if __name__ == "__main__":
    main()
