"""The fast decode loop: static buffers per batch shape, one captured CUDA graph per decode step, no host syncs.

A `Session` is one stage's state for one (micro-)batch shape (B rows, cache length L): its KV cache,
its input and output buffers, and the device-side bookkeeping a step needs (each row's next rotary
position, the cache slot of the next token, which slots each row may attend to, and on the last stage
the picked ids, their top-k and which rows finished). `prefill` fills it from a left-padded prompt;
`decode` runs one step that reads `inp` and writes `out`, advancing every index on the device. On CUDA
that step is compiled (`torch.compile` of one decoder layer, reused by all layers) and captured as
a CUDA graph when the session is made, which the runner does at warm-up, before any timing; a step
is then one `replay()`. On CPU the same code runs eagerly, which is what the CI tests exercise.

`generate_fast` is the one-process loop (single, dp replicas, and each tp rank); `worker/pipeline.py`
drives sessions across ranks. Tokens stay on the device until the batch ends; the only host reads
during decoding are the stop checks every `STOP_CHECK_EVERY` steps, and only when EOS can end a
sequence (`ignore_eos` off), through pinned memory.

Deliberately not here: weights (`worker/llama.py`), communication (`worker/pipeline.py`,
`worker/tensor_parallel.py`), metrics (`worker/metrics.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from worker.generate import BatchOutput, Picker, StepClock, batch_output
from worker import quant
from worker.llama import FastStage, block_forward
from worker.tokenizer import PaddedBatch

LENGTH_BUCKET = 64
"""Cache lengths are rounded up to a multiple of this, so prompts of similar width share one graph."""
TUNE_STEPS = 8
"""Replays per timing when the engine picks between two captured steps (3 timings each)."""
STOP_CHECK_EVERY = 8
"""Decode steps between two reads of "has every row finished?" (only when EOS can end a row)."""


@dataclass
class EngineSettings:
    """How the fast engine runs on this rank; recorded in the result bundle."""

    compile: bool = True
    cuda_graphs: bool = True
    capture_s: float = 0.0  # compile + capture time spent so far (at warm-up, before timing)
    graphs: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self, device: torch.device) -> dict:
        on_cuda = device.type == "cuda"
        return {
            "impl": "fast",
            "compiled": bool(self.compile and on_cuda),
            "cuda_graphs": bool(self.cuda_graphs and on_cuda),
            "capture_s": round(self.capture_s, 3) if on_cuda else None,
            "graphs": self.graphs,
            "notes": list(self.notes),
        }


def cache_length(prompt_width: int, max_new_tokens: int) -> int:
    """Cache slots a batch needs (its prompt + every fed-back token), rounded up to the bucket."""
    need = prompt_width + max_new_tokens
    return -(-need // LENGTH_BUCKET) * LENGTH_BUCKET


_compiled_layers: dict[str, object] = {}


def _block_forward_gemv(*args):
    return block_forward(*args, linear=quant.gemv)


def compiled_layer(kind: str = "cublas"):
    """`block_forward` compiled once per process (one graph per shape serves every layer).

    kind "cublas": matmuls through cuBLAS; "gemv": as compiler-generated GEMV reductions (one-row steps).
    """
    if not _compiled_layers:
        import torch._dynamo
        import torch._inductor.config

        # Every (batch, length) shape is a recompile of the same function: allow many.
        torch._dynamo.config.cache_size_limit = 256
        if hasattr(torch._dynamo.config, "recompile_limit"):
            torch._dynamo.config.recompile_limit = 256
        if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
            torch._dynamo.config.accumulated_cache_size_limit = 4096
        torch._inductor.config.fx_graph_cache = True
        # Tune the block sizes of the compiler's own reductions (the one-row GEMVs, int8 conversion
        # fused in) instead of taking its heuristics; gpt-fast does the same. Costs compile time only.
        torch._inductor.config.coordinate_descent_tuning = True
        _compiled_layers["cublas"] = torch.compile(block_forward, fullgraph=True, dynamic=False)
        _compiled_layers["gemv"] = torch.compile(_block_forward_gemv, fullgraph=True, dynamic=False)
    return _compiled_layers[kind]


class Session:
    """One stage's static buffers (and on CUDA its captured decode step) for B rows and L cache slots."""

    def __init__(self, stage: FastStage, rows: int, length: int, max_new_tokens: int, picker: Picker | None,
                 settings: EngineSettings):
        self.stage, self.rows, self.length, self.picker = stage, rows, length, picker
        dev, s = stage.device, stage.shape
        self.first, self.last = stage.plan.is_first, stage.plan.is_last
        self.cache = stage.new_cache(rows, length)
        # Input of a decode step: the previous token ids [B] (first stage) or hidden [B, 1, E].
        self.inp = (torch.zeros(rows, dtype=torch.long, device=dev) if self.first
                    else torch.zeros(rows, 1, s.hidden, dtype=stage.dtype, device=dev))
        # Output: the picked ids [B] (last stage) or hidden [B, 1, E] for the next stage.
        self.out = (torch.zeros(rows, dtype=torch.long, device=dev) if self.last
                    else torch.zeros(rows, 1, s.hidden, dtype=stage.dtype, device=dev))
        self.pos = torch.zeros(rows, dtype=torch.long, device=dev)  # rotary position of the token in `inp`
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)  # cache slot it is written to
        self.valid = torch.zeros(rows, length, dtype=torch.bool, device=dev)  # [B, L] slots a row may see
        if self.last:
            k = picker.top_k
            self.finished = torch.zeros(rows, dtype=torch.bool, device=dev)
            self.step = torch.zeros(1, dtype=torch.long, device=dev)  # tokens recorded so far
            self.tokens = torch.zeros(rows, max_new_tokens, dtype=torch.long, device=dev)
            self.topk = torch.zeros(rows, max_new_tokens, k, dtype=torch.long, device=dev)
            self.all_finished = torch.zeros(1, dtype=torch.bool, device=dev)
        self.graph = None
        # Decode steps run the compiled layer (one shape per session); prompts, whose widths vary, run eagerly.
        self.layer_fn = block_forward
        if dev.type == "cuda" and settings.compile:
            self.layer_fn = compiled_layer()
        if dev.type == "cuda" and (settings.compile or settings.cuda_graphs):
            self._prepare(settings)

    # --- the two kinds of forward ----------------------------------------------------------

    def prefill(self, x: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """Run the prompt: x ids [B, P] (first stage) or hidden [B, P, E]; prompt_mask [B, P] of 0/1.

        Resets the session for a new batch. Returns hidden [B, P, E] for the next stage, or on the
        last stage the first picked ids [B] (also recorded as token 0).
        """
        width = prompt_mask.shape[1]
        mask = prompt_mask.to(torch.long)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, P], as HF generate's
        self.valid.zero_()
        self.valid[:, :width] = mask.bool()
        slots = torch.arange(width, device=self.valid.device)
        out = self.stage(x, positions, slots, self.valid, self.cache)
        self.pos.copy_(positions[:, -1] + 1)
        self.slot.fill_(width)
        if not self.last:
            return out
        self.finished.zero_()
        self.step.zero_()
        self._pick(out)
        if self.first:
            self.inp.copy_(self.out)
        return self.out

    def decode(self) -> None:
        """One step: `inp` -> `out`, every index advanced on the device (a graph replay on CUDA)."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def _step(self) -> None:
        self.valid.index_fill_(1, self.slot, True)
        x = self.inp[:, None] if self.first else self.inp  # [B, 1] ids or [B, 1, E]
        out = self.stage(x, self.pos[:, None], self.slot, self.valid, self.cache, self.layer_fn)
        self.pos.add_(1)
        self.slot.add_(1)
        if not self.last:
            self.out.copy_(out)
            return
        self._pick(out)
        if self.first:
            self.inp.copy_(self.out)

    def _pick(self, logits: torch.Tensor) -> None:
        next_ids, topk = self.picker(logits, self.finished)  # [B], [B, k]
        self.tokens.index_copy_(1, self.step, next_ids[:, None])
        self.topk.index_copy_(1, self.step, topk[:, None, :])
        self.step.add_(1)
        self.out.copy_(next_ids)
        if not self.picker.suppress_eos:
            self.finished.copy_(self.picker.update_finished(self.finished, next_ids))
            self.all_finished.copy_(self.finished.all().reshape(1))

    def _prepare(self, settings: EngineSettings) -> None:
        """Compile (warm-up steps) and capture the decode step; the state it leaves is reset by `prefill`.

        A one-row step is memory-bound on its four weight matmuls, where cuBLAS picks split-K kernels
        with an extra reduction pass; there the compiler's own GEMV is captured too, both are timed
        over `TUNE_STEPS` replays, and the faster one is kept (the choice is noted in the record).
        """
        t0 = time.perf_counter()
        kinds = ["cublas"]
        if settings.compile and settings.cuda_graphs and self.rows == 1 and self.stage.scheme == "none":
            kinds.append("gemv")
        timed: dict[str, tuple[float, object, object]] = {}
        for kind in kinds:
            if settings.compile:
                self.layer_fn = compiled_layer(kind)
            graph = self._warm_and_capture(settings.cuda_graphs)
            if len(kinds) > 1:
                timed[kind] = (self._time_replays(graph), graph, self.layer_fn)
        if timed:
            best = min(timed, key=lambda k: timed[k][0])
            _, self.graph, self.layer_fn = timed[best]
            settings.notes.append(
                f"rows 1: {best} step kept (" + ", ".join(f"{k} {v[0] * 1e3:.3f} ms" for k, v in timed.items()) + ")"
            )
        else:
            self.graph = graph
        settings.graphs += self.graph is not None
        if self.last:
            self.step.zero_()
        self.slot.zero_()
        torch.cuda.synchronize()
        settings.capture_s += time.perf_counter() - t0

    def _warm_and_capture(self, capture: bool):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compiles, autotunes, and sets up cuBLAS outside the graph
            for _ in range(3):
                if self.last:
                    self.step.zero_()  # stay inside the token buffers whatever max_new_tokens is
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        if self.last:
            self.step.zero_()
        self.slot.zero_()
        if not capture:
            return None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph

    def _time_replays(self, graph) -> float:
        """Median seconds per replay of `graph` (state reset after; values don't matter for time)."""
        times = []
        for _ in range(3):
            if self.last:
                self.step.zero_()
            self.slot.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(TUNE_STEPS):
                if self.last:
                    self.step.zero_()
                graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / TUNE_STEPS)
        return sorted(times)[1]

    def outputs(self, batch: PaddedBatch, clock: StepClock, marks: list, picker: Picker, steps: int) -> BatchOutput:
        """The batch's ids, top-k and token times (reads the device once)."""
        tokens = self.tokens[:, :steps].tolist()  # [B, steps]
        topk = self.topk[:, :steps].tolist()
        return batch_output(batch.indices, tokens, topk, clock.seconds(marks), picker.eos_id)


