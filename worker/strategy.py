"""Which implementation runs this rank, chosen once from the spec: load, prepare, generate.

| mode   | impl `fast` (default)                          | impl `reference`                        |
|--------|------------------------------------------------|-----------------------------------------|
| single | `FastLocal`: whole fast stage, captured steps  | `ReferenceLocal`: HF-module stage       |
| dp     | `FastLocal` on this replica's requests         | `ReferenceLocal` on them                |
| pp     | `FastPipeline` (worker/pipeline.py)            | `ReferencePipeline`                     |
| tp     | `FastTensorParallel` (worker/tensor_parallel)  | `DeepSpeedTensorParallel` (AutoTP)      |

A strategy loads only this rank's part of the model (`load`), makes and captures what its decode
loop needs before timing starts (`prepare`, the warm-up), and generates one padded batch
(`generate`), returning the batch's outputs on the rank(s) named by `output_ranks`.
"""

from __future__ import annotations

import time

import torch

from worker.contract import RunSpec
from worker.generate import BatchOutput, Picker, StageTimer, StepClock
from worker.partition import StagePlan
from worker.tokenizer import PaddedBatch, micro_batch_bounds


class Strategy:
    """The interface every implementation follows; see the module docstring."""

    impl = "reference"

    def __init__(self, spec: RunSpec, rank: int, world_size: int, device: torch.device, backend: str | None,
                 picker: Picker):
        self.spec, self.rank, self.world_size, self.device = spec, rank, world_size, device
        self.backend, self.picker = backend, picker
        self.module = None
        self.prepare_s = 0.0

    def load(self, config, source, dtype: torch.dtype) -> dict:
        """Build and fill this rank's part; returns {"stage", "layers", "param_bytes"}."""
        raise NotImplementedError

    def prepare(self, batches: list[PaddedBatch]) -> None:
        """Everything a batch of these shapes needs before timing (compiled, captured graphs)."""

    def generate(self, batch: PaddedBatch, max_new_tokens: int, clock: StepClock, timer: StageTimer) -> BatchOutput | None:
        raise NotImplementedError

    def output_ranks(self) -> list[int]:
        return [0]

    def engine_record(self) -> dict:
        return {"impl": self.impl, "compiled": False, "cuda_graphs": False, "capture_s": None}


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# --- fast ------------------------------------------------------------------------------------


class _Fast(Strategy):
    impl = "fast"

    def _settings(self):
        from worker.engine import EngineSettings

        return EngineSettings(compile=self.spec.compile, cuda_graphs=self.spec.cuda_graphs)

    def _load_fast(self, config, source, dtype, plan: StagePlan, tp_rank: int = 0, tp_size: int = 1):
        from worker.engine import Sessions
        from worker.llama import fast_parameter_bytes, load_fast_stage

        self.module = load_fast_stage(config, plan, source, dtype, self.device, tp_rank, tp_size, self.spec.quant)
        self.settings = self._settings()
        picker = self.picker if plan.is_last else None
        self.sessions = Sessions(self.module, self.spec.max_new_tokens, picker, self.settings)
        return {"layers": [plan.first_layer, plan.last_layer], "param_bytes": fast_parameter_bytes(self.module)}

    def _rows_of(self, batch: PaddedBatch) -> list[int]:
        return [batch.input_ids.shape[0]]

    def prepare(self, batches: list[PaddedBatch]) -> None:
        t0 = time.perf_counter()
        for batch in batches:
            for micro_batch, rows in enumerate(self._rows_of(batch)):
                self.sessions.get(rows, batch.input_ids.shape[1], micro_batch)
        self.prepare_s += time.perf_counter() - t0

    def engine_record(self) -> dict:
        return self.settings.record(self.device)


class FastLocal(_Fast):
    def load(self, config, source, dtype):
        info = self._load_fast(config, source, dtype, StagePlan.whole(config.num_hidden_layers))
        return {"stage": 0, **info}

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.engine import generate_fast

        return generate_fast(self.sessions, batch, max_new_tokens, self.picker, clock, timer)

    def output_ranks(self):
        return list(range(self.world_size)) if self.spec.mode == "dp" else [0]


class FastPipeline(_Fast):
    def load(self, config, source, dtype):
        from worker.pipeline import Groups

        self.num_stages = self.spec.pp_size or self.world_size
        plan = StagePlan.for_stage(config.num_hidden_layers, self.rank, self.num_stages, self.spec.pp_layer_split)
        self.groups = Groups(self.num_stages)
        return {"stage": self.rank, **self._load_fast(config, source, dtype, plan)}

    def _rows_of(self, batch):
        return [b - a for a, b in micro_batch_bounds(batch.input_ids.shape[0], self.spec.micro_batches)]

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.pipeline import generate_pipeline_fast

        return generate_pipeline_fast(
            self.sessions, self.groups, self.rank, self.num_stages, batch, max_new_tokens,
            self.spec.micro_batches, self.picker, clock, timer, self.spec.dist_timeout_s,
        )

    def output_ranks(self):
        return [self.num_stages - 1]


