"""The contract between the laptop and the cluster: run spec, events, result bundle, file layout.

Standard library only. The worker reads a `RunSpec` and writes events, logs, a result bundle and
completions; the laptop side (`remote`, `storage`, `tui`) builds specs and reads those records with
the same definitions. Nothing here imports torch, so `import worker.contract` is cheap anywhere.

It deliberately holds no behaviour beyond validation and (de)serialisation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1
"""Bumped on any incompatible change to the spec, events or result bundle."""

MODES = ("single", "pp", "tp", "dp")
IMPLS = ("fast", "reference")
"""`fast`: the compact fused model with a static cache and captured decode steps (worker/engine.py);
`reference`: the Hugging Face modules (and DeepSpeed AutoTP for tp), kept to check and compare against."""
DTYPES = ("float32", "float16", "bfloat16")
QUANT_SCHEMES = ("none", "int8", "int4")
"""Weight-only quantization of the fast implementation's matmul weights (worker/quant.py): int8 per
output channel; int4 in groups of 128 (CUDA only)."""
QUANT_GROUP_SIZES = {"none": None, "int8": None, "int4": 128}
MODEL_SOURCES = ("synthetic", "checkpoint")
DEVICES = ("auto", "cpu", "cuda")
PHASES = ("start", "init", "load", "warmup", "measure", "score", "done", "failed")
EVENT_KINDS = ("phase", "progress", "heartbeat", "error", "log")

# Exit codes of `dinf-worker`: 2 is argparse's convention for bad input.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
EXIT_PEER_LOST = 3


@dataclass(frozen=True)
class ModelConfig:
    """The LLaMA shape a synthetic model or a checkpoint must have."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    tie_word_embeddings: bool = False

    def parameter_count(self) -> int:
        h, i, v, n = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
        kv = h // self.num_attention_heads * self.num_key_value_heads
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
        head = 0 if self.tie_word_embeddings else v * h
        return v * h + n * per_layer + h + head


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # OpenLLaMA-3B-v2: 3.43 B parameters, 6.85 GB in fp16.
    "open_llama_3b_v2": ModelConfig(
        hidden_size=3200,
        intermediate_size=8640,
        num_hidden_layers=26,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    # Small enough that a 4-process CPU test decodes in seconds, deep enough for 4 pipeline stages.
    "tiny": ModelConfig(
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=512,
        max_position_embeddings=1024,
    ),
}


class SpecError(ValueError):
    """A run spec with one or more bad fields; `problems` maps each field to what is wrong."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        lines = [f"  {name}: {why}" for name, why in sorted(self.problems.items())]
        super().__init__("invalid run spec:\n" + "\n".join(lines))


@dataclass
class ModelSource:
    """Where the weights come from: made per tensor from (seed, name), or a local HF directory."""

    source: str = "synthetic"
    config: str = "tiny"
    """Named config (synthetic); for a checkpoint the directory's config.json is authoritative."""
    seed: int = 0
    path: str | None = None
    """Local Hugging Face directory (safetensors or pytorch_model.bin) when source == 'checkpoint'."""


