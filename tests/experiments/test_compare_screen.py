"""The compare screen in the real app (Pilot), over the real service and the fixture database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static, TabbedContent

from storage.db import make_engine
from tests.experiments import fixture_db
from tui.ui.screens.compare import CompareScreen

SIZE = (150, 42)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DINF_DB", raising=False)
    monkeypatch.delenv("DINF_CONFIG", raising=False)


@pytest.fixture
def app_factory(tmp_path: Path):
    db = tmp_path / "data" / "dinf.db"
    engine = make_engine(db)
    fixture_db.build(engine, tmp_path / "bundles")
    engine.dispose()

    def open_service():
        from tui.core.service import Dinf

        # Every run in the fixture database is finished, so no cluster is ever asked for.
        return Dinf(db_path=db, config_path=tmp_path / "config.toml")

    def make():
        from tui.ui.app import DinfApp

        return DinfApp(service_factory=open_service, live_poll_s=0.1, idle_poll_s=0.5)

    return make


async def wait_for(pilot, condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)
    await pilot.pause()


async def open_compare(app, pilot) -> CompareScreen:
    await wait_for(pilot, lambda: app.service is not None, what="the service")
    await pilot.press("v")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="the compare screen")
    screen = app.screen
    await wait_for(pilot, lambda: screen.query_one("#compare-runs", DataTable).row_count == 14, what="run list")
    return screen


async def open_experiment(pilot, screen: CompareScreen, row: int) -> None:
    experiments = screen.query_one("#compare-experiments", DataTable)
    experiments.focus()
    experiments.move_cursor(row=row)
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.grid is not None and screen.grid.id == row + 1, what="the grid")
    await wait_for(pilot, lambda: screen.comparison is not None
                   and len(screen.comparison.runs) == len(screen.marked), what="the comparison")


def column(table: DataTable, index: int) -> list[str]:
    return [str(table.get_row_at(r)[index]) for r in range(table.row_count)]


async def test_experiment_grid_marks_its_runs_and_derives_against_the_baseline(app_factory):
    app = app_factory()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(app, pilot)
        assert screen.query_one("#compare-experiments", DataTable).row_count == 4
        await open_experiment(pilot, screen, 1)  # "scaling"

        grid = screen.query_one("#compare-grid", DataTable)
        assert column(grid, 0) == ["single/r1", "pp/r2", "pp/r4", "tp/r2", "tp/r4", "dp/r2", "dp/r4"]
        assert column(grid, 4) == ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "NOT_SUBMITTED",
                                   "COMPLETED", "COMPLETED"]
        assert screen.query_one("#compare-tabbed", TabbedContent).active == "tab-grid"

        derived = screen.query_one("#compare-derived", DataTable)
        assert column(derived, 3) == ["1.00", "1.25", "1.11", "2.00", "4.00"]   # S vs single/r1
        assert column(derived, 4) == ["1.00", "0.62", "0.28", "1.00", "1.00"]   # E = S/N
        screen.query_one("#compare-tabbed", TabbedContent).active = "tab-derived"
        await pilot.pause()
        legend = screen.query_one("#compare-derived-legend", Static)
        assert legend.region.height >= 1 and "T s = median wall time of the whole workload" in str(legend.render())
        diff_fields = column(screen.query_one("#compare-diff", DataTable), 0)
        assert "spec.mode" in diff_fields and "spec.max_new_tokens" not in diff_fields

        titles = [str(s.render()) for s in screen.query("#compare-charts Static")]
        assert any("Output tokens/s vs GPUs at batch 20" in t and "ideal (N x 1-GPU rate)" in t for t in titles)
        assert any("Efficiency vs GPUs" in t for t in titles)


async def test_marking_runs_and_moving_the_baseline(app_factory):
    app = app_factory()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(app, pilot)
        runs = screen.query_one("#compare-runs", DataTable)
        runs.focus()
        ids = [int(runs.get_row_at(r)[1]) for r in range(runs.row_count)]
        # the run highlighted on the runs screen (the newest) came along as the baseline
        assert screen.marked == [max(ids)] and screen.baseline_id == max(ids)
        runs.move_cursor(row=ids.index(max(ids)))
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.comparison is None, what="an empty selection")
        assert screen.marked == [] and screen.baseline_id is None
        sweep = [i for i in ids if screen.run_records[i].name.startswith("sweep:")]
        runs.move_cursor(row=ids.index(sweep[0]))
        await pilot.press("space")
        runs.move_cursor(row=ids.index(sweep[1]))
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.comparison is not None and len(screen.comparison.runs) == 2)
        assert screen.baseline_id == sweep[0]
        assert str(runs.get_row_at(ids.index(sweep[0]))[0]) == "★"
        assert str(runs.get_row_at(ids.index(sweep[1]))[0]) == "✓"
        derived = screen.query_one("#compare-derived", DataTable)
        assert column(derived, 3) == ["1.00", "1.00", "1.00", "0.80", "1.00", "2.00"]

        await pilot.press("b")  # the pp run becomes the baseline
        await wait_for(pilot, lambda: screen.comparison.baseline.id == sweep[1], what="the new baseline")
        assert column(derived, 3) == ["1.25", "1.00", "0.50", "1.00", "1.00", "1.00"]
        titles = [str(s.render()) for s in screen.query("#compare-charts Static")]
        assert any("Output tokens/s vs batch size" in t for t in titles)
        assert any("TPOT (median) vs batch size" in t for t in titles)

        await pilot.press("space")  # unmark the baseline: the other run takes its place
        await wait_for(pilot, lambda: screen.comparison is not None and len(screen.comparison.runs) == 1)
        assert screen.baseline_id == sweep[0]

        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen), what="back to runs")


async def test_resubmit_without_an_experiment_warns(app_factory):
    app = app_factory()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(app, pilot)
        await pilot.press("R")
        await pilot.pause()
        assert screen.grid is None
        assert any("Open an experiment first" in str(n.message) for n in app._notifications)


def test_compare_screen_snapshot(app_factory, snap_compare):
    async def show_scaling(pilot):
        app = pilot.app
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 1)
        screen.query_one("#compare-tabbed", TabbedContent).active = "tab-derived"
        await pilot.pause()

    assert snap_compare(app_factory(), terminal_size=SIZE, run_before=show_scaling)


def test_compare_screen_charts_snapshot(app_factory, snap_compare):
    async def show_charts(pilot):
        app = pilot.app
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 3)  # profile: time split per rank
        screen.query_one("#compare-tabbed", TabbedContent).active = "tab-charts"
        await pilot.pause()

    assert snap_compare(app_factory(), terminal_size=SIZE, run_before=show_charts)


async def test_warnings_are_shown_in_words_and_the_grid_says_cells_run_one_at_a_time(app_factory):
    app = app_factory()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 1)  # scaling: 10 s timings, E <= 1: nothing to warn about
        warnings = screen.query_one("#compare-warnings", Static)
        assert not warnings.display
        await open_experiment(pilot, screen, 2)  # sweep: its batch-16 timings last 1.28 s and 0.64 s
        await wait_for(pilot, lambda: warnings.display, what="the warnings")
        text = str(warnings.render())
        assert "the timed part lasted 1.280 s, under the 2 s a timing needs" in text
        assert "the timed part lasted 0.640 s" in text
        assert "run one at a time" in str(screen.query_one("#compare-grid-note", Static).render())


def chart_lines(screen: CompareScreen) -> list[str]:
    return [line for s in screen.query("#compare-charts Static") for line in str(s.render()).splitlines()]


async def test_charts_are_drawn_at_the_width_their_pane_has_and_redrawn_on_resize(app_factory):
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 1)  # scaling: tok/s and efficiency vs GPUs
        screen.query_one("#compare-tabbed", TabbedContent).active = "tab-charts"
        await pilot.pause()
        pickers, tabs = screen.query_one("#compare-pickers"), screen.query_one("#compare-tabs")
        assert pickers.size.width < 30 and tabs.size.width > 50  # the panes share 80 columns
        holder = screen.query_one("#compare-charts")
        room = holder.scrollable_content_region.width
        assert screen.chart_width == room
        # the plot's frame spans the pane: not wrapped into it, nor a narrow strip in a wide pane
        frame = max(len(line.rstrip()) for line in chart_lines(screen) if "┐" in line)
        assert room - 4 <= frame <= room

        await pilot.resize_terminal(160, 45)
        await wait_for(pilot, lambda: screen.chart_width > 100, what="the charts redrawn wider")
        await wait_for(pilot, lambda: max(len(line.rstrip()) for line in chart_lines(screen) if "┐" in line)
                       > 100, what="the wide charts shown")
        assert screen.chart_width == holder.scrollable_content_region.width
        titles = [line.strip() for line in chart_lines(screen) if "vs GPUs" in line]
        assert titles == ["Output tokens/s vs GPUs at batch 20", "Efficiency vs GPUs at batch 20 (baseline #6)"]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_compare_charts_snapshot_at_size(app_factory, snap_compare, size):
    async def show_charts(pilot):
        app = pilot.app
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 1)  # scaling: tok/s vs GPUs with its ideal line
        screen.query_one("#compare-tabbed", TabbedContent).active = "tab-charts"
        await pilot.pause()

    assert snap_compare(app_factory(), terminal_size=size, run_before=show_charts)


async def test_marks_are_kept_between_openings_and_new_results_join_while_open(app_factory):
    app = app_factory()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_compare(app, pilot)
        await open_experiment(pilot, screen, 0)
        marked, baseline = list(screen.marked), screen.baseline_id
        assert len(marked) > 1
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen), what="back to the runs")
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare again")
        again = app.screen
        assert again is not screen and again.marked[: len(marked)] == marked and again.baseline_id == baseline

        # A run that finishes while the screen is open joins its list (an import is such a run).
        runs = again.query_one("#compare-runs", DataTable)
        await wait_for(pilot, lambda: runs.row_count == 14, what="the run list")
        app.service.ingest_dir(Path(__file__).parents[1] / "storage" / "fixtures" / "pp2_bundle")
        app.action_refresh_runs()
        await wait_for(pilot, lambda: runs.row_count == 15, timeout=20, what="the new run in the list")
        assert again.marked[: len(marked)] == marked  # marks survive the reload
