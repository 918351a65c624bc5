"""`dinf-worker compare BASELINE_DIR RUN_DIR`: do two runs produce the same greedy tokens?

Per request (matched by batch size and request index): exact match of the generated ids, the first
index where they diverge, and — vLLM's `check_logprobs_close` criterion — whether at that index each
side's token is within the other side's top-k. Prints a table and writes comparison.json into RUN_DIR.
Reads only completions.jsonl files; stdlib only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker import contract
from worker.correctness import check_completion


class CompareError(ValueError):
    """A run directory without readable completions, or two runs with nothing to compare."""


def read_completions(run_dir: Path) -> dict[tuple[int, int], dict]:
    path = Path(run_dir) / contract.COMPLETIONS_FILE
    if not path.is_file():
        raise CompareError(f"{path} does not exist; is {run_dir} the output directory of a finished run?")
    records = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            c = json.loads(line)
            records[(int(c["batch_size"]), int(c["index"]))] = c
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CompareError(f"{path}:{n}: not a completion record ({exc})") from None
    return records


def compare_one(base: dict, run: dict) -> dict:
    """One request: exact?, first divergence, and top-k agreement there (worker/correctness.py's rule)."""
    check = check_completion(base, run)
    record = {"index": base["index"], "exact": check["exact"], "first_divergence": check["first_divergence"],
              "length": len(base["output_ids"])}
    if not check["exact"]:
        record.update(baseline_token=check["baseline_token"], run_token=check["run_token"],
                      topk_agree=bool(check["topk_agree"]))
    return record


def check_same_model(baseline_dir: Path, run_dir: Path) -> None:
    """Refuse two runs of different models (their greedy ids would differ for no reason worth reporting)."""
    specs = []
    for d in (baseline_dir, run_dir):
        path = Path(d) / contract.SPEC_FILE
        try:
            specs.append(json.loads(path.read_text(encoding="utf-8")).get("model") or {})
        except (OSError, json.JSONDecodeError, AttributeError):
            return  # no readable spec (an older or hand-made run): nothing to check against
    base, run = specs
    for key in ("source", "config", "seed", "path"):
        if key == "config" and base.get("source") == "checkpoint":
            continue  # a checkpoint's own config.json is what counts
        if base.get(key) != run.get(key):
            raise CompareError(
                f"the runs use different models (model.{key}: {base.get(key)!r} vs {run.get(key)!r}); "
                "compare runs of the same model"
            )


def compare_dirs(baseline_dir: Path, run_dir: Path, batch_size: int | None = None, echo: bool = True) -> dict:
    check_same_model(baseline_dir, run_dir)
    base, run = read_completions(baseline_dir), read_completions(run_dir)
    sizes = sorted({bs for bs, _ in base} & {bs for bs, _ in run})
    if batch_size is not None:
        if batch_size not in sizes:
            raise CompareError(f"batch size {batch_size} is not in both runs (common: {sizes or 'none'})")
        sizes = [batch_size]
    if not sizes:
        raise CompareError(
            f"the runs share no batch size (baseline {sorted({b for b, _ in base})}, run {sorted({b for b, _ in run})})"
        )
    groups = []
    for bs in sizes:
        keys = sorted(k for k in base if k[0] == bs and k in run)
        prompts = [compare_one(base[k], run[k]) for k in keys]
        exact = sum(p["exact"] for p in prompts)
        divergent = [p for p in prompts if not p["exact"]]
        agree = sum(1 for p in divergent if p.get("topk_agree"))
        groups.append({
            "batch_size": bs,
            "prompts": len(prompts),
            "exact": exact,
            "exact_match_rate": exact / len(prompts) if prompts else None,
            "divergent": len(divergent),
            "topk_agree_at_divergence": agree,
            "per_prompt": prompts,
        })
    total = sum(g["prompts"] for g in groups)
    divergent = sum(g["divergent"] for g in groups)
    result = {
        "schema_version": contract.SCHEMA_VERSION,
        "kind": "dinf.comparison",
        "baseline": str(baseline_dir),
        "run": str(run_dir),
        "top_k": _top_k(base),
        "exact_match_rate": sum(g["exact"] for g in groups) / total if total else None,
        "topk_agreement_rate": (
            sum(g["topk_agree_at_divergence"] for g in groups) / divergent if divergent else None
        ),
        "by_batch_size": groups,
    }
    out = Path(run_dir) / contract.COMPARISON_FILE
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    os.replace(tmp, out)
    if echo:
        print(format_table(result))
    return result


def _top_k(records: dict) -> int | None:
    for c in records.values():
        if c.get("topk_ids"):
            return len(c["topk_ids"][0])
    return None


def format_table(result: dict) -> str:
    lines = [
        f"baseline: {result['baseline']}",
        f"run:      {result['run']}",
        "",
        "| batch | exact / prompts | exact-match | top-k agree at divergence | first divergences |",
        "|---|---|---|---|---|",
    ]
    for g in result["by_batch_size"]:
        firsts = ", ".join(f"#{p['index']}@{p['first_divergence']}" for p in g["per_prompt"] if not p["exact"])
        agree = f"{g['topk_agree_at_divergence']}/{g['divergent']}" if g["divergent"] else "-"
        rate = f"{100 * g['exact_match_rate']:.0f}%" if g["exact_match_rate"] is not None else "-"
        lines.append(f"| {g['batch_size']} | {g['exact']}/{g['prompts']} | {rate} | {agree} | {firsts or '-'} |")
    return "\n".join(lines)
