"""Result bundles written to the layout of worker/contract.py, with hand-chosen numbers.

The studies' tests check derived metrics against values worked out by hand from these inputs,
so every number here is chosen to give round results (median wall 10.0 s on one GPU, 8.0 s for
pp on two: S = 1.25, E = 0.625). The fixture database is built from such bundles through
storage's own repository and ingestion functions, exactly as a finished run would be.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlmodel import Session

from storage import repo
from storage.ingest import ingest_bundle
from tui.studies.presets import ExperimentPlan, run_name
from worker import contract

GIB = 2**30


def stat(values: Sequence[float]) -> dict[str, Any]:
    return contract.stat_summary(list(values))


def rank_record(rank: int, *, peak: int, compute: float | None = None, comm: float | None = None,
                idle: float | None = None, bubble: float | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "rank": rank, "peak_allocated_bytes": peak, "peak_reserved_bytes": peak + GIB // 4, "peak_rss_bytes": None,
        "compute_s": compute, "comm_s": comm, "idle_s": idle, "bubble_pct": bubble,
        "exposed_comm_pct": None if comm is None else round(100 * comm / (compute + comm + idle), 3),
    }
    return record


def measurement(*, batch_size: int, num_requests: int, max_new_tokens: int, wall_s: Sequence[float],
                ttft_s: float, tpot_s: float, per_rank: list[dict[str, Any]], num_gpus: int,
                prompt_tokens: int = 16) -> dict[str, Any]:
    """One measurement; throughputs follow from the workload and the median wall time."""
    output_tokens = num_requests * max_new_tokens
    wall = stat(wall_s)["median"]
    output_tok_s = output_tokens / wall
    return {
        "batch_size": batch_size, "num_requests": num_requests, "max_new_tokens": max_new_tokens,
        "prompt_tokens": prompt_tokens * num_requests, "output_tokens": output_tokens,
        "repeats": len(wall_s), "wall_s": list(wall_s), "prefill_s": [ttft_s] * len(wall_s),
        "ttft_s": stat([ttft_s] * num_requests), "tpot_s": stat([tpot_s] * num_requests),
        "itl_s": stat([tpot_s] * 4), "e2e_s": stat([ttft_s + tpot_s * (max_new_tokens - 1)] * num_requests),
        "prefill_latency_s": stat([ttft_s] * len(wall_s)),
        "decode_throughput_tok_s": batch_size * (max_new_tokens - 1) / (tpot_s * (max_new_tokens - 1)),
        "output_throughput_tok_s": output_tok_s,
        "total_throughput_tok_s": (output_tokens + prompt_tokens * num_requests) / wall,
        "per_gpu_output_tok_s": output_tok_s / num_gpus,
        "per_rank": per_rank,
    }


def result(spec: dict[str, Any], *, world_size: int, num_gpus: int, measurements: list[dict[str, Any]],
           hosts: Sequence[str] = ("gpu-node-1",), gpu_model: str | None = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    return {
        "schema_version": contract.SCHEMA_VERSION, "kind": contract.RESULT_KIND, "run_name": spec["run_name"],
        "status": "completed", "spec": spec, "world_size": world_size, "num_gpus": num_gpus,
        "environment": {"hosts": list(hosts), "gpu_model": gpu_model, "torch": "2.11.0+cu130",
                        "transformers": "5.17.0", "deepspeed": "0.19.8", "nccl": "2.27.3",
                        "python": "3.12.3", "backend": "nccl" if gpu_model else "gloo"},
        "load_time_s": 4.5,
        "ranks": [{"rank": r, "host": hosts[r % len(hosts)], "device": f"cuda:{r}", "stage": r,
                   "layers": [0, 26], "param_bytes": 6_850_000_000 // world_size, "load_time_s": 4.0}
                  for r in range(world_size)],
        "measurements": measurements,
    }


def completions(batch_size: int, outputs: Sequence[Sequence[int]], topk: Sequence[Sequence[Sequence[int]]]) -> list[dict]:
    return [
        {"batch_size": batch_size, "index": i, "prompt": f"prompt {i}", "prompt_ids": [1, 2, 3],
         "output_ids": list(ids), "text": " ".join(f"t{t}" for t in ids), "topk_ids": [list(k) for k in topk[i]]}
        for i, ids in enumerate(outputs)
    ]


def write_bundle(directory: Path, result_record: dict[str, Any], completion_lines: list[dict] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / contract.RESULT_FILE).write_text(json.dumps(result_record, indent=1, sort_keys=True))
    if completion_lines is not None:
        (directory / contract.COMPLETIONS_FILE).write_text(
            "".join(json.dumps(line, sort_keys=True) + "\n" for line in completion_lines)
        )
    return directory


def store_experiment(session: Session, plan: ExperimentPlan, bundles: dict[str, Path | None],
                     *, states: dict[str, str] | None = None) -> int:
    """Create the experiment and one run per cell, ingesting each cell's bundle; returns the id.

    A cell mapped to None gets a run in the state `states[key]` (default FAILED) and no results;
    a cell missing from `bundles` gets no run at all (never submitted).
    """
    experiment = repo.create_experiment(session=session, name=plan.name, kind=plan.kind,
                                        parameters=plan.parameters())
    cluster = repo.get_or_create_cluster(session=session, name="fixture-cluster", backend="slurm")
    for index, cell in enumerate(plan.cells):
        if cell.key not in bundles:
            continue
        run = repo.create_run(
            session=session, uid=f"{plan.name}-{index}", name=run_name(plan.name, cell.key), mode=cell.spec.mode,
            spec=cell.spec.to_dict(), resources=cell.to_dict()["resources"], num_ranks=cell.num_ranks,
            cluster_id=cluster.id, experiment_id=experiment.id, at=1_700_000_000.0 + index,
        )
        bundle = bundles.get(cell.key)
        if bundle is None:
            state = (states or {}).get(cell.key, "FAILED")
            repo.record_state(session=session, run=run, state=state, at=1_700_000_100.0 + index)
            if state == "FAILED":  # as the failure summary writes it
                repo.update_run(session=session, run=run, error="rank 1 on node2 died first: killed by signal 9 "
                                "(SIGKILL); then rank 0 on node1: killed by signal 15 (SIGTERM)\nrank 0: peer rank lost")
            continue
        ingest_bundle(session=session, bundle_dir=bundle, run=run)
        repo.record_state(session=session, run=run, state="COMPLETED", at=1_700_000_100.0 + index)
    session.commit()
    return experiment.id
