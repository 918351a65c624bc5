"""A large history must not make the app heavy (issue 15): long logs are read from their tail, and
the runs table is updated in place, not rebuilt on every refresh. Speed itself is measured in
tests/benchmarks/bench_tui.py; these tests pin the behaviour that makes it fast.
"""

from __future__ import annotations

import time
from pathlib import Path

from pilot_wait import wait_for
from rich.text import Text

from remote.logstream import follow


def _line(rank: int, i: int) -> str:
    return f"20:00:00 rank {rank} L{i:09d} " + "x" * 70


LINE_BYTES = len(_line(0, 0)) + 1


def _write_log(path: Path, lines: int, rank: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(_line(rank, i) + "\n" for i in range(lines)))


class CountingReader:
    """`open()`-backed read_from that counts the bytes it returned."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def __call__(self, path: str, offset: int) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read(1 << 20)
        except FileNotFoundError:
            return None
        self.bytes_read += len(data)
        return data


def _size(path: str) -> int | None:
    return Path(path).stat().st_size if Path(path).exists() else None


def test_follow_reads_only_the_tail_of_a_long_file(tmp_path: Path) -> None:
    log = tmp_path / "rank0.out"
    _write_log(log, 100_000)  # ~9 MB
    reader = CountingReader()
    batch = next(follow(reader, [str(log)], None, tail_bytes=64 * 1024, size_of=_size))
    lines = [line for chunk in batch for line in chunk.lines]
    assert reader.bytes_read <= 64 * 1024 + 1
    assert lines[-1] == _line(0, 99_999)
    assert all(line.startswith("20:00:00 rank 0 L") and len(line) + 1 == LINE_BYTES for line in lines)  # whole lines only
    assert len(lines) == (64 * 1024) // LINE_BYTES  # every whole line of the last 64 KiB
    first = int(lines[0].split(" L")[1][:9])
    assert lines == [_line(0, i) for i in range(first, 100_000)]
    assert batch[0].offset == first * LINE_BYTES and batch[-1].end_offset == log.stat().st_size


def test_follow_tail_keeps_a_line_that_starts_exactly_at_the_cut(tmp_path: Path) -> None:
    log = tmp_path / "rank0.out"
    _write_log(log, 1_000)
    batch = next(follow(CountingReader(), [str(log)], None, tail_bytes=LINE_BYTES * 10, size_of=_size))
    assert [line for chunk in batch for line in chunk.lines] == [_line(0, i) for i in range(990, 1_000)]


def test_follow_tail_leaves_short_files_and_given_offsets_alone(tmp_path: Path) -> None:
    short, resumed = tmp_path / "short.out", tmp_path / "resumed.out"
    _write_log(short, 10)
    _write_log(resumed, 10_000)
    stream = follow(CountingReader(), [str(short), str(resumed)], {str(resumed): LINE_BYTES * 5}, tail_bytes=4096,
                    size_of=_size)
    by_path: dict[str, list[str]] = {}
    for chunk in next(stream):
        by_path.setdefault(chunk.path, []).extend(chunk.lines)
    assert by_path[str(short)] == [_line(0, i) for i in range(10)]  # shorter than the tail: whole
    assert by_path[str(resumed)][0] == _line(0, 5)  # an offset is a resume point, never moved


def test_follow_tail_of_a_file_that_appears_later(tmp_path: Path) -> None:
    log = tmp_path / "late.out"
    stream = follow(CountingReader(), [str(log)], None, tail_bytes=LINE_BYTES * 3, size_of=_size, sleep=lambda _s: None)
    assert next(stream) == []
    _write_log(log, 100)
    assert [line for chunk in next(stream) for line in chunk.lines] == [_line(0, i) for i in range(97, 100)]


# --- the app ----------------------------------------------------------------------------------


class RunningCluster:
    """The real local backend (its log reading is what is under test); every job reads as RUNNING."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def status(self, job_ids: list[str]):
        from remote.cluster import JobState, JobStatus

        return {job_id: JobStatus(job_id, JobState.RUNNING) for job_id in job_ids}