class FastTensorParallel(_Fast):
    def _settings(self):
        settings = super()._settings()
        if self.spec.profile and self.device.type == "cuda":
            # The host can only time an all-reduce it launches itself, not one inside a compiled, captured step.
            settings.compile = settings.cuda_graphs = False
            settings.notes.append("--profile: eager steps, so each all-reduce is timed as communication")
        return settings

    def load(self, config, source, dtype):
        import torch.distributed as dist

        from worker.tensor_parallel import all_reduce_fn, no_reduce

        info = self._load_fast(
            config, source, dtype, StagePlan.whole(config.num_hidden_layers), self.rank, self.world_size
        )
        if self.world_size == 1:
            self.reduce = no_reduce
        else:
            traced = self.device.type == "cuda" and self.settings.compile
            self.reduce = all_reduce_fn(dist.group.WORLD, traced)
        self.module.reduce = self.reduce
        return {"stage": 0, **info}

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.engine import generate_fast

        if timer.enabled:  # all-reduces inside the forward count as communication (eager steps only)
            self.module.reduce = lambda t: timer.timed("comm", self.reduce, t)
        try:
            return generate_fast(self.sessions, batch, max_new_tokens, self.picker, clock, timer,
                                 peer_timeout_s=self.spec.dist_timeout_s if self.world_size > 1 else None)
        finally:
            self.module.reduce = self.reduce


# --- reference -------------------------------------------------------------------------------


class ReferenceLocal(Strategy):
    def load(self, config, source, dtype):
        from worker.checkpoint import load_stage

        self.module = load_stage(config, StagePlan.whole(config.num_hidden_layers), source, dtype, self.device)
        return {"stage": 0, "layers": [0, config.num_hidden_layers], "param_bytes": _param_bytes(self.module)}

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.generate import generate_local

        return generate_local([self.module], batch, max_new_tokens, self.picker, clock, timer)

    def output_ranks(self):
        return list(range(self.world_size)) if self.spec.mode == "dp" else [0]


class ReferencePipeline(Strategy):
    def load(self, config, source, dtype):
        from worker.checkpoint import load_stage

        self.num_stages = self.spec.pp_size or self.world_size
        plan = StagePlan.for_stage(config.num_hidden_layers, self.rank, self.num_stages, self.spec.pp_layer_split)
        self.module = load_stage(config, plan, source, dtype, self.device)
        return {"stage": self.rank, "layers": [plan.first_layer, plan.last_layer],
                "param_bytes": _param_bytes(self.module)}

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.pipeline import generate_pipeline_reference

        return generate_pipeline_reference(
            self.module, self.rank, self.num_stages, batch, max_new_tokens, self.spec.micro_batches,
            self.picker, clock, timer,
        )

    def output_ranks(self):
        return [self.num_stages - 1]


class DeepSpeedTensorParallel(Strategy):
    impl = "deepspeed"

    def load(self, config, source, dtype):
        from worker.checkpoint import load_causal_lm
        from worker.generate import CausalLMStage
        from worker.tensor_parallel import shard_with_deepspeed

        model = load_causal_lm(config, source, dtype)
        self.module = CausalLMStage(shard_with_deepspeed(model, dtype, self.device, self.world_size, self.backend))
        return {"stage": 0, "layers": [0, config.num_hidden_layers], "param_bytes": _param_bytes(self.module)}

    def generate(self, batch, max_new_tokens, clock, timer):
        from worker.generate import generate_local

        return generate_local([self.module], batch, max_new_tokens, self.picker, clock, timer)


def choose(spec: RunSpec, rank: int, world_size: int, device: torch.device, backend: str | None,
           picker: Picker) -> Strategy:
    """The strategy of this rank, from the spec's mode and impl (a pp run of one stage is a local run)."""
    pipeline = spec.mode == "pp" and (spec.pp_size or world_size) > 1
    if spec.impl == "fast":
        cls = FastPipeline if pipeline else FastTensorParallel if spec.mode == "tp" else FastLocal
    else:
        cls = ReferencePipeline if pipeline else DeepSpeedTensorParallel if spec.mode == "tp" else ReferenceLocal
    return cls(spec, rank, world_size, device, backend, picker)