@dataclass
class RunSpec:
    """Everything one worker job needs. Serialised as JSON beside the job; validated before any work."""

    run_name: str = "run"
    model: ModelSource = field(default_factory=ModelSource)
    dtype: str = "float32"
    mode: str = "single"
    impl: str = "fast"
    """Implementation (IMPLS); in tp mode `reference` is DeepSpeed AutoTP."""
    compile: bool = True
    """fast impl on CUDA: torch.compile one decoder layer (reused by every layer). Ignored on CPU."""
    cuda_graphs: bool = True
    """fast impl on CUDA: capture each decode step as a CUDA graph at warm-up. Ignored on CPU."""
    quant: str = "none"
    """Weight-only quantization (QUANT_SCHEMES), fast impl only; done per rank at load."""
    score: bool = False
    """After the measurements, judge this run's model against the unquantized one in the same job:
    greedy ids and teacher-forced log-probs on the prompts (one rank; writes scores.jsonl and
    result.json "accuracy")."""
    pp_size: int | None = None
    """Pipeline stages; defaults to the world size in `pp` mode."""
    micro_batches: int = 1
    """Micro-batches in flight in pp; a batch smaller than this runs one micro-batch per row."""
    pp_layer_split: list[int] | None = None
    """Layers per stage, overriding the balanced split; must sum to the model's layer count."""
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    max_new_tokens: int = 16
    prompts_file: str | None = None
    """JSON-lines file of {"prompt": str}; None uses the 20 prompts shipped with the worker."""
    num_requests: int | None = None
    """Requests per measurement, cycling the prompts; None = one per prompt. Weak scaling grows it."""
    warmup: int = 1
    repeats: int = 3
    profile: bool = False
    """Record compute / communication / idle time per rank (adds device syncs)."""
    ignore_eos: bool = True
    """Generate exactly max_new_tokens per request (min_new_tokens = max_new_tokens), as METRICS.md asks."""
    top_k: int = 5
    """Top-k ids kept per generated token, for the correctness comparison."""
    device: str = "auto"
    dist_timeout_s: float = 120.0
    """How long a collective or point-to-point op may wait for a peer before the job fails."""
    output_dir: str = "out"
    schema_version: int = SCHEMA_VERSION

    # --- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Build and validate; raises SpecError naming every unknown or bad field at once."""
        if not isinstance(data, dict):
            raise SpecError({"<spec>": "must be a JSON object"})
        problems: dict[str, str] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        for name in data:
            if name not in known:
                problems[name] = "unknown field"
        kwargs = {k: v for k, v in data.items() if k in known}
        model = kwargs.get("model", {})
        if isinstance(model, dict):
            model_known = {f.name for f in dataclasses.fields(ModelSource)}
            for name in model:
                if name not in model_known:
                    problems[f"model.{name}"] = "unknown field"
            kwargs["model"] = ModelSource(**{k: v for k, v in model.items() if k in model_known})
        else:
            problems["model"] = "must be an object"
            kwargs.pop("model")
        spec = cls(**kwargs)
        problems.update(spec.problems())
        if problems:
            raise SpecError(problems)
        return spec

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError({"<spec>": f"not valid JSON: {exc}"}) from exc
        return cls.from_dict(data)

    # --- validation ----------------------------------------------------------------------------

    def problems(self, world_size: int | None = None) -> dict[str, str]:
        """Every bad field with the reason; empty when the spec is valid (for `world_size` ranks)."""
        p: dict[str, str] = {}

        def check_int(name: str, value: Any, minimum: int) -> bool:
            if isinstance(value, bool) or not isinstance(value, int):
                p[name] = f"must be an integer, got {value!r}"
                return False
            if value < minimum:
                p[name] = f"must be >= {minimum}, got {value}"
                return False
            return True

        if self.schema_version != SCHEMA_VERSION:
            p["schema_version"] = (
                f"this worker reads schema {SCHEMA_VERSION}, the spec has {self.schema_version!r}; "
                "update dinf on the side that is older"
            )
        if not isinstance(self.run_name, str) or not self.run_name.strip():
            p["run_name"] = "must be a non-empty string"
        m = self.model
        if m.source not in MODEL_SOURCES:
            p["model.source"] = f"must be one of {', '.join(MODEL_SOURCES)}, got {m.source!r}"
        elif m.source == "synthetic":
            if m.config not in MODEL_CONFIGS:
                p["model.config"] = f"unknown config {m.config!r}; known: {', '.join(MODEL_CONFIGS)}"
            check_int("model.seed", m.seed, 0)
        elif not m.path or not isinstance(m.path, str):
            p["model.path"] = "a checkpoint source needs the path of a local model directory"
        if self.dtype not in DTYPES:
            p["dtype"] = f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
        if self.mode not in MODES:
            p["mode"] = f"must be one of {', '.join(MODES)}, got {self.mode!r}"
        if self.impl not in IMPLS:
            p["impl"] = f"must be one of {', '.join(IMPLS)}, got {self.impl!r}"
        if self.quant not in QUANT_SCHEMES:
            p["quant"] = f"must be one of {', '.join(QUANT_SCHEMES)}, got {self.quant!r}"
        elif self.quant != "none" and self.impl != "fast":
            p["quant"] = f"{self.quant} runs on the fast implementation only (impl is {self.impl!r}); use --impl fast"
        elif self.quant == "int4" and self.device == "cpu":
            p["quant"] = "int4 runs through a CUDA kernel; on CPU use int8 or none"
        if self.score and self.mode != "single":
            p["score"] = f"scoring runs on one rank (mode single), not in mode {self.mode!r}"
        for name in ("compile", "cuda_graphs", "score"):
            if not isinstance(getattr(self, name), bool):
                p[name] = f"must be true or false, got {getattr(self, name)!r}"
        if self.device not in DEVICES:
            p["device"] = f"must be one of {', '.join(DEVICES)}, got {self.device!r}"
        if self.pp_size is not None and check_int("pp_size", self.pp_size, 1):
            if self.mode != "pp" and self.pp_size != 1:
                p["pp_size"] = f"only the pp mode has pipeline stages (mode is {self.mode!r})"
        check_int("micro_batches", self.micro_batches, 1)
        if not isinstance(self.batch_sizes, list) or not self.batch_sizes:
            p["batch_sizes"] = "must be a non-empty list of positive integers"
        else:
            bad = [b for b in self.batch_sizes if isinstance(b, bool) or not isinstance(b, int) or b < 1]
            if bad:
                p["batch_sizes"] = f"every batch size must be an integer >= 1; bad: {bad}"
        check_int("max_new_tokens", self.max_new_tokens, 1)
        if self.num_requests is not None:
            check_int("num_requests", self.num_requests, 1)
        check_int("warmup", self.warmup, 0)
        check_int("repeats", self.repeats, 1)
        check_int("top_k", self.top_k, 1)
        if not isinstance(self.dist_timeout_s, (int, float)) or self.dist_timeout_s <= 0:
            p["dist_timeout_s"] = f"must be a positive number of seconds, got {self.dist_timeout_s!r}"
        if not isinstance(self.output_dir, str) or not self.output_dir:
            p["output_dir"] = "must be a non-empty path"

        layers = None
        if m.source == "synthetic" and m.config in MODEL_CONFIGS:
            layers = MODEL_CONFIGS[m.config].num_hidden_layers
        stages = self.pp_size if isinstance(self.pp_size, int) else world_size
        if self.mode == "pp" and isinstance(stages, int) and stages >= 1:
            if layers is not None and stages > layers:
                p["pp_size"] = f"{stages} pipeline stages but the model has only {layers} layers"
            # A batch smaller than micro_batches runs min(micro_batches, batch) micro-batches; each
            # measurement records the count it used (`micro_batches`).
        if self.pp_layer_split is not None:
            split = self.pp_layer_split
            if self.mode != "pp":
                p["pp_layer_split"] = "only the pp mode splits layers"
            elif not isinstance(split, list) or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in split
            ):
                p["pp_layer_split"] = "must be a list of positive layer counts, one per stage"
            else:
                if isinstance(stages, int) and len(split) != stages:
                    p["pp_layer_split"] = f"has {len(split)} entries for {stages} stages"
                elif layers is not None and sum(split) != layers:
                    p["pp_layer_split"] = f"sums to {sum(split)} but the model has {layers} layers"
        if world_size is not None:
            if self.mode == "single" and world_size != 1:
                p["mode"] = f"single runs on exactly one rank, but {world_size} were started"
            if self.mode == "pp" and isinstance(self.pp_size, int) and self.pp_size != world_size:
                p["pp_size"] = f"{self.pp_size} stages need {self.pp_size} ranks, {world_size} were started"
        return p

    def validate(self, world_size: int | None = None) -> RunSpec:
        problems = self.problems(world_size)
        if problems:
            raise SpecError(problems)
        return self


