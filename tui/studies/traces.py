"""`dinf trace`: one Perfetto-ready trace of a profiled run, merged from its ranks' trace files.

Each rank of a profiled run writes `rank<r>.trace.json` (worker/trace.py: complete events on the
Unix time axis, pid = rank, tid = 0); they travel with the run's results. Merging is concatenation
of their events (each rank keeps its own track, named "rank r (mode) on host") with the files checked
first: a file that is not trace-event JSON, or whose events claim another rank's track, is refused
with its name. Open the merged file at https://ui.perfetto.dev (or chrome://tracing).

It reads files only; finding the run's directory is the caller's (`tui.cli.main.cmd_trace`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TRACE_NAME = re.compile(r"^rank(\d+)\.trace\.json$")


class TraceError(ValueError):
    """A run without trace files, or a trace file that cannot be merged; the message names it."""


def trace_files(directory: Path) -> dict[int, Path]:
    """rank -> its trace file in `directory` (a run's results or a bundle)."""
    found = {}
    for path in sorted(Path(directory).glob("rank*.trace.json")):
        match = TRACE_NAME.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def merge_traces(directory: Path, *, title: str = "") -> dict[str, Any]:
    """The merged trace of every rank's file in `directory`, one track per rank."""
    files = trace_files(directory)
    if not files:
        raise TraceError(f"{directory}: no rank<r>.trace.json files; was the run profiled (profile=true)?")
    events: list[dict[str, Any]] = []
    dropped = 0
    for rank, path in files.items():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceError(f"{path}: not a readable trace-event JSON file ({exc})") from None
        rank_events = record.get("traceEvents") if isinstance(record, dict) else None
        if not isinstance(rank_events, list):
            raise TraceError(f"{path}: traceEvents must be a list of events")
        strangers = sorted({e.get("pid") for e in rank_events if isinstance(e, dict) and e.get("pid") != rank},
                           key=str)
        if strangers or not all(isinstance(e, dict) for e in rank_events):
            raise TraceError(f"{path}: every event must be on rank {rank}'s track (pid {rank}); found pid {strangers}")
        events += rank_events
        dropped += int((record.get("otherData") or {}).get("dropped_spans") or 0)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"writer": "dinf trace", "run": title, "ranks": list(files), "dropped_spans": dropped}}


def write_merged(directory: Path, output: Path, *, title: str = "") -> Path:
    merged = merge_traces(directory, title=title)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(merged, separators=(",", ":")), encoding="utf-8")
    return output
