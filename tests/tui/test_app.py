"""The real app (Pilot) over the real service and database, with a backend the test drives by hand.

Fast and deterministic: each test controls job states, log lines and connection failures exactly.
The same flows against real processes are in test_app_local.py (local backend) and
test_app_slurm.py (Slurm over SSH).
"""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from pilot_wait import wait_for
from rich.console import Console
from scripted_cluster import HostKeyUnknown
from textual.widgets import Button, DataTable, Input, Select, Static, TabbedContent

from remote.cluster import ClusterError, JobState
from remote.errors import AuthenticationFailed
from tui.ui.screens.dialogs import ConfirmDialog, HostKeyDialog, ProblemDialog
from tui.ui.screens.new_run import NewRunScreen
from tui.ui.screens.run import RunScreen
from tui.ui.screens.runs import RunsScreen
from tui.ui.widgets.rank_log import RankLog
from tui.ui.widgets.rank_progress import RankProgressRow
from worker.contract import make_event

SIZE = (140, 44)


def event_line(kind: str, rank: int, ts: float | None = None, **payload) -> str:
    event = make_event(kind, rank, **payload)
    if ts is not None:
        event["ts"] = ts
    return json.dumps(event)


async def submit_demo(app, pilot, scripted) -> int:
    await wait_for(pilot, lambda: app.service is not None, what="the service to open")
    await pilot.press("d")
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
    return app.screen.run_id


async def test_first_launch_offers_demo_and_shows_connection(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None and app.connections, what="service")
        welcome = app.screen.query_one("#welcome")
        assert welcome.display
        assert "demo run" in str(welcome.render())
        bar = str(app.screen.query_one("#connection-bar").render())
        assert "local" in bar


