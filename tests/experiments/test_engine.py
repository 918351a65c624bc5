"""The worker's engine as every view shows it: `describe_engine`, `dinf show`, `dinf export`, the
report's setup table and the compare view's differing fields."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from storage import repo
from storage.db import read_session, write_session
from tests.storage.conftest import write_schema1_file
from tui.cli import main as cli
from tui.studies import comparison, report, results
from tui.studies.results import describe_engine

PP2_BUNDLE = Path(__file__).parents[1] / "storage" / "fixtures" / "pp2_bundle"
FAST = {"impl": "fast", "compiled": True, "cuda_graphs": True, "capture_s": 41.2}
FAST_COLUMNS = {"engine_impl": "fast", "engine_compiled": True, "engine_cuda_graphs": True, "engine_capture_s": 41.2}


class Facts:
    def __init__(self, impl: str, compiled: bool, graphs: bool, capture: float | None):
        self.engine_impl, self.engine_compiled, self.engine_cuda_graphs, self.engine_capture_s = (
            impl, compiled, graphs, capture)


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (Facts("fast", True, True, 41.2), "impl fast (compiled, CUDA graphs; capture 41.2 s)"),
        (Facts("fast", True, True, None), "impl fast (compiled, CUDA graphs)"),  # asked for, not run yet
        (Facts("fast", False, True, 0.84), "impl fast (eager, CUDA graphs; capture 0.8 s)"),
        (Facts("fast", False, False, None), "impl fast (eager)"),
        (Facts("reference", False, False, None), "impl reference (eager)"),
        (Facts("deepspeed", False, False, None), "impl deepspeed (eager)"),
    ],
)
def test_describe_engine(facts, text):
    assert describe_engine(facts) == text


def test_describe_engine_names_quantized_weights():
    facts = Facts("fast", True, True, 12.0)
    facts.quant_scheme = "int4"
    assert describe_engine(facts) == "impl fast (compiled, CUDA graphs; capture 12.0 s), int4 weights"


# --- dinf show / export ---------------------------------------------------------------------------


@pytest.fixture
def dinf(tmp_path, monkeypatch, capsys):
    """`dinf ARGS...` in-process on a fresh database: (exit code, stdout)."""
    for name in [k for k in os.environ if k.startswith("DINF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(["--db", str(tmp_path / "dinf.db"), *args])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return code, captured.out

    return run


def _bundle_with(tmp_path: Path, engine: dict | None) -> Path:
    copy = tmp_path / ("bundle-" + (engine["impl"] if engine else "old"))
    shutil.copytree(PP2_BUNDLE, copy)
    result = json.loads((copy / "result.json").read_text())
    if engine is not None:
        result["engine"] = engine
    (copy / "result.json").write_text(json.dumps(result))
    return copy


def test_show_and_export_say_which_engine_ran(dinf, tmp_path):
    fast = json.loads(dinf("ingest", str(_bundle_with(tmp_path, FAST)), "--json")[1])["run_id"]
    old = json.loads(dinf("ingest", str(_bundle_with(tmp_path, None)), "--json")[1])["run_id"]

    shown = dinf("show", str(fast))[1]
    assert "  engine     impl fast (compiled, CUDA graphs; capture 41.2 s)\n" in shown
    assert "  engine     impl reference (eager)\n" in dinf("show", str(old))[1]
    as_json = json.loads(dinf("show", str(fast), "--json")[1])
    assert {k: as_json[k] for k in FAST_COLUMNS} == FAST_COLUMNS

    rows = list(csv.DictReader(io.StringIO(dinf("export", "--format", "csv")[1])))
    engines = {(r["run_id"], r["batch_size"]): tuple(r[k] for k in FAST_COLUMNS) for r in rows}
    assert engines == {
        (str(fast), "1"): ("fast", "True", "True", "41.2"), (str(fast), "2"): ("fast", "True", "True", "41.2"),
        (str(old), "1"): ("reference", "False", "False", ""), (str(old), "2"): ("reference", "False", "False", ""),
    }
    exported = json.loads(dinf("export", "--format", "json", "--run", str(fast))[1])
    assert [{k: r[k] for k in FAST_COLUMNS} for r in exported] == [FAST_COLUMNS, FAST_COLUMNS]


def test_a_schema1_database_opens_migrated_in_the_cli(dinf, tmp_path):
    write_schema1_file(tmp_path / "dinf.db")  # the file the `dinf` fixture opens
    runs = {r["name"]: r for r in json.loads(dinf("runs", "--no-refresh", "--json")[1])}
    assert {name: (r["state"], r["engine_impl"]) for name, r in runs.items()} == {
        "pp2-v1": ("COMPLETED", "reference"), "draft": ("DRAFT", "reference"),
        "failed": ("SUBMIT_FAILED", "reference")}
    shown = dinf("show", "pp2-v1", "--no-refresh")[1]
    assert "  engine     impl reference (eager)\n" in shown and "COMPLETED" in shown


# --- report and compare ---------------------------------------------------------------------------


def _make_fast(engine, run_id: int) -> None:
    with write_session(engine) as session:
        repo.update_run(session=session, run=repo.get_run(session=session, run_id=run_id), **FAST_COLUMNS)
        session.commit()


def test_report_setup_table_has_one_engine_line_per_run(study_db):
    engine, ids = study_db
    with read_session(engine) as session:
        sweep = results.load_experiment(session, ids["sweep"])
    pp2 = sweep.cell("pp/r2").run
    _make_fast(engine, pp2.id)
    with read_session(engine) as session:
        text = report.build_report(results.load_experiments(session, list(ids.values())))
    setup = text[text.index("### Cluster, resources and engine"):text.index("## Method")]
    rows = [line for line in setup.splitlines() if line.startswith("| sweep |")]
    assert rows == [
        "| sweep | single/r1 | fixture-cluster | 1 | 1 | 1 | gpu | impl reference (eager) |",
        "| sweep | pp/r2 | fixture-cluster | 1 | 2 | 2 | gpu | impl fast (compiled, CUDA graphs; capture 41.2 s) |",
    ]
    assert "| scaling | tp/r4 | – | 1 | 4 | 4 | gpu | – |" in setup  # never submitted: no run, no engine


def test_compare_lists_the_engine_among_differing_fields(study_db):
    engine, ids = study_db
    with read_session(engine) as session:
        sweep = results.load_experiment(session, ids["sweep"])
    single, pp2 = sweep.cell("single/r1").run, sweep.cell("pp/r2").run
    same = comparison.compare_runs([single, pp2])
    assert not [name for name, _ in same.diff if name.startswith("engine.")]
    _make_fast(engine, pp2.id)
    with read_session(engine) as session:
        runs = results.load_runs(session, [single.id, pp2.id])
    diff = dict(comparison.compare_runs(runs).diff)
    assert {k: v for k, v in diff.items() if k.startswith("engine.")} == {
        "engine.impl": ("reference", "fast"), "engine.compiled": (False, True), "engine.cuda_graphs": (False, True)}
