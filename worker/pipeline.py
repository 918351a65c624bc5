"""Pipeline parallel: one stage per rank, activations passed forward, next tokens passed back to stage 0.

Two implementations of the same schedule (M micro-batches in flight, so while one micro-batch's
activation travels a stage computes another):

* `generate_pipeline_fast` (impl `fast`): every stage runs its captured decode step
  (`worker/engine.py` sessions, one per micro-batch). The schedule is fixed by the spec, so messages
  carry no headers: each (micro-batch, step) sends the step's output buffer as it is. Sends and
  receives are `isend`/`irecv` straight from and into the sessions' static buffers, and `work.wait()`
  makes the compute stream wait on NCCL, never the host. Each direction has its own process group
  (stage s -> s+1, and last -> 0), so a large forward send never queues behind the small token
  message going back. The host runs at most `HOST_AHEAD_STEPS` steps ahead of the device and waits
  on events with a deadline, so a dead peer ends the job within the timeout instead of hanging.
  Runs exactly max_new_tokens steps (rows that finish emit pad ids, as generate's do); outputs are
  cut at EOS.
* `generate_pipeline_reference` (impl `reference`): the HF-module stages, with a header per message
  (micro-batch, step, length, stop) and an early stop when every row of a micro-batch has finished.

Messages (fast): stage s -> s+1 hidden [B_mb, P, E] after the prompt, then [B_mb, 1, E] per step;
last -> 0 the picked ids [B_mb] of every step but the last.
"""

from __future__ import annotations

import torch

from worker.distributed import wait_event
from worker.generate import BatchOutput, Picker, StageTimer, StepClock, _Recorder, merge_outputs
from worker.reference_model import SeqState
from worker.tokenizer import PaddedBatch, micro_batch_bounds

HOST_AHEAD_STEPS = 2
"""Decode steps the host may queue ahead of the device (enough to keep it busy, few enough to notice a hang)."""


class Groups:
    """The process groups of the fast pipeline: one per forward link and one for the way back."""

    def __init__(self, num_stages: int):
        import torch.distributed as dist

        # Every rank creates every group, in the same order (torch.distributed requires it).
        self.forward = [dist.new_group([s, s + 1]) for s in range(num_stages - 1)]
        self.back = dist.new_group(sorted({num_stages - 1, 0}))


class DevicePacer:
    """Keeps the host at most a few steps ahead of the device, with a deadline on every wait."""

    def __init__(self, device: torch.device, timeout_s: float):
        self.cuda = device.type == "cuda"
        self.timeout_s = timeout_s
        self.events: list = []

    def step_done(self) -> None:
        if not self.cuda:
            return
        event = torch.cuda.Event()
        event.record()
        self.events.append(event)
        if len(self.events) > HOST_AHEAD_STEPS:
            wait_event(self.events.pop(0), self.timeout_s)

    def drain(self) -> None:
        for event in self.events:
            wait_event(event, self.timeout_s)
        self.events = []


class _Link:
    """Sends and receives on one group; each send's buffer stays untouched until the send completes."""

    def __init__(self, group, timer: StageTimer):
        self.group, self.timer = group, timer
        self.sends: dict[int, object] = {}  # buffer id -> work of its last send

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        import torch.distributed as dist

        self.sends[id(tensor)] = (self.timer.timed("send", dist.isend, tensor, dst, self.group), tensor)

    def before_write(self, tensor: torch.Tensor) -> None:
        """Order a write into `tensor` after its pending send (a stream wait on NCCL, not a host wait)."""
        pending = self.sends.pop(id(tensor), None)
        if pending is not None:
            self.timer.timed("send", pending[0].wait)

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        import torch.distributed as dist

        work = dist.irecv(tensor, src, group=self.group)
        self.timer.timed("recv", work.wait)
        return tensor

    def drain(self) -> None:
        for work, _ in self.sends.values():
            self.timer.timed("wait", work.wait)
        self.sends = {}