async def test_new_run_form_validates_each_field_inline(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        screen = app.screen
        screen.query_one("#batch_sizes", Input).value = "1,x"
        screen.query_one("#time_limit", Input).value = "half an hour"
        await pilot.pause()
        assert "bad: 'x'" in str(screen.query_one("#error-batch_sizes").render())
        assert "Slurm time" in str(screen.query_one("#error-time_limit").render())
        assert screen.query_one("#submit", Button).disabled
        # A spec rule from the worker's own contract lands under its field too.
        screen.query_one("#batch_sizes", Input).value = "1,2"
        screen.query_one("#time_limit", Input).value = "0:30:00"
        screen.query_one("#mode", Select).value = "single"
        await pilot.pause()
        screen.query_one("#ranks_per_node", Input).value = "2"  # single sets 1 rank; the user insists on 2
        await pilot.pause()
        assert "exactly one rank" in str(screen.query_one("#error-mode").render())
        screen.query_one("#ranks_per_node", Input).value = "1"
        await pilot.pause()
        assert not screen.checked.problems
        assert not screen.query_one("#submit", Button).disabled


async def test_preview_then_submit_streams_logs_and_shows_results(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        app.screen.query_one("#name", Input).value = "pp-two"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "srun" in (app.screen.preview_script or ""), what="preview")
        assert app.service.runs() == []  # a preview records nothing
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        screen = app.screen
        run_id = screen.run_id
        job = scripted.job_of(app.service.run(run_id).uid)

        scripted.set_state(job, JobState.RUNNING)
        for rank in (0, 1):
            scripted.write(job, rank, "launcher", [f"2026-11-26 20:00:0{rank},000 rank {rank} loading stage {rank}"])
            scripted.write(job, rank, "events", [
                event_line("phase", rank, phase="measure", batch_size=2),
                event_line("progress", rank, batch_size=2, tokens_done=8, tokens_expected=32),
            ])
        logs = app.run_logs[run_id]
        await wait_for(pilot, lambda: logs.merged.received >= 2, what="both ranks' lines")
        merged = list(logs.merged.lines)
        assert merged[0].startswith("[r0] 2026-11-26 20:00:00") and "rank 1 loading" in merged[1]
        await wait_for(pilot, lambda: "running" in str(app.screen.query_one("#run-summary").render()).lower())
        bar = screen.query_one("#rank-bar-1")
        assert (bar.progress, bar.total) == (8, 32)

        # The rank tab mounts its view on first open and already holds the buffered lines.
        await pilot.press("ctrl+l")  # focus leaves the table; tabs are switched by the app
        screen.query_one(TabbedContent).active = "rank-1"
        await wait_for(pilot, lambda: screen.query("#log-rank-1"), what="the rank 1 view")
        assert screen.query_one("#log-rank-1", RankLog).buffer.lines[0].endswith("loading stage 1")

        scripted.write(job, 0, "launcher", ["2026-11-26 20:00:05,000 done"])
        scripted.set_state(job, JobState.COMPLETED)
        await wait_for(pilot, lambda: screen.results_shown, timeout=15, what="results")
        table = screen.query_one("#measurements", DataTable)
        assert table.row_count >= 1
        assert screen.query_one(TabbedContent).active == "results"
        assert "COMPLETED" in str(screen.query_one("#run-summary").render())
        assert any(line.endswith("done") for line in logs.merged.lines)


async def test_cancel_asks_first_then_cancels(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        await wait_for(pilot, lambda: app.runs.get(run_id) and app.runs[run_id].state == "RUNNING")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")  # "keep running" is the default answer
        await pilot.pause(0.3)
        assert scripted.cancelled == []
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.runs[run_id].state == "CANCELLED", what="CANCELLED")
        assert scripted.cancelled == [job]
        assert app.service.run(run_id).state == "CANCELLED"


async def test_stale_heartbeat_warns(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        now = time.time()
        scripted.write(job, 0, "events", [event_line("heartbeat", 0, ts=now)])
        scripted.write(job, 1, "events", [event_line("heartbeat", 1, ts=now - 60)])
        await wait_for(pilot, lambda: app.runs[run_id].state == "RUNNING")
        rows = {row.rank: row for row in app.screen.query(RankProgressRow)}
        await wait_for(pilot, lambda: rows[1].has_class("-stale"), what="rank 1 stale")
        assert not rows[0].has_class("-stale")
        assert "no heartbeat" in str(rows[1].query_one(".rank-detail").render())


async def test_each_rank_has_one_bar_for_the_whole_run_with_its_stage_and_eta(make_app, scripted):
    """Batch sizes 1 and 4, two repeats each: the bar grows over the four passes and the second batch
    size's warm-up, never back to 0 (it used to go 100% -> 5% at each repeat), and the row says
    which batch size and repeat it is at, with an ETA once two reports give a rate."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        await wait_for(pilot, lambda: app.runs[run_id].state == "RUNNING")
        rows = {row.rank: row for row in app.screen.query(RankProgressRow)}
        base = time.time() - 40  # the node's clock: 40 s of work behind us when the last report lands
        plan = {"batch_count": 2, "repeats": 2}
        steps = [
            (0, [("phase", {"phase": "warmup", "batch_size": 1, "batch_index": 1})], 0.0, "batch 1 · warming up"),
            (20, [("phase", {"phase": "measure", "batch_size": 1, "batch_index": 1}),
                  ("progress", {"batch_size": 1, "batch_index": 1, "repeat": 1, "tokens_done": 8,
                                "tokens_expected": 8})], 25.0, "batch 1 · repeat 1/2 · ETA —"),
            (30, [("progress", {"batch_size": 1, "batch_index": 1, "repeat": 2, "tokens_done": 4,
                                "tokens_expected": 8})], 37.5, "batch 1 · repeat 2/2 · ETA "),
            (40, [("progress", {"batch_size": 1, "batch_index": 1, "repeat": 2, "tokens_done": 8,
                                "tokens_expected": 8}),
                  ("phase", {"phase": "warmup", "batch_size": 4, "batch_index": 2})], 50.0, "batch 4 · warming up"),
        ]
        shown = []
        for after_s, events, percent, words in steps:
            for rank in (0, 1):
                scripted.write(job, rank, "events", [event_line(kind, rank, ts=base + after_s, **payload, **plan)
                                                     for kind, payload in events])
            bar, detail = rows[1].query_one("#rank-bar-1"), rows[1].query_one(".rank-detail")

            def drawn(bar=bar, detail=detail, percent=percent, words=words) -> bool:
                return bar.progress == percent and words in str(detail.render())

            await wait_for(pilot, drawn, what=f"{percent}% and {words!r}")
            shown.append(bar.progress)
        assert shown == sorted(shown) and bar.total == 100
        # half the timed work in the 40 s since the first warm-up began: about 40 s to go
        detail = str(rows[0].query_one(".rank-detail").render())
        assert re.search(r"batch 4 · warming up · ETA 00:[34]\d", detail), detail
        for rank in (0, 1):
            scripted.write(job, rank, "events", [event_line("phase", rank, phase="done")])
        await wait_for(pilot, lambda: rows[1].query_one("#rank-bar-1").progress == 100.0, what="a full bar")


async def test_lost_connection_shows_reconnecting_then_recovers(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        scripted.fail_status_with = ClusterError("ssh connection to gpu-login lost")
        await wait_for(pilot, lambda: app.connections["local"].state == "reconnecting", what="reconnecting")
        assert "reconnecting" in str(app.screen.query_one("#connection-bar").render())
        scripted.fail_status_with = None
        await wait_for(pilot, lambda: app.connections["local"].state == "local", timeout=40, what="recovery")
        assert app.runs[run_id].state == "PENDING"


async def test_broken_log_stream_resumes_without_losing_or_repeating_lines(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        scripted.write(job, 0, "launcher", [f"before {i}" for i in range(100)])
        logs = app.run_logs[run_id]
        await wait_for(pilot, lambda: logs.merged.received == 100)
        seen: list[str] = []
        app.watch(app, "connections_version", lambda _: seen.append(app.connections["local"].state), init=False)
        scripted.break_next_stream = True
        # Shown until the stream or the next status poll succeeds (here within a poll interval).
        await wait_for(pilot, lambda: "reconnecting" in seen, what="reconnecting")
        scripted.write(job, 0, "launcher", [f"after {i}" for i in range(100)])
        await wait_for(pilot, lambda: logs.merged.received == 200, timeout=15, what="the resumed stream")
        await pilot.pause(0.5)
        assert list(logs.ranks[0].lines) == (
            [f"before {i}" for i in range(100)] + [f"after {i}" for i in range(100)])
        await wait_for(pilot, lambda: app.connections["local"].state == "local", what="connected again")


async def test_unknown_host_key_dialog_shows_fingerprint_and_trusts(make_app, scripted):
    trusted = []
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await submit_demo(app, pilot, scripted)
        scripted.fail_status_with = HostKeyUnknown("gpu-login", "SHA256:abcDEF123", lambda: trusted.append(1))
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        assert "SHA256:abcDEF123" in str(app.screen.query_one("#fingerprint").render())
        scripted.fail_status_with = None
        await pilot.click("#trust")
        await wait_for(pilot, lambda: trusted == [1], what="trust()")
        await wait_for(pilot, lambda: app.connections["local"].state == "local", timeout=40)


async def test_failed_login_says_why(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await submit_demo(app, pilot, scripted)
        scripted.fail_status_with = AuthenticationFailed("slurmtest@127.0.0.1: publickey refused")
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemDialog), what="the login dialog")
        assert "publickey refused" in str(app.screen.query_one("#problem-detail").render())


async def test_quit_and_restart_reattaches_and_ingests(make_app, scripted):
    first = make_app()
    async with first.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(first, pilot, scripted)
        job = scripted.job_of(first.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        scripted.write(job, 0, "launcher", ["line before quitting"])
        await wait_for(pilot, lambda: first.runs[run_id].state == "RUNNING")
    assert scripted.cancelled == []  # quitting never touches the job
    scripted.write(job, 0, "launcher", ["line written while dinf-tui was closed"])
    scripted.set_state(job, JobState.COMPLETED)

    second = make_app()
    async with second.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: second.runs.get(run_id) and second.runs[run_id].state == "COMPLETED",
                       what="reconciled to COMPLETED")
        assert second.service.measurements(run_id)
        second.open_run(run_id)
        await wait_for(pilot, lambda: isinstance(second.screen, RunScreen) and second.screen.results_shown)
        logs = second.run_logs[run_id]
        await wait_for(pilot, lambda: logs.merged.received >= 2, what="logs from the start")
        assert [line.split("] ", 1)[1] for line in logs.merged.lines] == [
            "line before quitting", "line written while dinf-tui was closed"]


async def test_runs_sort_and_filter(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        from remote.cluster import Resources
        from worker.contract import RunSpec

        for name in ("alpha", "beta", "gamma"):
            app.service.new_run(cluster="local", spec=RunSpec(run_name=name), resources=Resources(), name=name)
        app.action_refresh_runs()
        await wait_for(pilot, lambda: len(app.runs) == 3)
        screen = app.screen
        table = screen.query_one(DataTable)
        names = lambda: [table.get_row_at(i)[1].plain for i in range(table.row_count)]  # noqa: E731
        await wait_for(pilot, lambda: table.row_count == 3)
        assert names() == ["gamma", "beta", "alpha"]  # newest first
        screen.sort_column, screen.sort_reverse = "id", True
        await pilot.press("s")  # next column: name, ascending
        assert names() == ["alpha", "beta", "gamma"]
        await pilot.press("S")
        assert names() == ["gamma", "beta", "alpha"]
        await pilot.press("slash")
        await pilot.press("p", "h", "|", "m", "m")  # alpha, gamma
        await wait_for(pilot, lambda: table.row_count == 2)
        assert sorted(names()) == ["alpha", "gamma"]
        screen.query_one("#runs-filter", Input).value = "("
        await pilot.pause()
        assert "not a valid regular expression" in str(screen.query_one("#runs-filter-error").render())


async def test_log_filter_search_and_follow(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.write(job, 0, "launcher", [f"step {i} {'WARN slow' if i % 50 == 0 else 'ok'}" for i in range(500)])
        logs = app.run_logs.get(run_id) or app.logs_for(run_id)
        await wait_for(pilot, lambda: logs.merged.received == 500)
        view = app.screen.query_one("#log-merged", RankLog)
        assert view.follow and view.scroll_y == view.max_scroll_y > 0
        state = app.screen.query_one("#follow-state")
        assert "following" in str(state.render())
        view.action_page_up()  # scrolling back pauses, and the label says so
        await wait_for(pilot, lambda: "paused" in str(state.render()), what="the paused label")
        view.action_scroll_end()
        await wait_for(pilot, lambda: "following" in str(state.render()), what="following again")
        await pilot.press("f")
        assert not view.follow
        app.screen.query_one("#log-filter", Input).value = "WARN"
        await wait_for(pilot, lambda: len(logs.merged.visible) == 10)
        app.screen.query_one("#log-filter", Input).value = ""
        app.screen.query_one("#log-search", Input).value = r"step 25\b"
        await pilot.pause()
        view.scroll_home(animate=False)
        await pilot.pause()
        assert view.find_next()
        assert int(view.scroll_y) == 25


# --- issue 15: what the app shows around failures, host keys and new runs ------------------------


def add_runs(app, *names: str) -> list[int]:
    from remote.cluster import Resources
    from worker.contract import RunSpec

    return [app.service.new_run(cluster="local", spec=RunSpec(run_name=name), resources=Resources(), name=name).id
            for name in names]


async def test_runs_list_cursor_stays_on_the_selected_run_when_new_runs_appear_above(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        first, second, third = add_runs(app, "alpha", "beta", "gamma")
        app.action_refresh_runs()
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        await pilot.press("down")  # newest first: beta is the middle row
        assert app.screen.selected_run_id() == second
        await pilot.press("enter")  # watch it for a while, as one does
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_id == second)
        add_runs(app, "delta", "epsilon")  # e.g. submitted from the CLI meanwhile
        app.action_refresh_runs()
        await wait_for(pilot, lambda: table.row_count == 5, what="the new runs")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.pause(0.2)
        assert app.screen.selected_run_id() == second
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == second


async def test_a_state_change_updates_its_row_in_place(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        first, second = add_runs(app, "alpha", "beta")
        app.action_refresh_runs()
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        await pilot.press("down")
        row_before = table.get_row(str(second))
        rebuilds = []
        clear = table.clear
        table.clear = lambda *args, **kwargs: (rebuilds.append(1), clear(*args, **kwargs))[1]
        app.service.cancel(first)  # a draft: cancelled at once
        app.action_refresh_runs()
        await wait_for(pilot, lambda: table.get_row(str(first))[5].plain == "CANCELLED", what="the new state")
        assert rebuilds == []  # with hundreds of runs a rebuild every poll cost 30 ms of the UI thread
        assert table.get_row(str(second)) == row_before
        assert app.screen.selected_run_id() == first and table.cursor_row == 1


async def test_a_cancelled_run_shows_no_error_made_of_its_progress_lines(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        progress = [f"20:00:0{i} rank 0 progress bs=1 {i * 8}/32 tok" for i in range(4)]
        scripted.write(job, 0, "launcher", progress)
        await wait_for(pilot, lambda: app.run_logs[run_id].merged.received == 4, what="the progress lines")
        app.confirm_cancel(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.runs[run_id].state == "CANCELLED", what="CANCELLED")
        await pilot.pause(0.5)
        header = str(app.screen.query_one("#run-summary").render())
        assert "CANCELLED" in header
        assert "progress" not in header and "tok" not in header, header
        assert not app.service.run(run_id).error


async def test_a_changed_host_key_is_called_changed_and_shows_both_fingerprints(make_app, scripted):
    from scripted_cluster import HostKeyChanged

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await submit_demo(app, pilot, scripted)
        scripted.fail_status_with = HostKeyChanged("gpu-login", "SHA256:newNEW", "SHA256:oldOLD", lambda: None)
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        dialog = app.screen
        assert "SHA256:newNEW" in str(dialog.query_one("#fingerprint").render())
        assert "SHA256:oldOLD" in str(dialog.query_one("#known-fingerprint").render())
        assert "CHANGED" in str(dialog.query_one(".dialog-question").render())
        bar = str(app.screen_stack[-2].query_one("#connection-bar").render())  # the screen under the dialog
        assert "host key changed" in bar and "unknown host key" not in bar, bar


def remote_cluster_config(tmp_path) -> None:
    """A Slurm cluster 'gpu' in the configuration (the scripted backend plays it)."""
    (tmp_path / "config.toml").write_text('[clusters.gpu]\nhost = "gpu-login"\n[clusters.gpu.slurm]\npartition = "debug"\n')


async def open_form_for(app, pilot, cluster: str) -> NewRunScreen:
    await wait_for(pilot, lambda: app.service is not None, what="service")
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
    form = app.screen
    form.query_one("#cluster", Select).value = cluster
    form.query_one("#mode", Select).value = "single"
    form.query_one("#ranks_per_node", Input).value = "1"
    await pilot.pause()
    assert not form.checked.problems, form.checked.problems
    return form


async def test_trusting_the_host_key_resumes_the_interrupted_submit(make_app, scripted, tmp_path):
    remote_cluster_config(tmp_path)
    trusted = []

    def trust():
        trusted.append(1)
        scripted.fail_status_with = None

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form_for(app, pilot, "gpu")
        scripted.fail_status_with = HostKeyUnknown("gpu-login", "SHA256:abcDEF123", trust)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        assert app.service.runs() == []  # nothing recorded before the key is trusted
        await pilot.click("#trust")
        # No second ctrl+s: the submit the dialog interrupted goes on.
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run submitted")
        assert trusted == [1] and len(app.service.runs()) == 1
        assert app.connections["gpu"].state == "connected"
        assert not form.busy or form not in app.screen_stack


async def test_refusing_the_host_key_ends_the_submit_and_says_so(make_app, scripted, tmp_path):
    remote_cluster_config(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form_for(app, pilot, "gpu")
        scripted.fail_status_with = HostKeyUnknown("gpu-login", "SHA256:abcDEF123", lambda: None)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        await pilot.click("#refuse")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and not form.busy, what="the form back")
        assert "was refused" in str(form.query_one("#error-general").render())
        assert app.connections["gpu"].state == "refused" and app.service.runs() == []


async def test_preview_meets_the_host_key_dialog_and_resumes_once_trusted(make_app, scripted, tmp_path):
    remote_cluster_config(tmp_path)

    def trust():
        scripted.fail_status_with = None

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form_for(app, pilot, "gpu")
        scripted.fail_status_with = HostKeyUnknown("gpu-login", "SHA256:abcDEF123", trust)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the host key dialog")
        await pilot.click("#refuse")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        await pilot.pause(0.2)
        pane = str(form.query_one("#preview-text").render())
        assert "was refused" in pane and "rendering" not in pane, pane
        assert form.preview_script is None

        await pilot.press("ctrl+r")  # again, after the refusal: the same dialog, not a leaked message
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), what="the dialog again")
        await pilot.click("#trust")
        await wait_for(pilot, lambda: "srun" in (form.preview_script or ""), what="the script")
        assert app.connections["gpu"].state == "connected"


async def test_preview_of_an_unreachable_cluster_still_shows_the_script(make_app, scripted, tmp_path):
    remote_cluster_config(tmp_path)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form_for(app, pilot, "gpu")
        scripted.fail_status_with = ClusterError("ssh: connect to gpu-login port 22: no route to host")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "srun" in (form.preview_script or ""), what="the script, offline")
        assert isinstance(app.screen, NewRunScreen)


async def test_the_form_takes_site_slurm_options_and_previews_them_in_the_script(make_app, scripted, tmp_path):
    """Reservation, GPU type, exclusive and extra #SBATCH lines from the form, the cluster's container
    runtime and mounts (no field) kept: all in the script the preview shows, and in the run submitted."""
    from remote import slurm
    from remote.cluster import PythonEnvironment

    (tmp_path / "config.toml").write_text(
        '[clusters.gpu]\nhost = "gpu-login"\n[clusters.gpu.slurm]\nexclusive = true\n'
        'extra_sbatch = ["--mail-type=END"]\ncontainer_runtime = "pyxis"\ncontainer_mounts = ["/data:/data:ro"]\n')
    # The scripted backend plays the cluster; the script is the real renderer's.
    scripted.preview = lambda bundle: slurm.render_batch_script(
        run_id=bundle.run_id, resources=bundle.resources, environment=PythonEnvironment(),
        run_dir=f"/scratch/dinf/runs/{bundle.run_id}", command=["python3", "-m", "worker"])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form_for(app, pilot, "gpu")
        assert form.query_one("#exclusive", Select).value == "yes"  # the cluster's defaults filled in
        assert form.query_one("#extra_sbatch", Input).value == "--mail-type=END"
        form.query_one("#extra_sbatch", Input).value = '--mail-type=END --nodes=3'
        await pilot.pause()
        assert "gives --nodes, which dinf sets itself" in str(form.query_one("#error-extra_sbatch").render())
        assert form.query_one("#submit", Button).disabled
        for field, value in {"gpus_per_node": "1", "gpu_type": "h100", "reservation": "maint",
                             "extra_sbatch": '--mail-type=END --comment="two words"', "container_image": "img.sqsh"}.items():
            form.query_one(f"#{field}", Input).value = value
        await pilot.pause()
        assert not form.checked.problems, form.checked.problems
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: form.preview_script is not None, what="the script")
        lines = form.preview_script.splitlines()
        for line in ("#SBATCH --gpus-per-node=h100:1", "#SBATCH --reservation=maint", "#SBATCH --exclusive",
                     "#SBATCH --mail-type=END", '#SBATCH --comment="two words"'):
            assert line in lines, form.preview_script
        assert "--container-mounts=/scratch/dinf/runs/" in form.preview_script and ",/data:/data:ro " in form.preview_script
        shown = form.query_one("#preview-text", Static).content.renderables  # the script, then spec.json
        assert form.preview_script in [getattr(part, "code", None) for part in shown]
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="submitted")
        resources = app.service.run(app.screen.run_id).resources
        assert (resources["reservation"], resources["gpu_type"], resources["exclusive"]) == ("maint", "h100", True)
        assert resources["extra_sbatch"] == ["--mail-type=END", "--comment=two words"]
        assert (resources["container_runtime"], resources["container_mounts"]) == ("pyxis", ["/data:/data:ro"])


async def test_at_80x24_the_form_scrolls_to_its_last_slurm_fields(make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form, scroller = app.screen, app.screen.query_one("#run-form")
        assert not scroller.region.contains_region(form.query_one("#reservation").region)  # below the fold at first
        for name in ("reservation", "gpu_type", "exclusive", "container_image", "extra_sbatch"):
            field = form.query_one(f"#{name}")
            field.focus()
            await pilot.pause(0.3)  # the scroll to the focused field is animated
            assert scroller.region.contains_region(field.region), name
        await pilot.press(*"--hold")
        await pilot.pause()
        assert form.query_one("#extra_sbatch", Input).value == "--hold"
        assert form.checked.resources.extra_sbatch == ["--hold"]


def test_a_crashed_app_exits_with_a_failure_status(monkeypatch):
    from tui.ui.app import DinfApp, main

    def crash(app) -> None:
        app._return_code = 1  # what Textual records when an exception ends the app

    monkeypatch.setattr(DinfApp, "run", crash)
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 1


# --- issue 14: keys on the run screen ------------------------------------------------------------


async def test_escape_in_the_search_box_leaves_the_box_not_the_screen(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        await pilot.press("slash")
        assert app.focused is app.screen.query_one("#log-search", Input)
        await pilot.press("e", "r", "r", "escape")
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == run_id
        assert not isinstance(app.focused, Input)
        await pilot.press("d")  # lands on the run screen, which has no 'd': no demo run starts
        await pilot.pause(0.3)
        assert isinstance(app.screen, RunScreen) and len(app.runs) == 1
        await pilot.press("escape")  # from the screen itself: back to the list
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs list")


async def test_digit_keys_open_rank_tabs_and_search_counts_matches(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.write(job, 0, "launcher", [f"step {i} {'WARN slow' if i % 50 == 0 else 'ok'}" for i in range(500)])
        scripted.write(job, 1, "launcher", ["rank one WARN", "rank one ok"])
        logs = app.logs_for(run_id)
        await wait_for(pilot, lambda: logs.merged.received == 502, what="every line")
        tabs = app.screen.query_one(TabbedContent)
        await pilot.press("1")
        assert tabs.active == "rank-1"
        await pilot.press("0")
        assert tabs.active == "rank-0"
        await pilot.press("7")  # the demo has ranks 0 and 1 only: nothing happens
        assert tabs.active == "rank-0"
        await pilot.press("slash", *"WARN")
        count = app.screen.query_one("#search-count")
        await wait_for(pilot, lambda: count.text.plain == "10 matching lines", what="rank 0's count")
        await pilot.press("escape", "1")
        await wait_for(pilot, lambda: count.text.plain == "1 matching line", what="rank 1's count")
        await pilot.press("m")
        await wait_for(pilot, lambda: count.text.plain == "11 matching lines", what="the merged count")


async def test_a_finished_run_offers_no_cancel(make_app, scripted):
    from textual.widgets._footer import FooterKey

    def footer(app) -> list[str]:
        return [key.description for key in app.screen.query(FooterKey)]

    app = make_app()
    async with app.run_test(size=(200, 44)) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        await wait_for(pilot, lambda: app.runs[run_id].state == "RUNNING")
        await wait_for(pilot, lambda: "Cancel run" in footer(app), what="cancel offered while it runs")
        scripted.set_state(job, JobState.COMPLETED)
        await wait_for(pilot, lambda: app.runs[run_id].state == "COMPLETED")
        await wait_for(pilot, lambda: "Cancel run" not in footer(app), what="no cancel once it finished")
        await pilot.press("c")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await wait_for(pilot, lambda: app.screen.selected_run_id() == run_id)
        await pilot.pause(0.2)
        assert "Cancel run" not in footer(app)  # the list too, with the cursor on a finished run
        await pilot.press("c")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmDialog)


# --- issue 14: the new-run form's defaults -------------------------------------------------------


async def test_new_run_form_defaults_stay_coherent(make_app, tmp_path):
    """A cluster with 4 GPUs a node opens valid (4 ranks, float16); single is one rank; CPU is float32."""
    (tmp_path / "config.toml").write_text('[defaults]\ncluster = "gpu"\n[clusters.gpu]\nhost = "gpu-login"\n'
                                          '[clusters.gpu.slurm]\npartition = "debug"\ngpus_per_node = 4\n')
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen

        def values() -> tuple[str, ...]:
            v = form.form_values()
            return v.cluster, v.mode, v.nodes, v.ranks_per_node, v.gpus_per_node, v.dtype

        await wait_for(pilot, lambda: values() == ("gpu", "pp", "1", "4", "4", "float16"), what="a rank per GPU")
        await pilot.pause()
        assert not form.checked.problems, form.checked.problems
        form.query_one("#mode", Select).value = "single"
        await wait_for(pilot, lambda: values()[1:] == ("single", "1", "1", "1", "float16"), what="one rank")
        assert not form.checked.problems, form.checked.problems
        form.query_one("#mode", Select).value = "tp"
        await wait_for(pilot, lambda: values()[1:] == ("tp", "1", "2", "2", "float16"), what="two ranks again")
        form.query_one("#gpus_per_node", Input).value = "0"
        await wait_for(pilot, lambda: values()[5] == "float32", what="CPU ranks in float32")
        form.query_one("#gpus_per_node", Input).value = "4"
        await wait_for(pilot, lambda: values()[3:] == ("4", "4", "float16"), what="ranks following the GPUs")
        await pilot.pause()
        assert not form.checked.problems, form.checked.problems
        assert not form.query_one("#submit", Button).disabled


# --- issue 14: the run screen after a run ended ----------------------------------------------------


async def test_a_failed_run_shows_how_each_rank_ended_and_its_whole_error(make_app, scripted):
    from storage import repo
    from storage.db import write_session

    error = " ".join(f"Sentence {i} of the rank's long report says what went wrong." for i in range(12)) + " END."
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        scripted.set_state(job, JobState.RUNNING)
        scripted.write(job, 0, "events", [event_line("phase", 0, phase="load")])  # rank 1 never reports
        await wait_for(pilot, lambda: app.logs_for(run_id).rank_state(0).phase == "load", what="rank 0's phase")
        scripted.set_state(job, JobState.FAILED, reason="NonZeroExitCode")
        await wait_for(pilot, lambda: app.runs[run_id].state == "FAILED", what="FAILED")
        with write_session(app.service.engine) as session:
            repo.update_run(session=session, run=repo.get_run(session=session, run_id=run_id), error=error)
            session.commit()
        await wait_for(pilot, lambda: app.runs[run_id].error == error, what="the error")
        rows = {row.rank: row for row in app.screen.query(RankProgressRow)}

        def detail(rank: int) -> str:
            return rows[rank].query_one(".rank-detail").text.plain

        await wait_for(pilot, lambda: detail(1) == "run ended FAILED before this rank reported", what="rank 1")
        assert detail(0).startswith("run ended FAILED in phase load")
        assert "waiting" not in detail(0) + detail(1)
        await pilot.pause(0.3)
        summary = app.screen.query_one("#run-summary")
        wrapped = summary.text.wrap(app.console, summary.size.width)
        assert error in summary.text.plain and summary.size.height >= len(wrapped) > 6  # grown, not cut
        assert any("END." in line.plain for line in wrapped)


async def test_an_imported_run_is_not_shown_as_waiting(make_app):
    from pathlib import Path

    from textual.widgets import ProgressBar

    bundle = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        run_id = app.service.ingest_dir(bundle).run_id
        app.action_refresh_runs()
        await wait_for(pilot, lambda: run_id in app.runs, what="the imported run")
        app.open_run(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        await pilot.pause(0.3)
        rows = list(app.screen.query(RankProgressRow))
        assert len(rows) == 2
        for row in rows:
            assert row.query_one(".rank-detail").text.plain.startswith("imported results"), row.rank
            assert row.query_one(ProgressBar).percentage == 1.0  # not "0%"


async def test_rank_rows_say_what_a_starting_rank_is_doing(make_app, scripted):
    """Not 'start · 0%' for the ~10 s a rank imports torch: the job's wait, then each phase in words."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        run_id = await submit_demo(app, pilot, scripted)
        job = scripted.job_of(app.service.run(run_id).uid)
        rows = {row.rank: row for row in app.screen.query(RankProgressRow)}

        def detail(rank: int) -> str:
            return rows[rank].query_one(".rank-detail").text.plain

        scripted.set_state(job, JobState.PENDING)
        await wait_for(pilot, lambda: detail(0) == "waiting for the job to start", what="the job's wait")
        scripted.set_state(job, JobState.RUNNING)
        await wait_for(pilot, lambda: detail(0) == "loading Python and torch", what="torch loading")
        scripted.write(job, 0, "events", [event_line("phase", 0, phase="load")])
        scripted.write(job, 1, "events", [event_line("phase", 1, phase="init")])
        await wait_for(pilot, lambda: detail(0).startswith("loading weights"), what="rank 0 loading weights")
        await wait_for(pilot, lambda: detail(1).startswith("joining the other ranks"), what="rank 1 joining")


async def test_the_footer_fits_80_columns_and_hidden_keys_still_work(make_app):
    from textual.widgets._footer import FooterKey, FooterLabel

    def shown(app) -> dict[str, FooterKey]:
        return {key.description: key for key in app.screen.query(FooterKey)}

    def fully_visible(app) -> bool:
        palette = app.screen.query_one(FooterLabel) if app.screen.query(FooterLabel) else None
        right = palette.region.x if palette is not None else 80
        return all(0 < key.region.width and key.region.right <= right for key in shown(app).values())

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        from remote.cluster import Resources
        from worker.contract import RunSpec

        for name in ("alpha", "beta"):  # drafts: not finished, so "Cancel run" is offered too
            app.service.new_run(cluster="local", spec=RunSpec(run_name=name), resources=Resources(), name=name)
        app.action_refresh_runs()
        await wait_for(pilot, lambda: "Cancel run" in shown(app), what="cancel offered for a draft")
        assert {"New run", "Compare", "Filter", "Refresh", "Quit", "Demo"} <= set(shown(app))
        assert fully_visible(app)
        assert "Sort" not in shown(app)
        screen = app.screen
        screen.sort_column = "id"
        await pilot.press("s")  # off the footer, still a key
        assert screen.sort_column != "id"
        assert any(b.binding.description == "Sort" for b in screen.active_bindings.values())  # the keys panel

        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        await wait_for(pilot, lambda: "Cancel run" in shown(app), what="the run screen's footer")
        assert {"Back", "Search", "Follow", "Results", "Rank", "Quit"} <= set(shown(app))
        assert fully_visible(app)


async def test_the_results_table_shows_throughput_and_tpot_at_80_columns(make_app):
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        run_id = app.service.ingest_dir(bundle).run_id
        app.action_refresh_runs()
        await wait_for(pilot, lambda: run_id in app.runs, what="the imported run")
        app.open_run(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.results_shown)
        await pilot.press("R")
        await pilot.pause(0.2)
        table = app.screen.query_one("#measurements", DataTable)
        right, visible = 0, []
        for column in table.ordered_columns:
            right += column.get_render_width(table)
            if right <= table.scrollable_content_region.width:
                visible.append(str(column.label))
        assert visible[:3] == ["batch", "output tok/s", "TPOT p50 ms"]
        first = table.get_row_at(0)
        assert float(str(first[1])) > 0  # a throughput, not a request count


async def test_the_new_run_preview_goes_below_the_form_when_narrow(make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="the form")
        screen = app.screen
        screen.query_one("#name", Input).value = "pp-preview"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.preview_script is not None, what="the script")
        await pilot.pause()
        form, pane = screen.query_one("#run-form"), screen.query_one("#preview-pane")
        assert pane.region.width >= 76 and pane.region.y >= form.region.bottom  # below, full width
        assert pane.region.height >= 6
        longest = max(len(line) for line in screen.preview_script.splitlines())
        assert longest <= screen.query_one("#preview-text").content_region.width  # no line wraps

        await pilot.resize_terminal(160, 45)
        await pilot.pause(0.2)
        assert pane.region.x >= form.region.right and pane.region.width >= 90  # beside it when wide


async def test_the_runs_list_fits_80_columns_and_widens_with_the_terminal(make_app):
    """At 80 columns every shown column is whole (the creation time was cut off); at 160 all nine
    show, with full timestamps and whole names; the layout follows a resize, the cursor its run."""
    from remote.cluster import Resources
    from storage import repo
    from storage.db import write_session
    from worker.contract import RunSpec

    def columns(table) -> tuple[list[str], int]:
        """The column labels (without the sort arrow) and the width they need together."""
        labels = [column.label.plain.split(" ")[0] for column in table.ordered_columns]
        return labels, sum(column.get_render_width(table) for column in table.ordered_columns)

    def row_text(table, key: str) -> list[str]:
        return [str(cell) for cell in table.get_row(key)]

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        long_name = "llama-pp2-baseline-with-a-name-longer-than-the-column"
        record = app.service.new_run(cluster="local", spec=RunSpec(run_name=long_name), resources=Resources(),
                                     name=long_name)
        with write_session(app.service.engine) as session:  # the widest state and a run of over 10 hours
            run = repo.get_run(session=session, run_id=record.id)
            repo.record_state(session=session, run=run, state="SUBMIT_FAILED")
            repo.update_run(session=session, run=run, started_at=1000.0, finished_at=1000.0 + 11 * 3600)
            session.commit()
        for _ in range(3):
            app.service.new_run(cluster="local", spec=RunSpec(), resources=Resources(), name="short")
        app.action_refresh_runs()
        table = app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == 4)
        table.move_cursor(row=table.get_row_index(str(record.id)))

        labels, needed = columns(table)
        assert labels == ["ID", "Name", "Mode", "Ranks", "State", "Elapsed", "Created"]
        assert needed <= table.scrollable_content_region.width  # nothing cut, no horizontal scroll
        name, created = row_text(table, str(record.id))[1], row_text(table, str(record.id))[-1]
        assert name.endswith("…") and long_name.startswith(name[:-1])
        assert time.strptime(created, "%m-%d %H:%M")  # to the minute, no year
        for _ in range(3):  # s cycles the shown columns: id, name, mode, ranks; its arrow widens Ranks most
            await pilot.press("s")
        await wait_for(pilot, lambda: table.ordered_columns[3].label.plain.startswith("Ranks "), what="Ranks sorted")
        assert columns(table)[1] <= table.scrollable_content_region.width

        await pilot.resize_terminal(160, 45)
        await wait_for(pilot, lambda: len(table.ordered_columns) == 9, what="the wide layout")
        labels, needed = columns(table)
        assert labels == ["ID", "Name", "Cluster", "Mode", "Ranks", "State", "Job", "Elapsed", "Created"]
        assert needed <= table.scrollable_content_region.width
        cells = row_text(table, str(record.id))
        assert cells[1] == long_name and cells[7] == "11:00:00" and time.strptime(cells[-1], "%Y-%m-%d %H:%M:%S")
        assert app.screen.selected_run_id() == record.id

        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: len(table.ordered_columns) == 7, what="the narrow layout again")
        assert columns(table)[1] <= table.scrollable_content_region.width
        assert app.screen.selected_run_id() == record.id


