"""Greedy decoding: the pieces every implementation shares, and the reference one-process loop.

* `generate_local` runs a list of stages one after another in this process: `single` and `dp` (one
  stage holding the whole model), `tp` (the DeepSpeed-sharded HF model wrapped as a stage), and the
  in-process pipeline the unit tests use.
* The pipeline loops (reference and fast) live in `worker/pipeline.py`, the fast one-process loop
  in `worker/engine.py`; this module holds what every implementation shares (token picking, clocks,
  the profiling timer, the output record) and the reference implementation's one-process loop.

Profiling (`StageTimer`, only with --profile, syncing the device at every boundary): forwards are
compute, pp's send/recv waits are comm, and so are tp's all-reduces inside the forward
(`timing_deepspeed_all_reduces`), taken out of the forward's compute time.

Tokens are picked as `generate(do_sample=False)` picks them: argmax of fp32 last-position logits, eos
forbidden while fewer than min_new_tokens exist (here min = max when ignore_eos), rows that finished
emit the pad id. Token ids stay on the device until the batch ends: no per-token host sync beyond what
early stopping needs.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from worker.reference_model import SeqState
from worker.tokenizer import PaddedBatch


@dataclass
class BatchOutput:
    """What one batch produced: per row, its generated ids, top-k ids and token times."""

    indices: list[int]
    output_ids: list[list[int]]
    topk_ids: list[list[list[int]]]
    token_times_s: list[list[float]]  # per row, seconds since the batch started, one per generated token

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class StepClock:
    """Token timestamps since a start mark; CUDA events on GPU so marking never syncs the host."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._start = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start_ns = _now_ns()

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return _now_ns()

    def seconds(self, marks: list) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [self._start.elapsed_time(e) / 1e3 for e in marks]
        return [(m - self._start_ns) / 1e9 for m in marks]


def _now_ns() -> int:
    return time.perf_counter_ns()