def _live_run(dinf, workdir: Path, job_id: str = "77") -> int:
    from storage import repo
    from storage.db import write_session

    with write_session(dinf.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        run = repo.create_run(session=session, uid="live", name="live", mode="pp", spec={}, num_ranks=2,
                              cluster_id=cluster.id)
        for state in ("SUBMITTED", "RUNNING"):
            repo.record_state(session=session, run=run, state=state)
        repo.update_run(session=session, run=run, job_id=job_id, job_ids_json=f'["{job_id}"]',
                        run_dir=str(workdir), output_dir=str(workdir / "out"), logs_dir=str(workdir / "logs"),
                        started_at=time.time())
        session.commit()
        return run.id


async def test_opening_a_run_with_a_long_log_reads_only_its_tail(tmp_path: Path) -> None:
    from tui.core.service import Dinf, make_cluster
    from tui.ui.app import DinfApp
    from worker import contract

    workdir = tmp_path / "live"
    for rank in (0, 1):
        _write_log(workdir / "logs" / contract.launcher_log_file("77", rank), 20_000, rank)  # ~2 MB each
    dinf = Dinf(data_dir=tmp_path / "data", config_path=tmp_path / "config.toml",
                cluster_factory=lambda config: RunningCluster(make_cluster(config)))
    run_id = _live_run(dinf, workdir)
    app = DinfApp(service_factory=lambda: dinf, live_poll_s=0.1, idle_poll_s=0.2, log_tail_bytes=LINE_BYTES * 100)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: app.runs, what="the runs")
        app.open_run(run_id)
        logs = app.logs_for(run_id)
        await wait_for(pilot, lambda: len(logs.ranks) == 2 and all(
            b.lines and b.lines[-1].endswith(_line(r, 19_999)[9:]) for r, b in logs.ranks.items()
        ), what="the last line of both ranks")
        assert {rank: buffer.received for rank, buffer in logs.ranks.items()} == {0: 100, 1: 100}
        assert logs.ranks[0].lines[0].endswith(_line(0, 19_900)[9:])  # whole lines, the newest ones


REALISTIC_SPEC = {"model": {"config": "tiny", "seed": 7}, "mode": "pp", "dtype": "float16", "batch_sizes": [1, 8],
                  "max_new_tokens": 64, "num_requests": 32, "prompts": "builtin", "micro_batches": 2}


