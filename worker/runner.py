"""One worker run: validate, join the group, load this rank's part, measure every batch size, write results.

Order of work (each step an event phase): start -> init (process group) -> load (only this rank's
stage, then a barrier: the load time) -> per batch size: warmup (W untimed runs of the first batch)
and measure (R timed passes over all requests, a progress event after each batch) -> done. The
warmup and measure phases and every progress event carry the plan (which batch size of how many,
which repeat of how many), so the laptop can show one progress bar for the whole run. Rank 0
writes spec.json, result.json and completions.jsonl; every rank writes its own events and log. A bad spec (or a missing/mismatched
checkpoint, a missing prompts file, ...) is reported field by field before anything is written, and
every rank exits 2.

It orchestrates only: the implementation is chosen once in strategy.py (which loads this rank's part
and generates a batch: engine.py / pipeline.py / tensor_parallel.py / data_parallel.py for the fast
path, reference_model.py + generate.py for the reference), and the numbers are computed in metrics.py.

Exit codes (worker.contract): 0 ok, 1 this rank failed, 2 bad spec, 3 a peer rank was lost.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

from worker import contract
from worker.contract import MODEL_CONFIGS, RunSpec, SpecError
from worker.events import RankEvents

PROMPTS_FILE = Path(__file__).parent / "prompts" / "correctness.jsonl"


class PromptsError(ValueError):
    """A prompts file that is missing, empty or not JSON lines of {"prompt": str}."""


def read_prompts(path: str | os.PathLike | None) -> list[str]:
    """Prompts of a JSON-lines file of {"prompt": str}; None reads the 20 shipped prompts."""
    path = Path(path) if path else PROMPTS_FILE
    if not path.is_file():
        raise PromptsError(f"{path} does not exist")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptsError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
            raise PromptsError(f'{path}:{n}: each line must be {{"prompt": "<non-empty text>"}}')
        prompts.append(record["prompt"])
    if not prompts:
        raise PromptsError(f"{path} holds no prompts")
    return prompts


def preflight(spec: RunSpec, world_size: int) -> dict[str, str]:
    """Every problem that would stop the run, found before any work (spec fields + files + packages)."""
    problems = spec.problems(world_size)
    try:
        read_prompts(spec.prompts_file)
    except PromptsError as exc:
        problems["prompts_file"] = str(exc)
    if spec.model.source == "checkpoint" and spec.model.path:
        from worker.checkpoint import CheckpointError, check_checkpoint

        try:
            config = check_checkpoint(spec.model.path)
        except CheckpointError as exc:
            problems["model.path"] = str(exc)
        except Exception as exc:  # an unreadable config.json or weights file
            problems["model.path"] = f"cannot read the checkpoint in {spec.model.path}: {exc}"
        else:
            layers = config.num_hidden_layers
            stages = spec.pp_size or world_size
            if spec.mode == "pp" and stages > layers:
                problems["pp_size"] = f"{stages} pipeline stages but the model has only {layers} layers"
            if spec.mode == "pp" and spec.pp_layer_split and sum(spec.pp_layer_split) != layers:
                problems["pp_layer_split"] = f"sums to {sum(spec.pp_layer_split)} but the model has {layers} layers"
    if spec.mode == "tp" and spec.impl == "reference" and importlib.util.find_spec("deepspeed") is None:
        problems["impl"] = (
            "tp's reference implementation is DeepSpeed AutoTP, which is not installed here "
            "(pip install 'dinf-tui[worker]', or use --impl fast)"
        )
    if spec.device == "cuda" and not torch.cuda.is_available():
        problems["device"] = "cuda was asked for but this node has no usable CUDA device"
    if spec.quant == "int4" and "quant" not in problems and not (spec.device != "cpu" and torch.cuda.is_available()):
        problems["quant"] = "int4 runs through a CUDA kernel and this node has no CUDA device; use int8 or none"
    if spec.score and spec.impl != "fast":
        problems["score"] = "scoring runs on the fast implementation; use --impl fast"
    if spec.mode == "dp" and spec.num_requests is not None and spec.num_requests < world_size:
        problems["num_requests"] = f"{spec.num_requests} requests cannot feed {world_size} data-parallel replicas"
    return problems


def run(spec: RunSpec, process_start_ns: int | None = None) -> int:
    from worker import distributed

    start_ns = process_start_ns or time.perf_counter_ns()
    env = distributed.detect()
    problems = preflight(spec, env.world_size)
    if problems:
        if env.rank == 0:
            print(f"dinf-worker: {SpecError(problems)}", file=sys.stderr, flush=True)
        return contract.EXIT_BAD_SPEC
    events = RankEvents(spec.output_dir, env.rank)
    events.phase("start", mode=spec.mode, world_size=env.world_size, launcher=env.launcher)
    try:
        Job(spec, env, events, start_ns).run()
    except Exception as exc:  # every failure ends as an error event + a non-zero exit, never a hang
        if distributed.is_peer_failure(exc):
            events.error(f"peer rank lost (rank {env.rank} saw: {type(exc).__name__}: {exc})", exc)
            code = contract.EXIT_PEER_LOST
        else:
            events.error(f"rank {env.rank} failed: {type(exc).__name__}: {exc}", exc)
            code = contract.EXIT_FAILED
        events.phase("failed", exit_code=code)
        events.close()
        return code
    events.phase("done")
    events.close()
    # No destroy_process_group(): tearing gloo down while the peer exits aborted a rank now and then
    # (SIGABRT after "done"). `dinf-worker` leaves through os._exit, so no teardown runs at all.
    return contract.EXIT_OK


class Job:
    """The state of one rank during a run."""

    def __init__(self, spec: RunSpec, env, events: RankEvents, start_ns: int):
        self.spec, self.env, self.events, self.start_ns = spec, env, events, start_ns
        self.out = Path(spec.output_dir)

    # --- set-up ---------------------------------------------------------------------------------

    def _model(self):
        from worker.checkpoint import CheckpointTensors, SyntheticTensors, llama_config, load_config
        from worker.tokenizer import load_tokenizer

        m = self.spec.model
        if m.source == "synthetic":
            cfg = MODEL_CONFIGS[m.config]
            config = llama_config(cfg)
            return config, SyntheticTensors(m.seed, config), load_tokenizer(None, cfg)
        config = load_config(m.path)
        cfg = contract.ModelConfig(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            vocab_size=config.vocab_size,
        )
        return config, CheckpointTensors(m.path), load_tokenizer(m.path, cfg)

    def _load(self):
        from worker.checkpoint import DTYPES
        from worker.generate import Picker
        from worker.strategy import choose

        spec = self.spec
        config, source, tokenizer = self._model()
        self.source = source  # scoring loads the unquantized model from it again
        picker = Picker(
            eos_id=config.eos_token_id, pad_id=config.pad_token_id, suppress_eos=spec.ignore_eos, top_k=spec.top_k
        )
        self.strategy = choose(spec, self.env.rank, self.env.world_size, self.device, self.backend, picker)
        info = self.strategy.load(config, source, DTYPES[spec.dtype])
        return config, tokenizer, info

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        from worker import distributed
        from worker.metrics import rank_environment

        spec, env, events = self.spec, self.env, self.events
        events.phase("init")
        self.device = distributed.pick_device(spec.device, env.local_rank)
        self.backend = distributed.init(env, self.device, spec.dist_timeout_s, host_waits=spec.impl == "fast" or spec.mode == "tp")
        if self.device.type == "cpu" and env.world_size > 1:
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        if env.rank == 0:
            _write_atomic(self.out / contract.SPEC_FILE, spec.to_json())
        events.phase("load")
        t0 = time.perf_counter_ns()
        self.config, self.tokenizer, info = self._load()
        rank_load_s = (time.perf_counter_ns() - t0) / 1e9
        distributed.barrier(self.device, spec.dist_timeout_s)
        load_time_s = (time.perf_counter_ns() - self.start_ns) / 1e9
        events.log(f"loaded {info['param_bytes'] / 2**20:.1f} MiB of parameters in {rank_load_s:.2f} s")
        rank_info = {"rank": env.rank, **rank_environment(self.device), **info, "load_time_s": rank_load_s}
        self.rank_infos = distributed.gather_objects(rank_info, env.world_size)
        self.prompts = read_prompts(spec.prompts_file)

        # perf_counter_ns -> Unix ns, read once: trace files of all ranks share the Unix time axis
        self.clock_offset_ns = time.time_ns() - time.perf_counter_ns()
        self.trace_events: list[dict] = []
        self.trace_dropped = 0
        measurements, completions = [], []
        for position, batch_size in enumerate(spec.batch_sizes, 1):
            m, c = self._measure(batch_size, position)
            measurements.append(m)
            completions += c
        if spec.profile:
            from worker import trace

            trace.write_trace(self.out / contract.trace_file(env.rank), self.trace_events, dropped=self.trace_dropped)
        accuracy = self._score() if spec.score else None
        if env.rank == 0:
            self._write_results(load_time_s, measurements, completions, accuracy)

    def _score(self) -> dict:
        """The run's model against the unquantized one, loaded beside it in this job (worker/score.py)."""
        from worker.checkpoint import DTYPES
        from worker.llama import load_fast_stage
        from worker.partition import StagePlan
        from worker.score import score
        from worker.tokenizer import encode_prompt

        spec = self.spec
        self.events.phase("score", batch_size=spec.batch_sizes[0])
        run_stage = self.strategy.module
        reference, name = run_stage, f"this model ({spec.dtype}), against itself"
        if spec.quant != "none":
            plan = StagePlan.whole(self.config.num_hidden_layers)
            reference = load_fast_stage(self.config, plan, self.source, DTYPES[spec.dtype], self.device)
            name = f"the unquantized model ({spec.dtype}), loaded in this job"
        prompts = [encode_prompt(self.tokenizer, t) for t in self.prompts]
        record, lines = score(reference, run_stage, prompts, spec.batch_sizes[0], spec.max_new_tokens,
                              self.strategy.picker, self.config.pad_token_id, name)
        _write_atomic(self.out / contract.SCORES_FILE, "".join(json.dumps(line) + "\n" for line in lines))
        self.events.log(
            f"score at batch {record['batch_size']}: KL {record['kl_mean']:.3g} nats/token, top-1 "
            f"{record['top1_agreement']:.1%}, exact {record['exact_match']}/{record['prompts']} "
            f"(noise floor: KL {record['noise_floor']['kl_mean']:.3g}, top-1 {record['noise_floor']['top1_agreement']:.1%})"
        )
        return record

    def _requests(self) -> tuple[list[list[int]], list[str], int]:
        """Token ids of this rank's requests (dp: a contiguous shard), their texts, and the first index."""
        from worker.tokenizer import encode_prompt

        n = self.spec.num_requests or len(self.prompts)
        texts = [self.prompts[i % len(self.prompts)] for i in range(n)]
        ids = [encode_prompt(self.tokenizer, t) for t in texts]
        if self.spec.mode != "dp":
            return ids, texts, 0
        from worker.data_parallel import common_width, shard

        self.dp_width = common_width(ids)
        first, count = shard(n, self.env.world_size, self.env.rank)
        return ids[first : first + count], texts, first

    def _generate(self, batch, max_new_tokens: int, timer):
        from worker.generate import StepClock

        return self.strategy.generate(batch, max_new_tokens, StepClock(self.device), timer)

    def _sync(self) -> None:
        """Wait for the device, within the job's timeout (a hung collective means a lost peer)."""
        from worker import distributed

        distributed.wait_device(self.device, self.spec.dist_timeout_s)

    def _pass(self, batches, batch_size: int, timed: bool, timer, repeat: int | None = None,
              plan: dict | None = None) -> dict:
        """One pass over this rank's batches: prefill-only runs, then the timed generation pass.

        `plan`: where this pass stands in the run (batch_index, batch_count, repeats), sent with each
        progress event of a timed pass together with `repeat` (1-based)."""
        from worker import distributed
        from worker.generate import StageTimer

        spec = self.spec
        lockstep = spec.mode != "dp"  # ranks that run the same batches meet at every timing boundary
        prefill = []
        for batch in batches:
            if lockstep:
                distributed.barrier(self.device, spec.dist_timeout_s)
            t0 = time.perf_counter_ns()
            self._generate(batch, 1, StageTimer())  # prefill runs are never profiled
            self._sync()
            prefill.append((time.perf_counter_ns() - t0) / 1e9)
        outputs = []
        expected = sum(len(b.indices) for b in batches) * spec.max_new_tokens
        done = 0
        distributed.barrier(self.device, spec.dist_timeout_s)
        start_unix = time.time()  # where this pass sits in the day, so overlapping runs can be found
        t0 = time.perf_counter_ns()
        with timer.span("repeat", repeat=repeat):
            for index, batch in enumerate(batches):
                if lockstep:
                    distributed.barrier(self.device, spec.dist_timeout_s)
                with timer.span("batch", repeat=repeat, index=index):
                    out = self._generate(batch, spec.max_new_tokens, timer)
                if out is not None:
                    outputs.append(out)
                done += len(batch.indices) * spec.max_new_tokens
                if timed:
                    self.events.progress(batch_size, done, expected, repeat=(repeat or 0) + 1, **(plan or {}))
        self._sync()
        distributed.barrier(self.device, spec.dist_timeout_s)
        wall = (time.perf_counter_ns() - t0) / 1e9
        return {"wall_s": wall, "prefill_s": prefill, "outputs": [o.to_dict() for o in outputs],
                "window_unix": [start_unix, start_unix + wall]}

    def _measure(self, batch_size: int, position: int = 1):
        """Warm up and measure one batch size, the `position`-th (1-based) of spec.batch_sizes."""
        from worker import distributed
        from worker.generate import BatchOutput, StageTimer, timing_deepspeed_all_reduces
        from worker.metrics import RepeatTiming, batch_generate_s, peak_memory, reset_peak_memory, summarize, time_split
        from worker.tokenizer import make_batches

        spec, env = self.spec, self.env
        ids, texts, first = self._requests()
        # dp replicas pad to one width, so a batch is the same computation whatever the shard.
        width = self.dp_width if spec.mode == "dp" else None
        batches = [b.to(self.device) for b in make_batches(ids, batch_size, self.config.pad_token_id, first, width)]
        plan = {"batch_index": position, "batch_count": len(spec.batch_sizes), "repeats": spec.repeats}
        self.events.phase("warmup", batch_size=batch_size, **plan)
        if spec.mode == "pp" and spec.micro_batches > batch_size:
            self.events.log(f"batch {batch_size}: {batch_size} micro-batches (fewer rows than --micro-batches "
                            f"{spec.micro_batches})")
        self.strategy.prepare(batches)  # compile + capture, before any timing
        for _ in range(spec.warmup):  # one warm-up iteration = the first batch (kernels, allocator, NCCL pairs)
            self._pass(batches[:1], batch_size, False, StageTimer())
        reset_peak_memory(self.device)
        self.events.phase("measure", batch_size=batch_size, **plan)
        timer = StageTimer(enabled=spec.profile, device=self.device, spans=[] if spec.profile else None)
        # tp all-reduces inside the forward: profiled, they count as comm rather than compute.
        deepspeed_tp = self.strategy.impl == "deepspeed"
        collectives = timing_deepspeed_all_reduces(timer) if deepspeed_tp else contextlib.nullcontext()
        with collectives, timer.span("measure", batch_size=batch_size):
            passes = [self._pass(batches, batch_size, True, timer, repeat, plan) for repeat in range(spec.repeats)]
        for p in passes[1:]:  # top-k ids are kept for the completions of the first pass only
            for o in p["outputs"]:
                o["topk_ids"] = []
        wall_total = sum(p["wall_s"] for p in passes)
        mine = {
            "rank": env.rank,
            "passes": passes,
            "memory": peak_memory(self.device),
            "split": time_split(
                timer.compute_ns / 1e9 if spec.profile else None,
                timer.comm_ns / 1e9 if spec.profile else None,
                wall_total,
            ),
        }
        if spec.profile:
            from worker import trace

            self.trace_events += trace.trace_events(
                timer.spans, rank=env.rank, offset_ns=self.clock_offset_ns, extra={"batch_size": batch_size},
                label=f"rank {env.rank} ({spec.mode}) on {self.rank_infos[env.rank].get('host')}")
            self.trace_dropped += timer.dropped
            # the first timed batch, on the Unix clock (ranks on other hosts have other perf counters)
            mine["timeline"] = [(k, a + self.clock_offset_ns, b + self.clock_offset_ns, w)
                                for k, a, b, w in trace.first_batch(timer.spans)]
        everyone = distributed.gather_objects(mine, env.world_size)
        if env.rank != 0:
            return None, []
        holders = self._output_ranks()
        repeats = []
        for r in range(spec.repeats):
            outs = [BatchOutput(**o) for rank in holders for o in everyone[rank]["passes"][r]["outputs"]]
            if spec.mode == "dp":
                prefill = [t for rec in everyone for t in rec["passes"][r]["prefill_s"]]
            else:
                prefill = [max(vals) for vals in zip(*(rec["passes"][r]["prefill_s"] for rec in everyone))]
            prompt_tokens = sum(len(self._prompt_ids(i, texts)) for o in outs for i in o.indices)
            decode_s = None
            if spec.mode == "dp":  # replicas decode at the same time: the slowest one is the pass's decode time
                decode_s = max(
                    sum(batch_generate_s(BatchOutput(**o)) for o in rec["passes"][r]["outputs"])
                    - sum(rec["passes"][r]["prefill_s"])
                    for rec in everyone
                )
            repeats.append(
                RepeatTiming(everyone[0]["passes"][r]["wall_s"], prefill, outs, prompt_tokens, decode_s)
            )
        per_rank = [{"rank": rec["rank"], **rec["memory"], **rec["split"]} for rec in everyone]
        measurement = summarize(
            batch_size, spec.num_requests or len(self.prompts), spec.max_new_tokens, repeats,
            self._num_gpus() or env.world_size, per_rank,
        )
        measurement["timed_window_unix"] = [passes[0]["window_unix"][0], passes[-1]["window_unix"][1]]
        if spec.mode == "pp":
            measurement["micro_batches"] = min(spec.micro_batches, batch_size)
        if spec.profile:
            measurement["timeline"] = self._timeline(everyone, batch_size)
        completions = []
        for out in repeats[0].outputs:
            for i, out_ids, topk in zip(out.indices, out.output_ids, out.topk_ids):
                completions.append({
                    "batch_size": batch_size,
                    "index": i,
                    "prompt": texts[i],
                    "prompt_ids": self._prompt_ids(i, texts),
                    "output_ids": out_ids,
                    "text": _decode(self.tokenizer, out_ids),
                    "topk_ids": topk,
                })
        completions.sort(key=lambda c: c["index"])
        return measurement, completions

    def _timeline(self, everyone: list[dict], batch_size: int) -> dict | None:
        """A few decode steps of the first timed batch on every rank, cut at the same instants (rank 0's
        steps), for the terminal timeline; None when rank 0 recorded too few calls."""
        from worker import trace

        prefill_calls = min(self.spec.micro_batches, batch_size) if self.spec.mode == "pp" else 1
        steps = min(trace.TIMELINE_STEPS, self.spec.max_new_tokens - 1)
        span = trace.window(everyone[0]["timeline"], prefill_calls=prefill_calls, steps=steps) if steps else None
        if span is None:
            return None
        start, end = span
        return {"steps": steps, "window_s": (end - start) / 1e9, "micro_batches": prefill_calls,
                "ranks": [{"rank": rec["rank"], "spans": trace.clip(rec["timeline"], start, end)} for rec in everyone]}

    def _prompt_ids(self, index: int, texts: list[str]) -> list[int]:
        from worker.tokenizer import encode_prompt

        return encode_prompt(self.tokenizer, texts[index])

    def _output_ranks(self) -> list[int]:
        """Which ranks' outputs make up the run's outputs."""
        return self.strategy.output_ranks()

    def _num_gpus(self) -> int:
        return self.env.world_size if self.device.type == "cuda" else 0

    def _write_results(self, load_time_s: float, measurements: list[dict], completions: list[dict],
                       accuracy: dict | None) -> None:
        from worker.metrics import environment

        result = {
            "schema_version": contract.SCHEMA_VERSION,
            "kind": contract.RESULT_KIND,
            "run_name": self.spec.run_name,
            "status": "completed",
            "spec": self.spec.to_dict(),
            "world_size": self.env.world_size,
            "num_gpus": self._num_gpus(),
            "environment": environment(self.rank_infos, self.backend),
            "load_time_s": load_time_s,
            "engine": self.strategy.engine_record(),
            "ranks": [
                {k: info[k] for k in ("rank", "host", "device", "stage", "layers", "param_bytes", "load_time_s")}
                for info in self.rank_infos
            ],
            "quant": {
                "scheme": self.spec.quant,
                "group_size": contract.QUANT_GROUP_SIZES[self.spec.quant],
                "weight_bytes_per_rank": [info["param_bytes"] for info in self.rank_infos],
            },
            "measurements": measurements,
        }
        if accuracy is not None:
            result["accuracy"] = accuracy
        _write_atomic(
            self.out / contract.COMPLETIONS_FILE, "".join(json.dumps(c) + "\n" for c in completions)
        )
        _write_atomic(self.out / contract.RESULT_FILE, json.dumps(result, indent=2))


def _decode(tokenizer, ids: list[int]) -> str:
    from worker.tokenizer import decode

    return decode(tokenizer, ids)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