@torch.inference_mode()
def generate_pipeline_fast(
    sessions,
    groups: Groups,
    stage_index: int,
    num_stages: int,
    batch: PaddedBatch,
    max_new_tokens: int,
    micro_batches: int,
    picker: Picker,
    clock: StepClock,
    timer: StageTimer,
    timeout_s: float,
) -> BatchOutput | None:
    """Run one batch through the pipeline on this rank's stage. Returns the outputs on the last stage."""
    bounds = micro_batch_bounds(batch.input_ids.shape[0], micro_batches)
    parts = [batch.rows(a, b) for a, b in bounds]
    width = batch.input_ids.shape[1]
    mbs = [sessions.get(len(p.indices), width, m) for m, p in enumerate(parts)]
    first, last = stage_index == 0, stage_index == num_stages - 1
    prev = stage_index - 1 if not first else None
    nxt = stage_index + 1 if not last else None
    link_in = _Link(groups.forward[prev], timer) if prev is not None else _Link(groups.back, timer)
    link_out = _Link(groups.forward[stage_index], timer) if nxt is not None else _Link(groups.back, timer)
    pacer = DevicePacer(batch.input_ids.device, timeout_s)
    hidden = sessions.stage.shape.hidden
    dtype = sessions.stage.dtype
    marks: list[list] = [[] for _ in parts]
    clock.start()

    # Prompt: every micro-batch's prefill, so the later stages start while stage 0 goes on.
    for m, part in enumerate(parts):
        timer.at(step=0, mb=m)
        if first:
            x = part.input_ids
        else:
            x = link_in.recv(torch.empty(len(part.indices), width, hidden, dtype=dtype, device=part.input_ids.device), prev)
        out = timer.timed("compute", mbs[m].prefill, x, part.attention_mask)
        if last:
            marks[m].append(clock.mark())
            if max_new_tokens > 1 and not first:
                link_out.send(mbs[m].out, 0)
        else:
            link_out.send(out.contiguous(), nxt)

    # Decode: the same order of (step, micro-batch) on every rank, so sends and receives pair up.
    for step in range(1, max_new_tokens):
        with timer.span("step", step=step):
            for m in range(len(parts)):
                timer.at(step=step, mb=m)
                session = mbs[m]
                link_in.recv(session.inp, num_stages - 1 if first else prev)
                link_out.before_write(session.out)
                timer.timed("compute", session.decode)
                if last:
                    marks[m].append(clock.mark())
                    if len(marks[m]) < max_new_tokens:
                        link_out.send(session.out, 0)
                else:
                    link_out.send(session.out, nxt)
        pacer.step_done()
    timer.at(step=None, mb=None)
    link_out.drain()
    pacer.drain()
    if not last:
        return None
    return merge_outputs([
        s.outputs(part, clock, mk, picker, max_new_tokens) for s, part, mk in zip(mbs, parts, marks)
    ])



class _Sends:
    """isend handles (and their tensors) kept alive until complete."""

    def __init__(self, timer: StageTimer):
        self.pending: list = []
        self.timer = timer

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        import torch.distributed as dist

        self.pending.append((self.timer.timed("send", dist.isend, tensor, dst), tensor))
        self.pending = [(w, t) for (w, t) in self.pending if not w.is_completed()]

    def drain(self) -> None:
        for work, _ in self.pending:
            self.timer.timed("wait", work.wait)
        self.pending = []


def _recv(shape, dtype, device, src: int, timer: StageTimer) -> torch.Tensor:
    import torch.distributed as dist

    buf = torch.empty(shape, dtype=dtype, device=device)
    timer.timed("recv", dist.recv, buf, src)
    return buf


