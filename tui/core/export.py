"""`dinf export`: one flat row per (run, batch size), its typed columns, and the CSV, JSON and Parquet writers.

A row holds the run's identity and tags, how it was laid out (nodes, ranks per node, GPUs), what ran
(dtype, engine implementation, compiled, CUDA graphs, quantization), the workload, every statistic
of every latency (n, median, p90, p99, mean, std, min, max and the 95% Student-t half-width, from
the worker's `stat_summary`), the wall time and output rate over the timed repeats with their own
Student-t interval, and the largest rank's peak memory. A value the run did not record is None:
an empty CSV cell, a JSON null, a Parquet null; never a zero.

Every column has one type (`COLUMNS`), so the three formats agree and a Parquet column of a
value no run has is still typed. Parquet needs pyarrow (`pip install 'dinf-tui[parquet]'`),
imported only when asked for. This module reads no database: `tui.core.service.Dinf.export_rows`
gathers the rows with `export_row`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from worker.contract import stat_summary

FORMATS = ("csv", "json", "parquet")

LATENCIES = ("ttft", "tpot", "itl", "e2e", "prefill")
"""The column prefixes of the latency Stats (storage.models.STAT_COLUMNS' values)."""
STAT_SUFFIXES = ("n", "median_s", "p90_s", "p99_s", "mean_s", "std_s", "min_s", "max_s", "ci95_s")
"""Each Stat part's column suffix (storage.models.STAT_PARTS' values), in the order exported."""
REPEAT_STATS = ("median", "mean", "std", "min", "max", "ci95")
"""What is exported of a quantity measured once per timed repeat (wall time, output rate); n is `repeats`."""

COLUMNS: tuple[tuple[str, type], ...] = (
    ("run_id", int), ("run_uid", str), ("run_name", str), ("cluster", str), ("experiment_id", int),
    ("mode", str), ("state", str), ("tags", str), ("notes", str),
    ("nodes", int), ("ranks_per_node", int), ("num_ranks", int), ("num_gpus", int),
    ("dtype", str), ("engine_impl", str), ("engine_compiled", bool), ("engine_cuda_graphs", bool),
    ("engine_capture_s", float), ("quant_scheme", str),
    ("batch_size", int), ("num_requests", int), ("max_new_tokens", int), ("prompt_tokens", int),
    ("output_tokens", int), ("repeats", int), ("load_time_s", float),
    *((f"wall_{part}_s", float) for part in REPEAT_STATS),
    ("output_throughput_tok_s", float),
    *((f"output_throughput_{part}_tok_s", float) for part in REPEAT_STATS if part != "median"),
    ("decode_throughput_tok_s", float), ("total_throughput_tok_s", float), ("per_gpu_output_tok_s", float),
    *((f"{prefix}_{suffix}", int if suffix == "n" else float) for prefix in LATENCIES for suffix in STAT_SUFFIXES),
    ("peak_allocated_bytes", int), ("peak_reserved_bytes", int), ("peak_rss_bytes", int),
)
"""Every exported column and its type, in order. `tags` is the run's tags joined by commas (a tag
holds none); the three peak memories are the largest rank's (device allocated and reserved, and the
process RSS, which is all a CPU run has); `output_throughput_tok_s` is the median over repeats."""
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


class ExportError(RuntimeError):
    """The export can't be written as asked; the message says what to do."""


def export_row(
    *,
    run: Any,
    cluster: str | None,
    tags: Sequence[str],
    measurement: Any,
    rank_stats: Iterable[Any],
    hosts: Sequence[str | None],
) -> dict[str, Any]:
    """One row from storage rows: the run (`storage.models.Run`), one of its measurements, that
    measurement's per-rank stats and the hosts its ranks ran on (`RunRank.host`, for runs whose
    resources were not recorded: imported bundles)."""
    spec = _json_object(run.spec_json)
    nodes, ranks_per_node = layout(run.num_ranks, _json_object(run.resources_json), hosts)
    row: dict[str, Any] = {
        "run_id": run.id, "run_uid": run.uid, "run_name": run.name, "cluster": cluster,
        "experiment_id": run.experiment_id, "mode": run.mode, "state": run.state, "tags": ",".join(tags),
        "notes": run.notes, "nodes": nodes, "ranks_per_node": ranks_per_node, "num_ranks": run.num_ranks,
        "num_gpus": measurement.num_gpus, "dtype": spec.get("dtype"), "engine_impl": run.engine_impl,
        "engine_compiled": run.engine_compiled, "engine_cuda_graphs": run.engine_cuda_graphs,
        "engine_capture_s": run.engine_capture_s, "quant_scheme": run.quant_scheme,
    }
    for name in ("batch_size", "num_requests", "max_new_tokens", "prompt_tokens", "output_tokens", "repeats",
                 "load_time_s", "output_throughput_tok_s", "decode_throughput_tok_s", "total_throughput_tok_s",
                 "per_gpu_output_tok_s"):
        row[name] = getattr(measurement, name)
    for prefix in LATENCIES:
        for suffix in STAT_SUFFIXES:
            row[f"{prefix}_{suffix}"] = getattr(measurement, f"{prefix}_{suffix}")
    wall = repeat_stats(_json_list(measurement.wall_s_json))
    raw = _json_object(measurement.raw_json).get("raw")  # the worker's per-repeat rates (absent in old bundles)
    rate = repeat_stats(raw.get("output_throughput_tok_s") if isinstance(raw, dict) else None)
    for part in REPEAT_STATS:
        row[f"wall_{part}_s"] = wall[part]
        if part != "median":  # the median over repeats is output_throughput_tok_s, as the worker wrote it
            row[f"output_throughput_{part}_tok_s"] = rate[part]
    stats = list(rank_stats)
    for name in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes"):
        values = [getattr(s, name) for s in stats if getattr(s, name) is not None]
        row[name] = max(values) if values else None
    return {name: row[name] for name in COLUMN_NAMES}


def layout(num_ranks: int, resources: Mapping[str, Any], hosts: Sequence[str | None]) -> tuple[int | None, int | None]:
    """(nodes, ranks per node): as the run asked for them, else from the hosts its ranks reported
    (None where they do not say, or the ranks were spread unevenly)."""
    nodes, per_node = resources.get("nodes"), resources.get("tasks_per_node")
    if isinstance(nodes, int) and isinstance(per_node, int):
        return nodes, per_node
    known = [h for h in hosts if h]
    if not known or len(known) != len(hosts):
        return None, None
    counts = {host: known.count(host) for host in known}
    even = len(set(counts.values())) == 1 and sum(counts.values()) == num_ranks
    return len(counts), (next(iter(counts.values())) if even else None)


def repeat_stats(samples: Any) -> dict[str, float | None]:
    """median, mean, std, min, max and the 95% half-width of the mean over repeats (Student t with
    n - 1 degrees of freedom: honest for 3 repeats, where a normal 1.96 would claim an interval
    2.2 times too narrow); all None without samples, std and ci95 None with one."""
    values = [float(v) for v in samples] if isinstance(samples, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in samples) else []
    summary = stat_summary(values)
    return {part: summary[part] for part in REPEAT_STATS}


# --- writers -----------------------------------------------------------------------------------


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """A header of every column, then one line per row; None is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMN_NAMES), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2) + "\n"


def write_parquet(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Write the rows as one Parquet file with every column typed (ExportError without pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError(
            f"--format parquet needs pyarrow, which is not installed here ({exc}); install it with "
            "pip install 'dinf-tui[parquet]', or export --format csv or json"
        ) from None
    arrow_types = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
    schema = pa.schema([(name, arrow_types[kind]) for name, kind in COLUMNS])
    table = pa.table({name: [row[name] for row in rows] for name in COLUMN_NAMES}, schema=schema)
    pq.write_table(table, path)


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