async def test_a_draft_is_saved_without_submitting_then_submitted_from_its_screen(make_app, scripted):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#name", Input).value = "later"
        await pilot.press("ctrl+r")  # the preview shows the settings beside the script
        await wait_for(pilot, lambda: form.preview_script is not None, what="the preview")
        assert '"run_name": "later"' in (form.preview_spec or "")
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(form.query_one("#preview-text").content)
        shown = console.export_text()
        assert shown.index("Batch script") < shown.index("Run settings") < shown.index('"run_name": "later"')
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the draft's screen")
        (draft,) = app.service.runs()
        assert draft.state == "DRAFT" and draft.name == "later" and draft.job_id is None
        assert not scripted.prepared  # nothing reached the cluster
        await wait_for(pilot, lambda: app.screen.check_action("submit_draft", ()), what="the submit key")
        await pilot.press("s")
        await wait_for(pilot, lambda: app.service.run(draft.id).state != "DRAFT", what="the submit")
        assert app.service.run(draft.id).job_id is not None
        await wait_for(pilot, lambda: not app.screen.check_action("submit_draft", ()), what="no second submit")


async def test_tags_and_note_are_edited_on_the_run_screen_and_shown_in_the_list(make_app):
    from pathlib import Path

    from textual.widgets import TextArea

    from tui.ui.screens.dialogs import AnnotateDialog

    bundle = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="service")
        run_id = app.service.ingest_dir(bundle).run_id
        app.action_refresh_runs()
        await wait_for(pilot, lambda: run_id in app.runs, what="the imported run")
        app.open_run(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        run_screen = app.screen
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateDialog), what="the tags dialog")
        dialog = app.screen
        tags_input = dialog.query_one("#annotate-tags", Input)
        assert tags_input.value == "" and dialog.query_one("#annotate-note", TextArea).text == ""
        tags_input.value = "h200 bell\x07"
        await pilot.pause()
        assert "control and formatting characters are not allowed" in str(
            dialog.query_one("#annotate-tags-error").render())
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert app.screen is dialog  # not saved: the tag at fault is named under the field
        assert app.service.run(run_id).tags == ()
        tags_input.value = "h200, [/x]"
        dialog.query_one("#annotate-note", TextArea).text = "slow node\n[bold]kept as typed[/bold]"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.runs[run_id].tags == ("[/x]", "h200"), what="the saved tags")
        assert app.screen is run_screen
        stored = app.service.run(run_id)
        assert (stored.tags, stored.notes) == (("[/x]", "h200"), "slow node\n[bold]kept as typed[/bold]")
        await pilot.pause(0.2)
        header = str(run_screen.query_one("#run-summary").render())
        assert "tags [/x], h200" in header and "note slow node\n[bold]kept as typed[/bold]" in header

        await pilot.press("t")  # the dialog opens on what is saved; Escape changes nothing
        await wait_for(pilot, lambda: isinstance(app.screen, AnnotateDialog), what="the tags dialog again")
        assert app.screen.query_one("#annotate-tags", Input).value == "[/x] h200"
        app.screen.query_one("#annotate-tags", Input).value = ""
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.service.run(run_id).tags == ("[/x]", "h200")

        await pilot.press("escape")  # back to the list: the tags follow the name, and the filter finds them
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs list")
        table = app.screen.query_one(DataTable)
        # at 80 columns the name column is narrow: name and tags are cut together, the tags dimmed
        assert "fixture-pp2  #[/x] #h200".startswith(table.get_row(str(run_id))[1].plain.rstrip("…"))
        assert table.get_row(str(run_id))[1].plain.startswith("fixture-pp2  #")
        app.screen.query_one("#runs-filter", Input).value = "#h200"
        await pilot.pause(0.2)
        assert table.row_count == 1
        app.screen.query_one("#runs-filter", Input).value = "#nothing"
        await pilot.pause(0.2)
        assert table.row_count == 0
