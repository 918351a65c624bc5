"""SVG snapshots of every screen at a fixed terminal size, from a seeded database.

Deterministic: fixed timestamps, UTC, only finished or draft runs (no 'now'-dependent elapsed
times), the scripted backend, no cursor blink. Update after an intended change with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the SVGs before committing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pilot_wait import wait_for
from scripted_cluster import BUNDLE, HostKeyUnknown
from textual.widgets import Input

from storage import repo
from storage.db import write_session
from tui.ui.app import DinfApp
from tui.ui.messages import SshTroubleMet
from tui.ui.screens.run import RunScreen
from worker import contract
from worker.contract import RunSpec

SIZE = (130, 40)
BASE = 1_795_700_000.0  # 2026-11-26 (UTC), fixed so times on screen never change


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def seed(service, scripted) -> dict[str, int]:
    """Four runs in different states; the completed one has the pp2 fixture's results and logs."""
    ids = {}
    with write_session(service.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")

        def add(name, mode, ranks, states, job_id=None):
            run = repo.create_run(
                session=session, uid=f"{name}-uid", name=name, mode=mode,
                spec=RunSpec(run_name=name, mode=mode).to_dict(), num_ranks=ranks,
                cluster_id=cluster.id, at=BASE + len(ids) * 600,
            )
            if job_id is not None:
                run_dir = f"/scratch/dinf/{run.uid}"
                repo.add_job_id(session=session, run=run, job_id=job_id)
                repo.update_run(session=session, run=run, run_dir=run_dir, output_dir=f"{run_dir}/out",
                                logs_dir=f"{run_dir}/logs", submitted_at=run.created_at + 1)
            for state, after_s in states:
                repo.record_state(session=session, run=run, state=state, at=run.created_at + after_s,
                                  reason="Resources" if state == "PENDING" else None)
            ids[name] = run.id
            return run

        add("pp-2-ranks", "pp", 2, [("PENDING", 1), ("RUNNING", 9), ("COMPLETED", 95)], job_id="1001")
        add("tp-4-ranks", "tp", 4, [("PENDING", 1), ("RUNNING", 30), ("FAILED", 41)], job_id="1002")
        add("dp-sweep", "dp", 2, [("PENDING", 1), ("CANCELLED", 300)], job_id="1003")
        add("single-baseline", "single", 1, [])
        session.commit()
    service.ingest_dir(BUNDLE, run_id=ids["pp-2-ranks"])
    out, logs = "/scratch/dinf/pp-2-ranks-uid/out", "/scratch/dinf/pp-2-ranks-uid/logs"
    for rank in (0, 1):
        lines = [
            f"07:33:{21 + rank:02d} rank {rank} phase start mode=pp world_size=2",
            f"07:33:{30 + rank:02d} rank {rank} info: stage {rank} holds layers {2 * rank}..{2 * rank + 2}",
            f"07:34:{40 + rank:02d} rank {rank} phase done",
        ]
        scripted.files[f"{logs}/{contract.launcher_log_file('1001', rank)}"] = bytearray(
            "".join(line + "\n" for line in lines).encode())
        scripted.files[f"{out}/{contract.events_file(rank)}"] = bytearray(
            (f'{{"v": 1, "ts": {BASE + 95}, "rank": {rank}, "kind": "phase", "phase": "done"}}\n').encode())
    return ids


@pytest.fixture
def seeded_app(service_factory, scripted):
    def factory():
        service = service_factory()
        seed(service, scripted)
        return service

    return DinfApp(service_factory=factory, live_poll_s=0.1, idle_poll_s=0.2)


async def loaded(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.service is not None and len(app.runs) == 4, what="seeded runs")


def test_runs_screen(snap_compare, seeded_app):
    assert snap_compare(seeded_app, terminal_size=SIZE, run_before=loaded)


def test_first_launch_welcome(snap_compare, make_app):
    app = make_app()

    async def opened(pilot):
        await wait_for(pilot, lambda: app.service is not None and app.runs_version > 0, what="service")

    assert snap_compare(app, terminal_size=SIZE, run_before=opened)


async def form_with_errors(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.service is not None)
    await pilot.press("n")
    await pilot.pause()
    app.screen.query_one("#batch_sizes", Input).value = "1,0"
    app.screen.query_one("#time_limit", Input).value = "soon"
    await pilot.pause(0.2)


async def previewed(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.service is not None)
    await pilot.press("n")
    await pilot.pause()
    app.screen.query_one("#name", Input).value = "pp-preview"
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: app.screen.preview_script is not None, what="the script")
    app.screen.query_one("#run-form").focus()


async def run_opened(pilot) -> None:
    app = pilot.app
    await loaded(pilot)
    app.open_run(1)
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.results_shown)


def test_new_run_form_with_errors(snap_compare, make_app):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=form_with_errors)


def test_new_run_preview(snap_compare, make_app):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=previewed)


def test_finished_run_with_results(snap_compare, seeded_app):
    assert snap_compare(seeded_app, terminal_size=SIZE, run_before=run_opened)


def test_finished_run_merged_log(snap_compare, seeded_app):
    async def open_logs(pilot):
        app = pilot.app
        await run_opened(pilot)
        await wait_for(pilot, lambda: app.run_logs[1].merged.received == 6, what="both ranks' lines")
        await pilot.press("m")
        await pilot.pause(0.2)

    assert snap_compare(seeded_app, terminal_size=SIZE, run_before=open_logs)


def test_cancel_confirmation(snap_compare, seeded_app):
    async def ask(pilot):
        await loaded(pilot)
        pilot.app.confirm_cancel(4)  # the draft: not finished, so it can be cancelled

    assert snap_compare(seeded_app, terminal_size=SIZE, run_before=ask)


def test_unknown_host_key_dialog(snap_compare, seeded_app):
    async def fail(pilot):
        await loaded(pilot)
        error = HostKeyUnknown("gpu-login", "SHA256:q5mKxZ1w0d4cX0b2p7tY3nq1xw1Rk6vJcZp9y8Jt5Ew", lambda: None)
        pilot.app.post_message(SshTroubleMet("gpu", error))
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "HostKeyDialog", what="dialog")

    assert snap_compare(seeded_app, terminal_size=SIZE, run_before=fail)


# --- the same screens at the smallest terminal we support and at a large one ---------------------

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])


@SIZES
def test_new_run_preview_at_size(snap_compare, make_app, size):
    """Narrow: the preview below the form, full width (it was a 15-column strip); wide: beside it."""
    assert snap_compare(make_app(), terminal_size=size, run_before=previewed)


@SIZES
def test_runs_screen_at_size(snap_compare, seeded_app, size):
    assert snap_compare(seeded_app, terminal_size=size, run_before=loaded)


@SIZES
def test_finished_run_with_results_at_size(snap_compare, seeded_app, size):
    """The results tab: batch, output tok/s and TPOT first, so they show at 80 columns."""

    async def open_results(pilot):
        await run_opened(pilot)
        await pilot.press("R")
        await pilot.pause(0.2)

    assert snap_compare(seeded_app, terminal_size=size, run_before=open_results)


@SIZES
def test_new_run_form_with_errors_at_size(snap_compare, make_app, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=form_with_errors)