# --- files a run writes (relative to its output_dir) ----------------------------------------------

RESULT_FILE = "result.json"
COMPLETIONS_FILE = "completions.jsonl"
COMPARISON_FILE = "comparison.json"
SPEC_FILE = "spec.json"
SCORES_FILE = "scores.jsonl"


def events_file(rank: int) -> str:
    """Per-rank JSON-lines event stream, flushed per line."""
    return f"rank{rank}.events.jsonl"


def log_file(rank: int) -> str:
    """Per-rank human-readable log written by the worker itself."""
    return f"rank{rank}.log"


def trace_file(rank: int) -> str:
    """Per-rank Chrome / Perfetto trace-event file of a profiled run (worker/trace.py)."""
    return f"rank{rank}.trace.json"


def launcher_log_file(job_id: str, rank: int) -> str:
    """Per-rank stdout/stderr captured by the launcher (srun --output / the local backend)."""
    return f"{job_id}-rank{rank}.out"


# --- events -----------------------------------------------------------------------------------


def make_event(kind: str, rank: int, **payload: Any) -> dict[str, Any]:
    """One event record. `ts` is Unix time (seconds) so lines from all ranks merge by timestamp.

    kinds and their payload:
      phase:     phase (one of PHASES), plus free detail; warmup and measure carry batch_size and
                 the plan: batch_index, batch_count (1-based position of batch_size in
                 spec.batch_sizes, and their number), repeats (timed passes per batch size)
      progress:  batch_size, tokens_done, tokens_expected (of this timed pass, sent after each
                 batch), and the plan: repeat (1-based pass), repeats, batch_index, batch_count
      heartbeat: (nothing more)
      error:     message, traceback
      log:       level, message

    The plan fields came later (same schema version): a reader treats them as optional, since
    events written by an older worker lack them.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return {"v": SCHEMA_VERSION, "ts": time.time(), "rank": rank, "kind": kind, **payload}


def parse_event(line: str) -> dict[str, Any] | None:
    """Parse one event line; None for a blank, partial or foreign line (tails see those)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("kind") not in EVENT_KINDS or "rank" not in record:
        return None
    return record