class Picker:
    """Greedy choice of the next token, mirroring HF generate's logits processors and eos handling."""

    def __init__(self, eos_id: int, pad_id: int, suppress_eos: bool, top_k: int):
        self.eos_id, self.pad_id, self.suppress_eos, self.top_k = eos_id, pad_id, suppress_eos, top_k

    def __call__(self, logits: torch.Tensor, finished: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # logits: [B, V] fp32; finished: [B] bool. Returns next ids [B] and top-k ids [B, k].
        if self.suppress_eos:  # MinNewTokensLengthLogitsProcessor
            logits = logits.clone()
            logits[:, self.eos_id].fill_(-float("inf"))  # a fill kernel, no tensor made from host data
        topk = torch.topk(logits, self.top_k, dim=-1).indices
        next_ids = torch.argmax(logits, dim=-1)
        next_ids = torch.where(finished, torch.full_like(next_ids, self.pad_id), next_ids)
        return next_ids, topk

    def update_finished(self, finished: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        return finished | (next_ids == self.eos_id)


class _Recorder:
    """Collects one micro-batch's tokens on the device and its token times."""

    def __init__(self, rows: int, device: torch.device):
        self.tokens: list[torch.Tensor] = []
        self.topk: list[torch.Tensor] = []
        self.marks: list = []
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)

    def finish(self, batch: PaddedBatch, clock: StepClock, picker: Picker) -> BatchOutput:
        times = clock.seconds(self.marks)
        tokens = torch.stack(self.tokens, dim=1).tolist()  # [B, steps]
        topk = torch.stack(self.topk, dim=1).tolist()  # [B, steps, k]
        return batch_output(batch.indices, tokens, topk, times, picker.eos_id)


def batch_output(indices: list[int], tokens: list[list[int]], topk: list[list[list[int]]], times: list[float],
                 eos_id: int) -> BatchOutput:
    """Per row, its ids, top-k and token times up to and including its eos (pad ids after it are not outputs)."""
    out_ids, out_topk, out_times = [], [], []
    for row_ids, row_topk in zip(tokens, topk):
        n = row_ids.index(eos_id) + 1 if eos_id in row_ids else len(row_ids)
        out_ids.append(row_ids[:n])
        out_topk.append(row_topk[:n])
        out_times.append(times[:n])
    return BatchOutput(list(indices), out_ids, out_topk, out_times)


def merge_outputs(parts: list[BatchOutput]) -> BatchOutput:
    """One BatchOutput of several (micro-batches' or ranks'), rows in the given order."""
    merged = BatchOutput([], [], [], [])
    for p in parts:
        merged.indices += p.indices
        merged.output_ids += p.output_ids
        merged.topk_ids += p.topk_ids
        merged.token_times_s += p.token_times_s
    return merged


MAX_TRACE_SPANS = 200_000
"""Spans one rank keeps for its trace file; later ones are counted, not kept (a long profiled run)."""


@dataclass
class StageTimer:
    """Compute and communication time of one rank (only filled when profiling; syncs the device).

    Communication timed while a compute call runs (tp's all-reduces inside the forward, see
    `timing_deepspeed_all_reduces`) counts as comm and is taken out of that call's compute time.

    `kind` is "compute", or one of the communication kinds: "send", "recv", "wait" (for sends to
    complete) or plain "comm" (a collective). With `spans` set (a list, when profiling), every timed
    call is also kept as (kind, start_ns, end_ns, where) for the rank's trace file, `where` being
    the step and micro-batch the caller set last (`at`). The clock is read after a device sync on
    both sides of each call, so on a GPU a span is the device's own time for that call, on one clock
    with the other ranks' (CUDA events would need a common clock of their own).
    """

    enabled: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    compute_ns: int = 0
    comm_ns: int = 0
    in_compute: bool = False  # inside a timed compute call right now
    spans: list | None = None
    """(kind, start_ns, end_ns, where) per timed call and per `span` block; None: not kept."""
    dropped: int = 0
    where: dict | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def at(self, **where) -> None:
        """Label the calls that follow (step, micro-batch) in the trace; a no-op unless spans are kept."""
        if self.spans is not None:
            self.where = where

    def _keep(self, kind: str, start_ns: int, end_ns: int, where: dict | None) -> None:
        if len(self.spans) < MAX_TRACE_SPANS:
            self.spans.append((kind, start_ns, end_ns, where))
        else:
            self.dropped += 1

    @contextmanager
    def span(self, name: str, **where):
        """A parent span (a repeat, a batch, a step) around the timed calls inside it, for the trace."""
        if not self.enabled or self.spans is None:
            yield
            return
        start = _now_ns()
        try:
            yield
        finally:
            self._keep(name, start, _now_ns(), where or None)

    def timed(self, kind: str, fn: Callable, *args):
        if not self.enabled:
            return fn(*args)
        self._sync()
        t0 = _now_ns()
        comm_before, outer = self.comm_ns, self.in_compute
        self.in_compute = kind == "compute"
        try:
            result = fn(*args)
        finally:
            self.in_compute = outer
        self._sync()
        t1 = _now_ns()
        elapsed = t1 - t0
        if kind == "compute":
            self.compute_ns += elapsed - (self.comm_ns - comm_before)
        else:
            self.comm_ns += elapsed
        if self.spans is not None:
            self._keep(kind, t0, t1, self.where)
        return result


@contextmanager
def timing_deepspeed_all_reduces(timer: StageTimer):
    """While open, DeepSpeed's all-reduces that run inside a timed compute call count as communication.

    AutoTP's row-parallel linears (`LinearAllreduce`) and sharded lm_head (`LmHeadLinearAllreduce`)
    all-reduce inside the model's forward, which the timer sees as one compute call. Every such
    all-reduce goes through the DeepSpeed comm backend object (`deepspeed.comm.comm.cdb`), so its two
    all-reduce methods are wrapped on that object for the block. A no-op when not profiling; needs
    `deepspeed.init_distributed` to have run.
    """
    if not timer.enabled:
        yield
        return
    backend = importlib.import_module("deepspeed.comm.comm").cdb
    if backend is None:
        raise RuntimeError("DeepSpeed's comm backend is not initialized (deepspeed.init_distributed was not called)")

    def timed_inside_compute(all_reduce: Callable) -> Callable:
        def all_reduce_timed(*args, **kwargs):
            if not timer.in_compute:
                return all_reduce(*args, **kwargs)
            return timer.timed("comm", lambda: all_reduce(*args, **kwargs))

        return all_reduce_timed

    names = ("inference_all_reduce", "all_reduce")
    for name in names:  # instance attributes shadow the class's methods until deleted
        setattr(backend, name, timed_inside_compute(getattr(backend, name)))
    try:
        yield
    finally:
        for name in names:
            delattr(backend, name)


# --- one process ------------------------------------------------------------------------------


@torch.inference_mode()
def generate_local(
    stages: list,
    batch: PaddedBatch,
    max_new_tokens: int,
    picker: Picker,
    clock: StepClock,
    timer: StageTimer | None = None,
) -> BatchOutput:
    """Greedy decode of one padded batch through `stages` in order (already on the batch's device)."""
    timer = timer or StageTimer()
    seq = SeqState(batch.attention_mask, use_mask=batch.padded)
    caches = [s.new_cache() for s in stages]
    rec = _Recorder(batch.input_ids.shape[0], batch.input_ids.device)
    clock.start()

    def forward(x):  # ids [B, T] -> (hidden [B, T, H] between stages) -> fp32 logits [B, V]
        for stage, cache in zip(stages, caches):
            x = stage(x, seq, cache)
        return x

    x = batch.input_ids  # [B, T_prompt], then [B, 1] per decode step
    for step in range(max_new_tokens):
        logits = timer.timed("compute", forward, x)
        next_ids, topk = picker(logits, rec.finished)
        rec.tokens.append(next_ids)
        rec.topk.append(topk)
        rec.marks.append(clock.mark())
        if step == max_new_tokens - 1:
            break
        if not picker.suppress_eos:
            rec.finished = picker.update_finished(rec.finished, next_ids)
            if bool(rec.finished.all()):
                break
        seq.advance()
        x = next_ids[:, None]
    return rec.finish(batch, clock, picker)


class CausalLMStage(torch.nn.Module):
    """A whole HF `LlamaForCausalLM` (e.g. sharded by DeepSpeed AutoTP) behind the stage interface."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        params = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def new_cache(self):
        from transformers.cache_utils import DynamicCache

        return DynamicCache(config=self.model.config)

    def forward(self, x: torch.Tensor, seq: SeqState, cache) -> torch.Tensor:
        """x: token ids [B, T]; returns fp32 logits of the last position [B, V]."""
        out = self.model(
            input_ids=x,
            attention_mask=seq.attention_mask,
            position_ids=seq.position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return out.logits[:, -1, :].float()
