"""The real app driving real runs on the local backend: 2 worker processes (gloo), tiny model.

Submit -> both ranks' logs stream and follow -> COMPLETED -> measurements shown; cancel with a
confirmation -> CANCELLED; quit mid-run and start again -> reattached, results ingested, and the
log view holds every line the ranks wrote (compared with the files on disk).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pilot_wait import wait_for
from textual.widgets import DataTable

from tui.ui.app import DinfApp
from tui.ui.screens.dialogs import ConfirmDialog
from tui.ui.screens.run import RunScreen
from tui.ui.widgets.rank_log import RankLog

pytestmark = [pytest.mark.dist, pytest.mark.slow]

SIZE = (140, 44)
RUN_TIMEOUT_S = 240  # 2 ranks importing torch on a shared 2-core machine


@pytest.fixture(autouse=True)
def _one_thread_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def real_app(**kwargs) -> DinfApp:
    # The default factory: Dinf() under $DINF_HOME (a temp dir, see conftest), built-in local cluster.
    return DinfApp(live_poll_s=0.5, idle_poll_s=1.0, **kwargs)


def launcher_lines(app: DinfApp, run_id: int) -> dict[int, list[str]]:
    lines = {}
    for source in app.service.log_sources(run_id):
        if source.kind == "launcher" and Path(source.path).exists():
            lines[source.rank] = Path(source.path).read_text().splitlines()
    return lines


async def test_demo_streams_both_ranks_and_shows_measurements():
    app = real_app(start_demo=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), timeout=60, what="the demo's run screen")
        screen = app.screen
        run_id = screen.run_id
        logs = app.run_logs[run_id]
        await wait_for(pilot, lambda: {0, 1} <= set(logs.ranks) and all(b.received for b in logs.ranks.values()),
                       timeout=RUN_TIMEOUT_S, what="lines from both ranks")
        view = screen.query_one("#log-merged", RankLog)
        assert view.follow
        await wait_for(pilot, lambda: any(s.tokens_done for s in logs.rank_states.values()),
                       timeout=RUN_TIMEOUT_S, what="progress events")
        await wait_for(pilot, lambda: screen.results_shown, timeout=RUN_TIMEOUT_S, what="results")
        assert app.runs[run_id].state == "COMPLETED"
        assert screen.query_one("#measurements", DataTable).row_count == 2  # batch sizes 1 and 2
        await pilot.press("m")  # back to the merged log: still following, so at its tail
        await wait_for(pilot, lambda: view.scroll_y == view.max_scroll_y > 0, what="the view at the tail")
        await wait_for(pilot, lambda: app.run_logs[run_id].ranks[1].received == len(launcher_lines(app, run_id)[1]),
                       what="every line of rank 1")


async def test_cancel_asks_then_stops_the_ranks():
    app = real_app(start_demo=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), timeout=60, what="the run screen")
        run_id = app.screen.run_id
        await wait_for(pilot, lambda: app.runs.get(run_id) and app.runs[run_id].state == "RUNNING",
                       timeout=RUN_TIMEOUT_S, what="RUNNING")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.runs[run_id].state == "CANCELLED", timeout=60, what="CANCELLED")
        assert app.service.run(run_id).state == "CANCELLED"


async def test_quit_mid_run_then_restart_reattaches_and_loses_nothing():
    first = real_app(start_demo=True)
    async with first.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(first.screen, RunScreen), timeout=60, what="the run screen")
        run_id = first.screen.run_id
        logs = first.run_logs[run_id]
        await wait_for(pilot, lambda: logs.merged.received > 0, timeout=RUN_TIMEOUT_S, what="first lines")
        assert first.runs[run_id].state in ("PENDING", "RUNNING")
    # dinf-tui is closed; the job goes on by itself.

    second = real_app()
    async with second.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: second.runs.get(run_id) is not None, timeout=60, what="the run listed")
        assert second.runs[run_id].state not in ("CANCELLED", "FAILED")
        second.open_run(run_id)
        await wait_for(pilot, lambda: second.runs[run_id].state == "COMPLETED",
                       timeout=RUN_TIMEOUT_S, what="COMPLETED after reattaching")
        await wait_for(pilot, lambda: second.screen.results_shown, timeout=60, what="ingested results shown")
        assert len(second.service.measurements(run_id)) == 2
        on_disk = launcher_lines(second, run_id)
        logs = second.run_logs[run_id]
        await wait_for(pilot, lambda: all(logs.ranks[r].received == len(on_disk[r]) for r in on_disk),
                       timeout=30, what="every line on disk in the views")
        for rank, lines in on_disk.items():
            assert list(logs.ranks[rank].lines) == lines