# --- result bundle ----------------------------------------------------------------------------
#
# result.json (written once, by rank 0, after the last measurement):
# {
#   "schema_version": 1, "kind": "dinf.result", "run_name": str, "status": "completed",
#   "spec": RunSpec.to_dict(),
#   "world_size": int, "num_gpus": int,
#   "environment": {"hosts": [...], "gpu_model": str|None, "torch": str, "transformers": str,
#                   "deepspeed": str|None, "nccl": str|None, "python": str, "backend": "nccl"|"gloo"},
#   "load_time_s": float,
#   "engine": {"impl": "fast"|"reference"|"deepspeed", "compiled": bool, "cuda_graphs": bool,
#              "capture_s": float|null (compile + capture at warm-up, before timing), "graphs": int},
#   "ranks": [{"rank", "host", "device", "stage", "layers": [first, last_exclusive],
#              "param_bytes", "load_time_s"}],
#   "quant": {"scheme": str, "group_size": int|null, "weight_bytes_per_rank": [int per rank]},
#   "accuracy": {(only with spec.score) "reference", "batch_size", "prompts", "tokens",
#                "exact_match", "first_divergence": [...], "topk_agree_at_divergence",
#                "kl_mean", "kl_p99", "kl_max", "top1_agreement", "nll_ref", "nll_run", "nll_ratio",
#                "noise_floor": {same fields: the reference against itself at another batch split}},
#   "measurements": [{
#       "batch_size", "num_requests", "max_new_tokens", "prompt_tokens", "output_tokens",
#       "repeats", "wall_s": [per repeat], "prefill_s": [per repeat],
#       "ttft_s", "tpot_s", "itl_s", "e2e_s": Stat,  # Stat = {"n","median","p90","p99","mean","std","min","max","ci95"}
#       "prefill_latency_s": Stat,
#       "decode_throughput_tok_s", "output_throughput_tok_s", "total_throughput_tok_s",
#       "per_gpu_output_tok_s": float (medians over repeats; per GPU, or per rank on CPU),
#       "timed_window_unix": [start, end] (rank 0's clock: first timed repeat's start, last one's end),
#       "micro_batches": int (pp only: min(spec.micro_batches, batch_size), what this batch size ran),
#       "timeline": (profile only) {"steps", "window_s", "micro_batches",
#                   "ranks": [{"rank", "spans": [[kind, start_s, end_s], ...]}]}: a few decode steps of the
#                   first timed batch, every rank cut at the same instants (kind: compute|send|recv|wait|comm),
#       "per_rank": [{"rank", "peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes",
#                     "compute_s", "comm_s", "idle_s", "bubble_pct", "exposed_comm_pct"}]
#   }]
# }
#
# scores.jsonl (with spec.score), one line per prompt, teacher-forced on the reference's greedy ids:
# {"index", "tokens": [...], "logprob_ref": [...], "logprob_run": [...], "kl": [...], "top1_agree": [...]}
#
# completions.jsonl, one line per request of the first repeat, per batch size:
# {"batch_size", "index", "prompt", "prompt_ids": [...], "output_ids": [...], "text": str,
#  "topk_ids": [[k ids] per generated token]}

RESULT_KIND = "dinf.result"


# Two-sided 95% Student t quantiles by degrees of freedom (n - 1): a normal 1.96 from 3 samples would
# claim an interval 2.2x too narrow.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (the nearest tabulated df below)."""
    return _T95[max(k for k in _T95 if k <= df)] if df < 120 else 1.960


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stat_summary(values: list[float]) -> dict[str, float | int | None]:
    """n, median, p90, p99, mean, std, min, max and a 95% confidence half-width of the mean (Student t;
    None if n < 2)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "median": None, "p90": None, "p99": None, "mean": None, "std": None, "min": None,
                "max": None, "ci95": None}
    ordered = sorted(values)
    mean = sum(values) / n
    std = ci95 = None
    if n >= 2:
        std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        ci95 = t95(n - 1) * std / n**0.5
    return {"n": n, "median": _quantile(ordered, 0.5), "p90": _quantile(ordered, 0.9),
            "p99": _quantile(ordered, 0.99), "mean": mean, "std": std, "min": ordered[0], "max": ordered[-1],
            "ci95": ci95}


def read_result(text: str) -> dict[str, Any]:
    """Parse a result bundle, refusing one from another schema version with a clear message."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("kind") != RESULT_KIND:
        raise ValueError("not a dinf result bundle (missing kind 'dinf.result')")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"result bundle has schema version {version!r}; this dinf reads {SCHEMA_VERSION}. "
            "Upgrade dinf to read it."
        )
    return data
