"""How far a run's model moves the outputs from the unquantized model, judged in the same job.

Three views, each also measured for the reference against itself at another batch split (the noise
floor a reader needs to tell a real change from batching noise):

* greedy ids: both models decode the prompts greedily at the same batch split; exact match, first
  divergence and top-k agreement there (`worker/correctness.py`, what `compare` does);
* teacher forcing on the reference's greedy continuations: per token, KL(p_ref || p_run), whether the
  two models' top-1 agree, and the log-probability each gives the reference's token; summed up as
  the mean and p99 KL, the top-1 agreement rate and the ratio of the run's NLL to the reference's.

Everything runs eagerly on this rank (no compiled or captured steps): it is about values, not time.
"""

from __future__ import annotations

import torch

from worker.contract import stat_summary
from worker.correctness import check_completion
from worker.generate import Picker, StepClock
from worker.llama import FastStage
from worker.tokenizer import make_batches

ACCURACY_FIELDS = ("exact_match", "kl_mean", "kl_p99", "kl_max", "top1_agreement", "nll_ratio")


def greedy(stage: FastStage, prompts: list[list[int]], batch_size: int, max_new_tokens: int, picker: Picker,
           pad_id: int) -> list[dict]:
    """Greedy completions [{"index", "output_ids", "topk_ids"}] of `prompts`, `batch_size` rows at a time."""
    from worker.engine import EngineSettings, Sessions, generate_fast

    # Not compiled (values, not speed); on CUDA each step shape is still captured, so a 3B model's
    # 20 x 128 one-row steps take seconds rather than a minute of kernel launches.
    sessions = Sessions(stage, max_new_tokens, picker, EngineSettings(compile=False, cuda_graphs=True))
    lines = []
    for batch in make_batches(prompts, batch_size, pad_id):
        out = generate_fast(sessions, batch.to(stage.device), max_new_tokens, picker, StepClock(stage.device))
        for i, ids, topk in zip(out.indices, out.output_ids, out.topk_ids):
            lines.append({"index": i, "output_ids": ids, "topk_ids": topk})
    return sorted(lines, key=lambda line: line["index"])


@torch.inference_mode()
def teacher_forced(stage: FastStage, prompts: list[list[int]], continuations: list[list[int]], batch_size: int,
                   pad_id: int) -> list[torch.Tensor]:
    """Per prompt, fp32 log-probs [C, V] of the positions that predict each continuation token."""
    sequences = [p + c for p, c in zip(prompts, continuations)]
    out: list[torch.Tensor] = []
    for batch in make_batches(sequences, batch_size, pad_id):
        batch = batch.to(stage.device)
        ids, mask = batch.input_ids, batch.attention_mask.to(torch.long)
        width = ids.shape[1]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        slots = torch.arange(width, device=ids.device)
        cache = stage.new_cache(ids.shape[0], width)
        logits = stage.all_logits(stage.hidden_states(ids, positions, slots, mask.bool(), cache))  # [B, W, V]
        for row, i in enumerate(batch.indices):
            n = len(continuations[i])
            # Left padding: the sequence ends at `width`; token j of the continuation is predicted at width - n - 1 + j.
            out.append(torch.log_softmax(logits[row, width - n - 1 : width - 1], dim=-1))
    return out


def token_scores(ref: torch.Tensor, run: torch.Tensor, tokens: list[int]) -> dict[str, list]:
    """Per token: KL(ref || run), top-1 agreement, and each side's log-prob of the reference's token."""
    index = torch.tensor(tokens, dtype=torch.long, device=ref.device)[:, None]
    kl = (ref.exp() * (ref - run)).sum(-1).clamp(min=0.0)
    return {
        "tokens": list(tokens),
        "logprob_ref": ref.gather(1, index)[:, 0].tolist(),
        "logprob_run": run.gather(1, index)[:, 0].tolist(),
        "kl": kl.tolist(),
        "top1_agree": (ref.argmax(-1) == run.argmax(-1)).tolist(),
    }


def summarize(per_prompt: list[dict], ref_lines: list[dict], run_lines: list[dict]) -> dict:
    """The accuracy record of one comparison (see worker/contract.py, result.json "accuracy")."""
    kl = [v for p in per_prompt for v in p["kl"]]
    agree = [v for p in per_prompt for v in p["top1_agree"]]
    nll_ref = -sum(v for p in per_prompt for v in p["logprob_ref"]) / max(len(kl), 1)
    nll_run = -sum(v for p in per_prompt for v in p["logprob_run"]) / max(len(kl), 1)
    checks = [check_completion(a, b) for a, b in zip(ref_lines, run_lines)]
    diverged = [c for c in checks if not c["exact"]]
    known = [c["topk_agree"] for c in diverged if c["topk_agree"] is not None]
    return {
        "prompts": len(per_prompt),
        "tokens": len(kl),
        "exact_match": sum(c["exact"] for c in checks),
        "first_divergence": [c["first_divergence"] for c in checks],
        "topk_agree_at_divergence": (sum(known) / len(known)) if known else None,
        "kl_mean": sum(kl) / len(kl) if kl else None,
        "kl_p99": stat_summary(kl)["p99"],
        "kl_max": max(kl) if kl else None,
        "top1_agreement": sum(agree) / len(agree) if agree else None,
        "nll_ref": nll_ref,
        "nll_run": nll_run,
        "nll_ratio": nll_run / nll_ref if nll_ref > 0 else None,
    }


def score(reference: FastStage, run: FastStage, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
          picker: Picker, pad_id: int, reference_name: str) -> tuple[dict, list[dict]]:
    """Judge `run` against `reference` (both whole models on this rank) at `batch_size` rows.

    Returns the accuracy record (with its noise floor: the reference at another batch split against
    itself) and one scores line per prompt.
    """
    batch_size = min(batch_size, len(prompts))
    other = 1 if batch_size > 1 else len(prompts)
    ref_lines = greedy(reference, prompts, batch_size, max_new_tokens, picker, pad_id)
    run_lines = ref_lines if run is reference else greedy(run, prompts, batch_size, max_new_tokens, picker, pad_id)
    floor_lines = greedy(reference, prompts, other, max_new_tokens, picker, pad_id)
    continuations = [line["output_ids"] for line in ref_lines]
    ref_lp = teacher_forced(reference, prompts, continuations, batch_size, pad_id)
    run_lp = ref_lp if run is reference else teacher_forced(run, prompts, continuations, batch_size, pad_id)
    floor_lp = teacher_forced(reference, prompts, continuations, other, pad_id)
    lines, floor = [], []
    for i, tokens in enumerate(continuations):
        lines.append({"index": i, **token_scores(ref_lp[i], run_lp[i], tokens)})
        floor.append(token_scores(ref_lp[i], floor_lp[i], tokens))
    record = {"reference": reference_name, "batch_size": batch_size, **summarize(lines, ref_lines, run_lines)}
    record["noise_floor"] = {"batch_size": other, **summarize(floor, ref_lines, floor_lines)}
    return record, lines
