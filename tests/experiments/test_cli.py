"""`dinf report`, `dinf compare` and `dinf experiment ...` as a user's shell runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.db import make_engine, read_session
from tests.experiments import bundles, fixture_db
from tui.studies import report, results
from tui.studies.presets import Cell

REPO_ROOT = Path(__file__).resolve().parents[2]
DINF = Path(sys.executable).parent / "dinf"


class Dinf:
    def __init__(self, home: Path, db: Path):
        self.db = db
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("DINF_")},
                    "DINF_HOME": str(home), "OMP_NUM_THREADS": "1"}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(DINF), "--db", str(self.db), *args], cwd=REPO_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fixture_cli(tmp_path: Path):
    db = tmp_path / "studies.db"
    engine = make_engine(db)
    ids = fixture_db.build(engine, tmp_path / "bundles")
    engine.dispose()
    return Dinf(tmp_path / "home", db), ids


def test_report_command_writes_the_same_file_as_the_library_and_is_repeatable(fixture_cli, tmp_path):
    dinf, ids = fixture_cli
    out = tmp_path / "paper.md"
    done = dinf("report", "correctness", "scaling", "sweep", "profile", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    text = out.read_bytes()
    engine = make_engine(dinf.db)
    with read_session(engine) as session:
        expected = report.build_report(results.load_experiments(session, ["correctness", "scaling", "sweep",
                                                                           "profile"]))
    engine.dispose()
    assert text.decode() == expected
    assert dinf("report", *map(str, ids.values()), "-o", str(out)).returncode == 0  # by id: same experiments
    assert out.read_bytes() == text


def test_report_of_unknown_experiment_exits_not_found(fixture_cli, tmp_path):
    dinf, _ = fixture_cli
    done = dinf("report", "nope", "-o", str(tmp_path / "x.md"))
    assert done.returncode == 3
    assert "no experiment 'nope'" in done.stderr and "1:correctness" in done.stderr
    assert not (tmp_path / "x.md").exists()


def test_compare_experiment_json_and_text(fixture_cli):
    dinf, _ = fixture_cli
    done = dinf("compare", "--experiment", "scaling", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    speedups = {d["run"]: round(d["speedup"], 3) for d in data["derived"]}
    names = {r["id"]: r["name"] for r in data["runs"]}
    by_name = {names[run]: s for run, s in speedups.items()}
    assert by_name == {"scaling:single/r1": 1.0, "scaling:pp/r2": 1.25, "scaling:pp/r4": 1.111,
                       "scaling:dp/r2": 2.0, "scaling:dp/r4": 4.0}
    fields = {d["field"] for d in data["diff"]}
    assert {"spec.mode", "resources.tasks_per_node"} <= fields
    assert "spec.max_new_tokens" not in fields   # equal everywhere: not shown

    text = dinf("compare", "--experiment", "scaling", "--width", "70").stdout
    assert "fields that differ:" in text
    assert "T s = median wall time of the whole workload, in seconds" in text  # every column explained
    assert "Output tokens/s vs GPUs at batch 20" in text and "ideal (N x 1-GPU rate)" in text


def test_compare_shows_divergent_tokens(fixture_cli):
    dinf, _ = fixture_cli
    text = dinf("compare", "correctness:baseline", "correctness:pp/r2", "--no-charts").stdout
    assert "19/20 exact (95%)" in text
    assert "prompt 3: first divergence at token 6: baseline 109 vs 7777 (outside top-k)" in text


def test_experiment_show_grid(fixture_cli):
    dinf, _ = fixture_cli
    data = json.loads(dinf("experiment", "show", "scaling", "--json").stdout)
    states = {c["cell"]: (c["state"], c["attempts"]) for c in data["cells"]}
    assert states["tp/r2"] == ("FAILED", 1)
    assert states["tp/r4"] == ("NOT_SUBMITTED", 0)
    assert states["dp/r4"] == ("COMPLETED", 1)


def test_bad_study_settings_exit_2_with_the_setting_named(fixture_cli):
    dinf, _ = fixture_cli
    done = dinf("experiment", "plan", "quantization", "--quant-schemes", "none,int3")
    assert done.returncode == 2 and "quant_schemes:" in done.stderr and "int3" in done.stderr
    done = dinf("experiment", "plan", "correctness", "--modes", "pp,xp")
    assert done.returncode == 2 and "modes:" in done.stderr and "xp" in done.stderr
    done = dinf("experiment", "plan", "strong_scaling", "--rank-counts", "1,two")
    assert done.returncode == 2 and "--rank-counts: expected integers" in done.stderr


def test_plan_writes_specs_for_hand_launching(fixture_cli, tmp_path):
    dinf, _ = fixture_cli
    done = dinf("experiment", "plan", "correctness", "--name", "gpu", "--modes", "tp,dp",
                "--write-specs", str(tmp_path / "specs"))
    assert done.returncode == 0, done.stderr
    assert "noise_floor/b10" in done.stdout
    spec = json.loads((tmp_path / "specs" / "tp_r2" / "spec.json").read_text())
    assert spec["run_name"] == "gpu:tp/r2" and spec["mode"] == "tp"


def test_record_only_then_attach_hand_made_bundles(fixture_cli, tmp_path):
    """The GPU-machine path: plan recorded, worker run by hand, bundles attached to their cells."""
    dinf, _ = fixture_cli
    made = dinf("experiment", "create", "strong_scaling", "--record-only", "--name", "byhand", "--modes", "dp",
                "--rank-counts", "1,2", "--json")
    assert made.returncode == 0, made.stderr
    plan = json.loads(dinf("experiment", "plan", "strong_scaling", "--name", "byhand", "--modes", "dp",
                           "--rank-counts", "1,2", "--json").stdout)
    dirs = []
    for stored in plan["cells"]:
        cell = Cell.from_dict(stored)
        m = bundles.measurement(batch_size=20, num_requests=20, max_new_tokens=cell.spec.max_new_tokens,
                                wall_s=[4.0 / cell.num_ranks], ttft_s=0.1, tpot_s=0.01, num_gpus=cell.num_ranks,
                                per_rank=[bundles.rank_record(r, peak=bundles.GIB) for r in range(cell.num_ranks)])
        result = bundles.result(cell.spec.to_dict(), world_size=cell.num_ranks, num_gpus=cell.num_ranks,
                                measurements=[m])
        dirs.append(str(bundles.write_bundle(tmp_path / "out" / cell.key.replace("/", "_"), result)))
    stray = bundles.write_bundle(tmp_path / "stray", bundles.result(
        {**plan["cells"][0]["spec"], "run_name": "other:single/r1"}, world_size=1, num_gpus=1, measurements=[]))
    refused = dinf("experiment", "attach", "byhand", *dirs, str(stray))
    assert refused.returncode == 2 and "names no cell of experiment 'byhand'" in refused.stderr
    assert json.loads(dinf("experiment", "show", "byhand", "--json").stdout)["cells"][0]["state"] == "NOT_SUBMITTED"

    attached = dinf("experiment", "attach", "byhand", *dirs)
    assert attached.returncode == 0, attached.stderr
    grid = json.loads(dinf("experiment", "show", "byhand", "--json").stdout)
    assert [(c["cell"], c["state"]) for c in grid["cells"]] == [("single/r1", "IMPORTED"), ("dp/r2", "IMPORTED")]
    again = dinf("experiment", "attach", "byhand", *dirs)  # idempotent: same runs, nothing new
    assert again.returncode == 0
    assert json.loads(dinf("experiment", "show", "byhand", "--json").stdout)["cells"][1]["attempts"] == 1
    out = tmp_path / "byhand.md"
    assert dinf("report", "byhand", "-o", str(out)).returncode == 0
    assert "dp on 2 GPUs: scales, S = 2.00, E = 1.00" in out.read_text()


def test_compare_baseline_defaults_to_the_single_rank_reference(fixture_cli):
    """Not whichever run is named first: the 1-GPU run that speed-up is defined against."""
    dinf, _ = fixture_cli
    data = json.loads(dinf("compare", "scaling:pp/r2", "scaling:dp/r2", "scaling:single/r1", "--json").stdout)
    names = {r["id"]: r["name"] for r in data["runs"]}
    assert names[data["baseline"]] == "scaling:single/r1"
    speedups = {names[d["run"]]: round(d["speedup"], 3) for d in data["derived"]}
    assert speedups == {"scaling:single/r1": 1.0, "scaling:pp/r2": 1.25, "scaling:dp/r2": 2.0}
    chosen = json.loads(dinf("compare", "scaling:pp/r2", "scaling:single/r1", "--baseline", "scaling:pp/r2",
                             "--json").stdout)
    assert {r["id"]: r["name"] for r in chosen["runs"]}[chosen["baseline"]] == "scaling:pp/r2"  # asked for
