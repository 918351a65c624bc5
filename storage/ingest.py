"""Ingest a worker's result bundle (result.json, completions.jsonl, comparison.json) into the database.

Idempotent: every row has a natural key under a unique constraint (run + batch size, measurement +
rank, run + batch size + request index, ...) and is written with an upsert, so ingesting the same
bundle twice, or a bundle of a run the poller already ingested, leaves one copy of everything.
A bundle ingested without a run (`dinf ingest DIR`) is found again by the sha256 of its result.json.

It parses with `worker.contract.read_result` (which refuses other schema versions) and checks the
fields it stores, naming the one at fault. It does not fetch anything from a cluster (the service
layer does) and never commits: the caller's transaction makes an ingestion all-or-nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from storage import repo
from storage.models import (
    ENGINE_BEFORE_FAST_PATH,
    IMPORTED,
    STAT_COLUMNS,
    STAT_PARTS,
    Completion,
    CorrectnessResult,
    Measurement,
    RankStat,
    Run,
    RunRank,
)
from worker import contract


class IngestError(ValueError):
    """The bundle can't be ingested; the message names the file and field at fault."""


@dataclass(frozen=True)
class IngestReport:
    run_id: int
    created_run: bool
    measurements: int
    completions: int
    correctness: int


def bundle_digest(result_path: Path) -> str:
    return hashlib.sha256(result_path.read_bytes()).hexdigest()


