"""A profiled 2-process pp run (real `python -m worker run` ranks over gloo) writes one trace-event
file per rank: valid Chrome / Perfetto JSON, one track per rank, and within a track the events nest
and never overlap. Its result.json carries the few-steps timeline the terminal draws."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from tests.worker.conftest import launcher_output, start_slurm_ranks, wait_all
from worker.contract import EXIT_OK, trace_file

pytestmark = pytest.mark.dist

RUN = ["--synthetic-config", "tiny", "--mode", "pp", "--micro-batches", "2", "--batch-sizes", "4",
       "--num-requests", "8", "--max-new-tokens", "6", "--warmup", "0", "--repeats", "2", "--profile",
       "--dtype", "float32", "--device", "cpu", "--dist-timeout", "60"]


def _nest_or_apart(a: dict, b: dict) -> bool:
    """Two complete events of one track either lie apart or one holds the other (µs, rounded to 1 ns)."""
    a0, a1, b0, b1 = a["ts"], a["ts"] + a["dur"], b["ts"], b["ts"] + b["dur"]
    eps = 2e-3
    return a1 <= b0 + eps or b1 <= a0 + eps or (a0 <= b0 + eps and b1 <= a1 + eps) or (b0 <= a0 + eps and a1 <= b1 + eps)


@pytest.fixture(scope="module", params=["fast", "reference"])
def profiled_pp(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"pp-trace-{request.param}")
    procs = start_slurm_ranks(2, [*RUN, "--impl", request.param, "--out", str(out)], out)
    assert wait_all(procs, 240) == [EXIT_OK, EXIT_OK], launcher_output(out)
    return out


def test_each_rank_writes_a_valid_trace_with_one_track(profiled_pp):
    for rank in (0, 1):
        record = json.loads((profiled_pp / trace_file(rank)).read_text())
        events = record["traceEvents"]
        spans = [e for e in events if e["ph"] == "X"]
        assert {(e["pid"], e["tid"]) for e in events} == {(rank, 0)}   # one track: this rank's
        names = [e for e in events if e["ph"] == "M" and e["name"] == "process_name"]
        assert names[0]["args"]["name"].startswith(f"rank {rank} (pp)")
        assert all(isinstance(e["ts"], (int, float)) and e["dur"] >= 0 for e in spans)
        kinds = {e["name"] for e in spans}
        # stage compute, the hand-offs both ways, and the blocks around them
        assert {"compute", "recv", "send", "measure", "repeat", "batch"} <= kinds
        # 2 repeats x 2 batches of 4 rows, each 2 micro-batches x 6 tokens (1 prefill + 5 decode steps)
        assert sum(e["name"] == "compute" for e in spans) == 2 * 2 * 2 * 6
        assert sum(e["name"] == "batch" for e in spans) == 4
        decode = [e for e in spans if e["name"] == "compute" and e["args"].get("step", 0) >= 1]
        assert {(e["args"]["step"], e["args"]["mb"]) for e in decode} == {(s, m) for s in range(1, 6) for m in (0, 1)}
        bad = [(a["name"], b["name"]) for a, b in combinations(spans, 2) if not _nest_or_apart(a, b)]
        assert not bad, bad[:5]


def test_the_result_keeps_a_few_steps_of_every_rank_cut_at_the_same_instants(profiled_pp):
    (m,) = json.loads((profiled_pp / "result.json").read_text())["measurements"]
    timeline = m["timeline"]
    assert timeline["steps"] == 4 and timeline["micro_batches"] == 2 and timeline["window_s"] > 0
    assert [r["rank"] for r in timeline["ranks"]] == [0, 1]
    for r in timeline["ranks"]:
        assert r["spans"], r
        for kind, start, end in r["spans"]:
            assert kind in ("compute", "send", "recv", "wait", "comm")
            assert 0 <= start < end <= timeline["window_s"] + 1e-9
    # 4 decode steps of 2 micro-batches: rank 0 computes 8 times inside its own window
    assert sum(k == "compute" for k, _, _ in timeline["ranks"][0]["spans"]) == 8


def test_dinf_trace_merges_the_ranks_into_one_perfetto_file(profiled_pp, tmp_path, monkeypatch, capsys):
    from tui.cli import main as cli

    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DINF_DB", raising=False)
    monkeypatch.delenv("DINF_CONFIG", raising=False)
    db = ["--db", str(tmp_path / "dinf.db")]
    # by run: the bundle ingested as an imported run keeps its directory as its results
    assert cli.main([*db, "ingest", str(profiled_pp)]) == 0
    assert cli.main([*db, "trace", "1", "-o", str(tmp_path / "merged.json")]) == 0, capsys.readouterr().err
    merged = json.loads((tmp_path / "merged.json").read_text())
    spans = [e for e in merged["traceEvents"] if e["ph"] == "X"]
    tracks = {(e["pid"], e["tid"]) for e in merged["traceEvents"]}
    assert tracks == {(0, 0), (1, 0)}                                 # one track per rank
    labels = {e["pid"]: e["args"]["name"] for e in merged["traceEvents"] if e["name"] == "process_name"}
    assert sorted(labels) == [0, 1] and labels[1].startswith("rank 1 (pp)")
    for pid in (0, 1):
        track = [e for e in spans if e["pid"] == pid]
        assert not [(a["name"], b["name"]) for a, b in combinations(track, 2) if not _nest_or_apart(a, b)]
    # stage 1 receives what stage 0 computed: the ranks share one time axis
    first_compute_0 = min(e["ts"] for e in spans if e["pid"] == 0 and e["name"] == "compute")
    first_compute_1 = min(e["ts"] for e in spans if e["pid"] == 1 and e["name"] == "compute")
    assert first_compute_0 < first_compute_1 < first_compute_0 + 10e6
    # by directory, and a directory without traces is refused by name
    assert cli.main([*db, "trace", str(profiled_pp), "-o", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["traceEvents"] == merged["traceEvents"]
    (tmp_path / "empty").mkdir()
    assert cli.main([*db, "trace", str(tmp_path / "empty")]) == 2
    assert "no rank<r>.trace.json files; was the run profiled" in capsys.readouterr().err