@torch.inference_mode()
def generate_pipeline_reference(
    stage,
    stage_index: int,
    num_stages: int,
    batch: PaddedBatch,
    max_new_tokens: int,
    micro_batches: int,
    picker: Picker,
    clock: StepClock,
    timer: StageTimer,
) -> BatchOutput | None:
    """Run one batch through the pipeline; ranks are stage indices. Returns the outputs on the last stage."""
    device = batch.input_ids.device
    bounds = micro_batch_bounds(batch.input_ids.shape[0], micro_batches)
    parts = [batch.rows(a, b) for a, b in bounds]
    last = num_stages - 1
    sends = _Sends(timer)
    clock.start()
    hidden_size = stage.config.hidden_size
    hidden_dtype = next(stage.parameters()).dtype

    def new_state(mb: int):
        return SeqState(parts[mb].attention_mask, use_mask=batch.padded), stage.new_cache()

    def header(mb: int, step: int, seq_len: int, stop: int) -> torch.Tensor:
        return torch.tensor([mb, step, seq_len, stop], dtype=torch.long, device=device)

    if stage_index == 0:
        states = [new_state(mb) for mb in range(len(parts))]
        for mb, part in enumerate(parts):  # prefill every micro-batch: stages overlap from here on
            seq, cache = states[mb]
            timer.at(step=0, mb=mb)
            h = timer.timed("compute", stage, part.input_ids, seq, cache)  # [B_mb, T_prompt, H]
            sends.send(header(mb, 0, part.input_ids.shape[1], 0), 1)
            sends.send(h.contiguous(), 1)
        active, step = list(range(len(parts))), [0] * len(parts)
        while active:
            for mb in list(active):
                msg = _recv((len(parts[mb].indices) + 1,), torch.long, device, last, timer)  # [B_mb + 1]
                step[mb] += 1
                if int(msg[-1]) == 1:
                    active.remove(mb)
                    if num_stages > 2:
                        sends.send(header(mb, step[mb], 0, 1), 1)
                    continue
                seq, cache = states[mb]
                seq.advance()
                timer.at(step=step[mb], mb=mb)
                h = timer.timed("compute", stage, msg[:-1, None], seq, cache)  # ids [B_mb, 1] -> [B_mb, 1, H]
                sends.send(header(mb, step[mb], 1, 0), 1)
                sends.send(h.contiguous(), 1)
        sends.drain()
        return None

    states: dict[int, tuple] = {}
    recorders = [_Recorder(len(p.indices), device) for p in parts]
    remaining = len(parts)
    while remaining:
        mb, step, seq_len, stop = _recv((4,), torch.long, device, stage_index - 1, timer).tolist()
        if stop:
            remaining -= 1
            if stage_index + 1 < last:
                sends.send(header(mb, step, 0, 1), stage_index + 1)
            continue
        rows = len(parts[mb].indices)
        h = _recv((rows, seq_len, hidden_size), hidden_dtype, device, stage_index - 1, timer)
        if step == 0:
            states[mb] = new_state(mb)
        else:
            states[mb][0].advance()
        seq, cache = states[mb]
        timer.at(step=step, mb=mb)
        out = timer.timed("compute", stage, h, seq, cache)  # hidden [B_mb, T, H], or logits [B_mb, V] last
        if stage_index < last:
            sends.send(header(mb, step, seq_len, 0), stage_index + 1)
            sends.send(out.contiguous(), stage_index + 1)
            continue
        rec = recorders[mb]
        next_ids, topk = picker(out, rec.finished)
        rec.tokens.append(next_ids)
        rec.topk.append(topk)
        rec.marks.append(clock.mark())
        done = len(rec.tokens) == max_new_tokens
        if not done and not picker.suppress_eos:
            rec.finished = picker.update_finished(rec.finished, next_ids)
            done = bool(rec.finished.all())
        flag = torch.tensor([1 if done else 0], dtype=torch.long, device=device)
        sends.send(torch.cat([next_ids, flag]), 0)
        if done:
            remaining -= 1
    sends.drain()
    if stage_index < last:
        return None
    return merge_outputs([rec.finish(part, clock, picker) for rec, part in zip(recorders, parts)])