def ingest_bundle(*, session: Session, bundle_dir: Path, run: Run | None = None) -> IngestReport:
    """Store the bundle in `bundle_dir` under `run` (or under an IMPORTED run made for it)."""
    bundle_dir = Path(bundle_dir)
    result_path = bundle_dir / contract.RESULT_FILE
    if not result_path.is_file():
        raise IngestError(f"{bundle_dir}: no {contract.RESULT_FILE} here; is this a dinf run's output directory?")
    try:
        result = contract.read_result(result_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestError(f"{result_path}: {exc}") from exc
    digest = bundle_digest(result_path)

    created = False
    if run is None:
        run = session.exec(select(Run).where(Run.bundle_digest == digest)).first()
    if run is None:
        run = _imported_run(session=session, result=result, digest=digest, bundle_dir=bundle_dir)
        created = True
    else:
        other = session.exec(select(Run).where(Run.bundle_digest == digest)).first()
        if other is not None and other.id != run.id:
            raise IngestError(f"{result_path} is already stored as run {other.id} ({other.uid}), not run {run.id}")

    measurements = _store_measurements(session=session, run=run, result=result, source=result_path)
    _store_ranks(session=session, run=run, result=result, source=result_path)
    completions = _store_completions(session=session, run=run, path=bundle_dir / contract.COMPLETIONS_FILE)
    correctness = _store_correctness(session=session, run=run, path=bundle_dir / contract.COMPARISON_FILE)
    repo.update_run(
        session=session,
        run=run,
        bundle_digest=digest,
        load_time_s=_number(result.get("load_time_s"), "load_time_s", result_path),
        environment_json=json.dumps(result.get("environment") or {}, sort_keys=True),
        num_gpus=_int(result.get("num_gpus"), "num_gpus", result_path, default=run.num_gpus),
        local_results_dir=str(bundle_dir.resolve()),
        ingested_at=time.time(),
        **_engine(result.get("engine"), result_path),
        **_quant(result, result_path),
    )
    return IngestReport(
        run_id=run.id, created_run=created, measurements=measurements, completions=completions,
        correctness=correctness,
    )


# --- pieces -----------------------------------------------------------------------------------


def _imported_run(*, session: Session, result: dict, digest: str, bundle_dir: Path) -> Run:
    spec = result.get("spec") if isinstance(result.get("spec"), dict) else {}
    name = str(result.get("run_name") or spec.get("run_name") or bundle_dir.name)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"
    cluster = repo.get_or_create_cluster(session=session, name="imported", backend="imported")
    world_size = result.get("world_size")
    run = repo.create_run(
        session=session,
        uid=f"{slug[:40]}-{digest[:10]}",
        name=name,
        mode=str(spec.get("mode", "?")),
        spec=spec,
        num_ranks=world_size if isinstance(world_size, int) else 1,
        cluster_id=cluster.id,
        state=IMPORTED,
    )
    repo.update_run(session=session, run=run, finished_at=run.created_at)
    return run


def _engine(engine: Any, source: Path) -> dict[str, Any]:
    """result.json "engine" as the run's engine columns; a bundle without one ran the reference, eagerly.

    `impl` is stored as the worker wrote it (a newer worker may name another implementation).
    """
    if engine is None:
        return dict(ENGINE_BEFORE_FAST_PATH)
    if not isinstance(engine, dict):
        raise IngestError(f"{source}: engine must be an object (impl, compiled, cuda_graphs, capture_s)")
    impl = engine.get("impl")
    if not isinstance(impl, str) or not impl:
        raise IngestError(f"{source}: engine.impl must be a non-empty string, got {impl!r}")
    return {
        "engine_impl": impl,
        "engine_compiled": _bool(engine.get("compiled"), "engine.compiled", source),
        "engine_cuda_graphs": _bool(engine.get("cuda_graphs"), "engine.cuda_graphs", source),
        "engine_capture_s": _number(engine.get("capture_s"), "engine.capture_s", source),
    }


def _quant(result: dict, source: Path) -> dict[str, Any]:
    """result.json "quant" and "accuracy" as the run's columns (a bundle without them was not quantized)."""
    quant = result.get("quant")
    if quant is None:
        scheme = (result.get("spec") or {}).get("quant", "none")
    elif not isinstance(quant, dict) or quant.get("scheme") not in contract.QUANT_SCHEMES:
        raise IngestError(f"{source}: quant.scheme must be one of {', '.join(contract.QUANT_SCHEMES)}")
    else:
        scheme = quant["scheme"]
    accuracy = result.get("accuracy")
    if accuracy is not None and not isinstance(accuracy, dict):
        raise IngestError(f"{source}: accuracy must be an object")
    return {"quant_scheme": scheme, "accuracy_json": json.dumps(accuracy, sort_keys=True) if accuracy else None}


def _store_measurements(*, session: Session, run: Run, result: dict, source: Path) -> int:
    records = _objects(result.get("measurements"), "measurements", source, required=True)
    load_time = _number(result.get("load_time_s"), "load_time_s", source)
    num_gpus = result.get("num_gpus")
    for where, record in records:
        values: dict[str, Any] = {
            "run_id": run.id,
            "batch_size": _int(record.get("batch_size"), f"{where}.batch_size", source, required=True),
            "num_requests": _int(record.get("num_requests"), f"{where}.num_requests", source),
            "max_new_tokens": _int(record.get("max_new_tokens"), f"{where}.max_new_tokens", source),
            "prompt_tokens": _int(record.get("prompt_tokens"), f"{where}.prompt_tokens", source),
            "output_tokens": _int(record.get("output_tokens"), f"{where}.output_tokens", source),
            "repeats": _int(record.get("repeats"), f"{where}.repeats", source),
            "num_gpus": num_gpus if isinstance(num_gpus, int) else None,
            "load_time_s": load_time,
            "wall_s_json": json.dumps(record.get("wall_s") or []),
            "prefill_s_json": json.dumps(record.get("prefill_s") or []),
            "raw_json": json.dumps(record, sort_keys=True),
        }
        for key in ("decode_throughput_tok_s", "output_throughput_tok_s", "total_throughput_tok_s",
                    "per_gpu_output_tok_s"):
            values[key] = _number(record.get(key), f"{where}.{key}", source)
        world_size = result.get("world_size")
        if num_gpus == 0 and isinstance(world_size, int) and world_size > 1 and values["output_throughput_tok_s"]:
            # A CPU run's rate per device is per rank; workers before that fix divided by max(num_gpus, 1) = 1.
            values["per_gpu_output_tok_s"] = values["output_throughput_tok_s"] / world_size
        for field, prefix in STAT_COLUMNS.items():
            stat = record.get(field)
            if stat is None:
                continue
            if not isinstance(stat, dict):
                raise IngestError(f"{source}: {where}.{field} must be a Stat object ({', '.join(STAT_PARTS)})")
            for part, suffix in STAT_PARTS.items():  # a part the bundle lacks stays NULL (older workers)
                convert = _int if part == "n" else _number
                values[f"{prefix}_{suffix}"] = convert(stat.get(part), f"{where}.{field}.{part}", source)
        measurement_id = repo.upsert(session=session, model=Measurement, values=values, keys=("run_id", "batch_size"))
        _store_rank_stats(session=session, measurement_id=measurement_id, record=record, where=where, source=source)
    return len(records)


def _store_rank_stats(*, session: Session, measurement_id: int, record: dict, where: str, source: Path) -> None:
    for at, stat in _objects(record.get("per_rank"), f"{where}.per_rank", source):
        values: dict[str, Any] = {
            "measurement_id": measurement_id,
            "rank": _int(stat.get("rank"), f"{at}.rank", source, required=True),
        }
        for key in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes"):
            values[key] = _int(stat.get(key), f"{at}.{key}", source)
        for key in ("compute_s", "comm_s", "idle_s", "bubble_pct", "exposed_comm_pct"):
            values[key] = _number(stat.get(key), f"{at}.{key}", source)
        repo.upsert(session=session, model=RankStat, values=values, keys=("measurement_id", "rank"))


def _store_ranks(*, session: Session, run: Run, result: dict, source: Path) -> None:
    for at, info in _objects(result.get("ranks"), "ranks", source):
        layers = info.get("layers")
        first, last = (layers if isinstance(layers, list) and len(layers) == 2 else (None, None))
        values = {
            "run_id": run.id,
            "rank": _int(info.get("rank"), f"{at}.rank", source, required=True),
            "host": None if info.get("host") is None else str(info.get("host")),
            "device": None if info.get("device") is None else str(info.get("device")),
            "stage": _int(info.get("stage"), f"{at}.stage", source),
            "first_layer": _int(first, f"{at}.layers[0]", source),
            "last_layer_exclusive": _int(last, f"{at}.layers[1]", source),
            "param_bytes": _int(info.get("param_bytes"), f"{at}.param_bytes", source),
            "load_time_s": _number(info.get("load_time_s"), f"{at}.load_time_s", source),
        }
        repo.upsert(session=session, model=RunRank, values=values, keys=("run_id", "rank"))


def _store_completions(*, session: Session, run: Run, path: Path) -> int:
    if not path.is_file():
        return 0
    count = 0
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"{path}:{lineno}: not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise IngestError(f"{path}:{lineno}: must be an object")
        values = {
            "run_id": run.id,
            "batch_size": _int(record.get("batch_size"), "batch_size", path, required=True, line=lineno),
            "index": _int(record.get("index"), "index", path, required=True, line=lineno),
            "prompt": str(record.get("prompt") or ""),
            "text": str(record.get("text") or ""),
            "prompt_ids_json": json.dumps(record.get("prompt_ids") or []),
            "output_ids_json": json.dumps(record.get("output_ids") or []),
            "topk_ids_json": json.dumps(record.get("topk_ids") or []),
        }
        repo.upsert(session=session, model=Completion, values=values, keys=("run_id", "batch_size", "index"))
        count += 1
    return count


def _store_correctness(*, session: Session, run: Run, path: Path) -> int:
    """comparison.json (`dinf-worker compare`): one row per batch size, plus batch_size -1 for the whole run."""
    if not path.is_file():
        return 0
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != "dinf.comparison":
        raise IngestError(f"{path}: not a dinf comparison (missing kind 'dinf.comparison')")
    if data.get("schema_version") != contract.SCHEMA_VERSION:
        raise IngestError(
            f"{path}: schema version {data.get('schema_version')!r}; this dinf reads {contract.SCHEMA_VERSION}"
        )
    groups = _objects(data.get("by_batch_size"), "by_batch_size", path, required=True)
    reference = _text(data.get("baseline"))
    rows = []
    for where, group in groups:
        per_prompt = group.get("per_prompt") or []
        if not isinstance(per_prompt, list) or not all(isinstance(p, dict) for p in per_prompt):
            raise IngestError(f"{path}: {where}.per_prompt must be a list of objects")
        divergent = _int(group.get("divergent"), f"{where}.divergent", path)
        agree = _int(group.get("topk_agree_at_divergence"), f"{where}.topk_agree_at_divergence", path)
        ordered = sorted(per_prompt, key=lambda p: p.get("index", 0))
        rows.append({
            "batch_size": _int(group.get("batch_size"), f"{where}.batch_size", path, required=True),
            "num_prompts": _int(group.get("prompts"), f"{where}.prompts", path),
            "num_exact": _int(group.get("exact"), f"{where}.exact", path),
            "exact_match_rate": _number(group.get("exact_match_rate"), f"{where}.exact_match_rate", path),
            "first_divergences_json": json.dumps([p.get("first_divergence") for p in ordered]),
            "topk_agreement_rate": agree / divergent if divergent and agree is not None else None,
            "raw_json": json.dumps(group, sort_keys=True),
        })
    whole = {k: v for k, v in data.items() if k != "by_batch_size"}
    rows.append({
        "batch_size": -1,
        "num_prompts": sum(r["num_prompts"] or 0 for r in rows),
        "num_exact": sum(r["num_exact"] or 0 for r in rows),
        "exact_match_rate": _number(data.get("exact_match_rate"), "exact_match_rate", path),
        "first_divergences_json": "[]",
        "topk_agreement_rate": _number(data.get("topk_agreement_rate"), "topk_agreement_rate", path),
        "raw_json": json.dumps(whole, sort_keys=True),
    })
    for values in rows:
        values.update(run_id=run.id, reference=reference)
        repo.upsert(session=session, model=CorrectnessResult, values=values, keys=("run_id", "batch_size"))
    return len(rows)


# --- field checks -----------------------------------------------------------------------------


def _objects(value: Any, field: str, source: Path, *, required: bool = False) -> list[tuple[str, dict]]:
    """The items of a list of objects, each with its path (`field[i]`) for later messages.

    Missing (None) is an empty list unless `required`.
    """
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise IngestError(f"{source}: {field} must be a list")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise IngestError(f"{source}: {field}[{i}] must be an object")
        items.append((f"{field}[{i}]", item))
    return items


def _where(source: Path, field: str, line: int | None) -> str:
    return f"{source}:{line}: {field}" if line is not None else f"{source}: {field}"


def _int(value: Any, field: str, source: Path, *, required: bool = False, default: int | None = None,
         line: int | None = None) -> int | None:
    if value is None:
        if required:
            raise IngestError(f"{_where(source, field, line)} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise IngestError(f"{_where(source, field, line)} must be an integer, got {value!r}")
    return value


def _number(value: Any, field: str, source: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IngestError(f"{source}: {field} must be a number, got {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None  # SQLite has no NaN; "no value" is honest


def _bool(value: Any, field: str, source: Path) -> bool:
    """A JSON boolean; missing is false (a setting the worker did not report was not in use)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise IngestError(f"{source}: {field} must be true or false, got {value!r}")
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
