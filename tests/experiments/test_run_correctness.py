"""A run of an experiment shows its correctness against the experiment's single-rank baseline: the
run screen in the real app (Pilot) and `dinf show`, over the fixture database of finished studies
(correctness: pp diverges outside the top-k and fails, dp stays within it and its floor and passes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from storage.db import make_engine, read_session
from tests.experiments import fixture_db
from tests.experiments.test_cli import Dinf
from tests.experiments.test_compare_screen import wait_for
from tui.studies import report, results
from tui.ui.screens.run import RunScreen

SIZE = (150, 42)
NEEDS_A_REFERENCE = "it needs a single-GPU reference run"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DINF_DB", raising=False)
    monkeypatch.delenv("DINF_CONFIG", raising=False)


@pytest.fixture
def study_db_file(tmp_path: Path) -> Path:
    db = tmp_path / "data" / "dinf.db"
    engine = make_engine(db)
    fixture_db.build(engine, tmp_path / "bundles")
    engine.dispose()
    return db


def make_app(db: Path, tmp_path: Path):
    from tui.core.service import Dinf as Service
    from tui.ui.app import DinfApp

    # Every run in the fixture database is finished, so no cluster is ever asked for.
    return DinfApp(service_factory=lambda: Service(db_path=db, config_path=tmp_path / "config.toml"),
                   live_poll_s=0.1, idle_poll_s=0.5)


async def correctness_shown(app, pilot, name: str) -> str:
    """Open the run named `name` and return its results tab's correctness text."""
    await wait_for(pilot, lambda: app.service is not None and app.runs, what="the runs")
    run_id = next(run.id for run in app.runs.values() if run.name == name)
    app.open_run(run_id)
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_id == run_id
                   and app.screen.results_shown, what=f"the results of {name}")
    text = str(app.screen.query_one("#correctness", Static).render())
    app.pop_screen()
    await pilot.pause()
    return text


def report_verdicts(db: Path) -> list[str]:
    engine = make_engine(db)
    with read_session(engine) as session:
        section = report.correctness_section(results.load_experiment(session, "correctness"))
    engine.dispose()
    return section.verdicts


async def test_the_run_screen_judges_a_run_against_its_experiments_baseline(study_db_file, tmp_path):
    app = make_app(study_db_file, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        pp = await correctness_shown(app, pilot, "correctness:pp/r2")
        dp = await correctness_shown(app, pilot, "correctness:dp/r2")
        floor = await correctness_shown(app, pilot, "correctness:noise_floor/b10")
        baseline = await correctness_shown(app, pilot, "correctness:baseline")
        scaling = await correctness_shown(app, pilot, "scaling:pp/r2")
    for text in (pp, dp, floor, baseline, scaling):
        assert NEEDS_A_REFERENCE not in text, text
    assert "against the single-rank baseline correctness:baseline (#1) of experiment correctness" in pp
    assert "batch 20: FAIL 19/20 exact (95%); prompt 3 diverges outside the top-k" in pp
    assert ("batch 20: PASS 18/20 exact (90%), not below the noise floor 18/20 (90%); every divergence "
            "within top-k") in dp
    # the same judge as the report: its verdict sentence for each mode is the one on screen
    verdicts = report_verdicts(study_db_file)
    assert "pp on 2 ranks: fails: 19/20 exact (95%); prompt 3 diverges outside the top-k." in verdicts
    assert any(v.endswith("every divergence within top-k.") and v.startswith("dp on 2 ranks: passes") for v in verdicts)
    assert "batch 10 (the baseline's 20 split): 18/20 exact (90%)" in floor and "noise floor" in floor
    assert "this run is its experiment's single-rank baseline" in baseline
    # a scaling baseline without completions: said so, not "needs a reference"
    assert "single-rank baseline recorded no completions" in scaling


async def test_a_run_outside_any_experiment_still_says_it_needs_a_reference(study_db_file, tmp_path):
    from storage import repo
    from storage.db import write_session

    engine = make_engine(study_db_file)
    with write_session(engine) as session:
        run = repo.find_run(session=session, ref="correctness:dp/r2")
        repo.update_run(session=session, run=run, experiment_id=None)
        session.commit()
    engine.dispose()
    app = make_app(study_db_file, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert NEEDS_A_REFERENCE in await correctness_shown(app, pilot, "correctness:dp/r2")


def test_dinf_show_prints_the_same_verdict(study_db_file, tmp_path):
    dinf = Dinf(tmp_path / "home", study_db_file)
    shown = dinf("show", "correctness:pp/r2")
    assert shown.returncode == 0, shown.stderr
    assert ("correctness (batch 20, experiment correctness) vs correctness:baseline (#1): FAIL: 19/20 exact "
            "(95%); prompt 3 diverges outside the top-k") in shown.stdout
    assert "single-rank baseline recorded no completions" in dinf("show", "scaling:pp/r2").stdout


def test_names_in_the_verdict_are_shown_as_written():
    """The experiment and baseline names come from the user: never markup, no control characters."""
    from tui.ui.widgets.results import correctness_text

    hostile = "[/x][b]base\x1b[2J"
    text = correctness_text([{"source": "experiment", "experiment": hostile, "reference": hostile,
                              "batch_size": 4, "verdict": "pass", "reason": "4/4 exact [red]"}])
    assert "[/x][b]base\ufffd[2J" in text.plain and "4/4 exact [red]" in text.plain
    note = correctness_text([{"source": "experiment", "experiment": hostile, "reference": None, "note": "why"}])
    assert note.plain == "correctness: why (experiment [/x][b]base\ufffd[2J)"
