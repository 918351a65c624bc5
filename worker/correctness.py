"""The one definition of "do two completions agree?", used by `dinf-worker compare` and the laptop's analysis.

Per request: exact match of the generated ids; the first index where they differ (a length
difference counts, at the shorter length); and, vLLM's `check_logprobs_close` criterion, whether at
that index each side's token is within the other side's top-k. When one side has no token there (it
ended earlier) the divergence is not excused by top-k (`topk_agree` False); when a side recorded no
top-k ids, agreement is unknown (None).

Standard library only, so the laptop side can import it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing id (or the shorter length when one is a prefix); None if identical."""
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if first is None and len(a) != len(b):
        first = min(len(a), len(b))
    return first


def topk_at(line: Mapping[str, Any], position: int) -> list[int] | None:
    """The top-k ids a completion line recorded at `position`, or None."""
    topk = line.get("topk_ids")
    if not isinstance(topk, list) or position >= len(topk) or not isinstance(topk[position], list):
        return None
    return list(topk[position])


def check_completion(baseline: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """One request: {exact, first_divergence, baseline_token, run_token, topk_agree} (lines of completions.jsonl)."""
    a = list(baseline.get("output_ids") or [])
    b = list(run.get("output_ids") or [])
    first = first_divergence(a, b)
    if first is None:
        return {"exact": True, "first_divergence": None, "baseline_token": None, "run_token": None,
                "topk_agree": None}
    base_token = a[first] if first < len(a) else None
    run_token = b[first] if first < len(b) else None
    if base_token is None or run_token is None:
        agree = False  # one side ended here: a top-k choice cannot explain a missing token
    else:
        base_topk, run_topk = topk_at(baseline, first), topk_at(run, first)
        agree = None if base_topk is None or run_topk is None else (run_token in base_topk and base_token in run_topk)
    return {"exact": False, "first_divergence": first, "baseline_token": base_token, "run_token": run_token,
            "topk_agree": agree}