def _history(dinf, count: int, *, spec: dict | None = None, first: int = 0) -> None:
    from storage import repo
    from storage.db import write_session

    with write_session(dinf.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        for i in range(first, first + count):
            run = repo.create_run(session=session, uid=f"old-{i}", name=f"old {i}", mode="pp", spec={**(spec or {}), "i": i},
                                  num_ranks=2, cluster_id=cluster.id, at=1000.0 + i)
            for state in ("PENDING", "RUNNING", "COMPLETED"):
                repo.record_state(session=session, run=run, state=state, at=1000.0 + i)
            repo.update_run(session=session, run=run, job_id=str(500 + i), ingested_at=1100.0 + i)
        session.commit()


class CountingService:
    """The real service, counting how often every run is listed and how often a poll happened."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.listed = 0
        self.polls = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def runs(self, **kwargs):
        self.listed += 1
        return self.inner.runs(**kwargs)

    def refresh(self, **kwargs):
        self.polls += 1
        return self.inner.refresh(**kwargs)


def _service(tmp_path: Path, history: int):
    from tui.core.service import Dinf, make_cluster

    dinf = Dinf(data_dir=tmp_path / "data", config_path=tmp_path / "config.toml",
                cluster_factory=lambda config: RunningCluster(make_cluster(config)))
    _history(dinf, history)
    _live_run(dinf, tmp_path / "live")
    return CountingService(dinf)


async def test_polls_do_not_list_every_run_while_nothing_but_the_live_ones_changes(tmp_path: Path) -> None:
    from tui.ui.app import DinfApp

    service = _service(tmp_path, 30)
    app = DinfApp(service_factory=lambda: service, live_poll_s=0.05, idle_poll_s=3600)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: service.polls >= 10, what="ten polls")
        assert service.listed == 1  # the first one; the rest sent only the polled (live) run
        assert len(app.runs) == 31
        app.action_refresh_runs()  # 'r': the user asks for a fresh list
        await wait_for(pilot, lambda: service.listed == 2, what="a full list after 'r'")


async def test_runs_table_is_updated_in_place_not_rebuilt(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from tui.ui.app import DinfApp
    from tui.ui.messages import RunsRefreshed

    service = _service(tmp_path, 60)
    app = DinfApp(service_factory=lambda: service, live_poll_s=0.05, idle_poll_s=0.2)  # a full list every 0.2 s
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 61, what="every run")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 61
        calls = {"clear": 0, "add_row": 0}
        for name in calls:
            original = getattr(table, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                calls[_name] += 1
                return _original(*args, **kwargs)

            setattr(table, name, counted)
        table.move_cursor(row=table.get_row_index("30"))
        cells_before = {key: table.get_row(key) for key in ("1", "30", "60")}
        listed = service.listed
        await wait_for(pilot, lambda: service.listed >= listed + 3, what="three full lists")
        assert calls == {"clear": 0, "add_row": 0}
        for key, cells in cells_before.items():  # unchanged runs keep their very cells
            assert all(a is b for a, b in zip(table.get_row(key), cells))

        from storage import repo
        from storage.db import write_session

        with write_session(service.inner.engine) as session:  # a run appears (another process, say)
            cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
            new = repo.create_run(session=session, uid="new", name="new", mode="dp", spec={}, num_ranks=2,
                                  cluster_id=cluster.id)
            session.commit()
            new_id = new.id
        await wait_for(pilot, lambda: str(new_id) in table.rows, what="the new run's row")
        assert calls == {"clear": 0, "add_row": 1}
        assert table.get_row_index(str(new_id)) == 0  # newest first, the default sort
        assert app.screen.selected_run_id() == 30  # the cursor stayed on its run

        app.workers.cancel_group(app, "refresh")  # no full list from here on brings run 45 back
        await wait_for(pilot, lambda: not [w for w in app.workers if w.group == "refresh" and w.is_running],
                       what="the refresh loop to stop")
        gone = [record for record in app.runs.values() if record.id != 45]
        app.post_message(RunsRefreshed(gone))  # a run disappears
        await wait_for(pilot, lambda: "45" not in table.rows, what="run 45's row to go")
        assert calls == {"clear": 0, "add_row": 1} and table.row_count == 61
        assert app.screen.selected_run_id() == 30


async def test_an_elapsed_tick_renders_only_its_row_again(tmp_path: Path) -> None:
    from tui.ui.app import DinfApp
    from tui.ui.widgets.runs_table import RunsTable

    service = _service(tmp_path, 60)
    app = DinfApp(service_factory=lambda: service, live_poll_s=0.05, idle_poll_s=3600)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 61, what="every run")
        await pilot.pause()
        table = app.screen.query_one(RunsTable)
        live = next(str(r.id) for r in app.runs.values() if r.state == "RUNNING")
        rendered: list[int] = []
        original = table._render_cell

        def render_cell(row_index, column_index, *args, **kwargs):
            rendered.append(row_index)
            return original(row_index, column_index, *args, **kwargs)

        table._render_cell = render_cell
        await pilot.pause()
        rendered.clear()
        table.tick_cell(live, "elapsed", Text("12:34"))
        await pilot.pause()
        assert table.get_cell(live, "elapsed").plain == "12:34"
        assert rendered and set(rendered) == {table.get_row_index(live)}  # not the other visible rows
        assert "12:34" in table.render_lines(table.region.reset_offset)[1].text  # on screen too


async def test_a_run_in_the_list_costs_the_app_little_memory(tmp_path: Path) -> None:
    """What one more run in the database adds to what the app holds: its snapshot (spec kept as the
    stored JSON, no instance dict) and its row (plain cells, no renderables for rows off screen).
    Measured here: ~10 KB a run before (1,000 runs put dinf-tui's RSS over 150 MB at 100k lines/s,
    bench_tui.py), ~5 KB after."""
    import gc
    import tracemalloc

    from rich.cells import cached_cell_len

    from tui.ui.app import DinfApp
    from tui.ui.widgets.runs_table import RunsTable

    def held() -> int:
        # Bounded render caches are not a run's cost: rich's width cache (4,096 strings), the
        # table's caches of drawn cells and lines (rows on screen, and LRU-bounded).
        cached_cell_len.cache_clear()
        app.screen.query_one(RunsTable)._clear_caches()
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    service = _service(tmp_path, 20)
    app = DinfApp(service_factory=lambda: service, live_poll_s=0.05, idle_poll_s=3600)
    tracemalloc.start()
    try:
        async with app.run_test(size=(130, 40)) as pilot:
            await wait_for(pilot, lambda: len(app.runs) == 21, what="every run")
            table = app.screen.query_one(RunsTable)
            await wait_for(pilot, lambda: table.row_count == 21, what="every row")
            await pilot.pause(0.2)
            before = held()
            _history(service.inner, 400, spec=REALISTIC_SPEC, first=100)
            app.action_refresh_runs()
            await wait_for(pilot, lambda: table.row_count == 421, what="the 400 new rows")
            await pilot.pause(0.2)
            per_run = (held() - before) / 400
    finally:
        tracemalloc.stop()
    assert per_run < 7_000, f"each run adds {per_run:.0f} bytes to the app"


async def test_polls_do_not_redraw_the_footer(tmp_path: Path) -> None:
    """'Cancel run' follows the selected run, but the bindings (and so the footer) are refreshed only
    when whether it can be cancelled changes: every poll of a live run refreshing them kept the idle
    app at ~4% CPU (bench_tui.py)."""
    from tui.ui.app import DinfApp

    service = _service(tmp_path, 5)
    app = DinfApp(service_factory=lambda: service, live_poll_s=0.05, idle_poll_s=0.1)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: len(app.runs) == 6, what="every run")
        await pilot.pause(0.3)
        screen = app.screen
        refreshed = []
        original = screen.refresh_bindings
        screen.refresh_bindings = lambda: (refreshed.append(1), original())[1]
        polls = service.polls
        await wait_for(pilot, lambda: service.polls >= polls + 10 and service.listed >= 3, what="ten polls")
        assert refreshed == []
        screen.query_one("#runs-table").move_cursor(row=1)  # from the live run to a finished one
        await pilot.pause()
        assert refreshed == [1]