class Sessions:
    """This rank's sessions, one per (micro-batch, rows, cache length); made (and captured) on first use.

    Micro-batches in flight at once need their own state even when their shapes match.
    """

    def __init__(self, stage: FastStage, max_new_tokens: int, picker: Picker | None, settings: EngineSettings):
        self.stage, self.max_new_tokens, self.picker, self.settings = stage, max_new_tokens, picker, settings
        self._sessions: dict[tuple[int, int, int], Session] = {}

    def get(self, rows: int, prompt_width: int, micro_batch: int = 0) -> Session:
        limit = self.stage.shape.max_positions
        if prompt_width + self.max_new_tokens > limit:
            raise ValueError(
                f"a prompt of {prompt_width} tokens plus {self.max_new_tokens} new tokens passes the model's "
                f"{limit} positions (max_position_embeddings); use shorter prompts or fewer new tokens"
            )
        key = (micro_batch, rows, cache_length(prompt_width, self.max_new_tokens))
        if key not in self._sessions:
            self._sessions[key] = Session(self.stage, *key[1:], self.max_new_tokens, self.picker, self.settings)
        return self._sessions[key]


class StopFlag:
    """"Has every row finished?", read every few steps through pinned memory without stalling the device."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(1, dtype=torch.bool, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def post(self, flag: torch.Tensor) -> None:
        self.host.copy_(flag, non_blocking=self.cuda)
        if self.cuda:
            self.event.record()
        self.pending = True

    def read(self) -> bool:
        """The value posted last (waits for that copy only; later steps keep running)."""
        if not self.pending:
            return False
        if self.cuda:
            self.event.synchronize()
        return bool(self.host.item())


@torch.inference_mode()
def generate_fast(
    sessions: Sessions,
    batch: PaddedBatch,
    max_new_tokens: int,
    picker: Picker,
    clock: StepClock,
    timer=None,
    peer_timeout_s: float | None = None,
) -> BatchOutput:
    """Greedy decode of one padded batch on a stage holding the whole model (or a tp shard of it).

    `peer_timeout_s` (tp: the steps hold all-reduces) keeps the host a few steps ahead of the device
    with a deadline on each wait, so a dead peer raises instead of hanging in a captured all-reduce.
    """
    from worker.distributed import wait_device
    from worker.pipeline import DevicePacer

    session = sessions.get(batch.input_ids.shape[0], batch.input_ids.shape[1])
    clock.start()
    compute = timer.timed if timer is not None else (lambda kind, fn, *a: fn(*a))
    compute("compute", session.prefill, batch.input_ids, batch.attention_mask)
    marks = [clock.mark()]
    stop = StopFlag(batch.input_ids.device) if not picker.suppress_eos else None
    pacer = DevicePacer(batch.input_ids.device, peer_timeout_s) if peer_timeout_s else None
    steps = 1
    while steps < max_new_tokens:
        if stop is not None and steps % STOP_CHECK_EVERY == 0:
            if stop.read():  # posted STOP_CHECK_EVERY steps ago
                break
            stop.post(session.all_finished)
        compute("compute", session.decode)
        marks.append(clock.mark())
        steps += 1
        if pacer is not None:
            pacer.step_done()
    if pacer is not None:
        wait_device(batch.input_ids.device, peer_timeout_s)
    return session.outputs(batch, clock, marks, picker, steps)
