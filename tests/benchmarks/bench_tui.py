"""dinf-tui benchmark: first frame, frames at 100k lines/s, memory with 1M lines, a 1,000-run history.

Run:  .venv/bin/python tests/benchmarks/bench_tui.py [--seconds 10] [--rate 100000] [--launches 5]
      [--history 1000] [--idle-seconds 10] [--big-lines 2000000] [--skip-launch] [--skip-stream]

1. Launch -> first frame, in a real terminal (a private tmux server, polled with capture-pane
   every 10 ms; the clock starts when the pane's shell is released through a FIFO, so tmux's own
   start is not counted). Baseline in the same run: a bare Textual "hello" app. Also checks, in a
   separate process that opens the app with its real service, that torch was never imported.
2. Frames while a separate writer process appends 100-byte lines at `--rate` lines/s to two
   per-rank log files, followed by the real follower (remote.logstream.follow, what the local
   backend uses) into the real app (headless). Per frame: time of Textual's screen update
   (layout + compositor + output); the UI event loop's worst stall (a 5 ms probe task); lines
   written vs lines that reached the views (dropped must be 0). Baseline in the same run: Textual's
   stock `Log` widget (max_lines=50k) fed by the same follower at the same rate.
3. Memory: process RSS before and after the stream (the run above ends with >= 1M lines through
   the views when rate x seconds >= 1M), against a baseline that keeps every line in a list.
4. A large history (issue 15), each case in its own process over a real SQLite file built through
   storage.repo: `--history` (1,000) finished runs plus one live run, beside the baseline of a
   clean database with the same live run. Idle CPU of the process over `--idle-seconds` on the
   runs screen; then on the run screen at `--rate` lines/s: the highest RSS, and key -> frame
   ('f' posted every ~0.2 s; time until the first frame drawn after the app handled it). Then
   opening a live run whose log already holds `--big-lines` lines: lines read, RSS growth and
   time until the last line shows, reading from byte 0 (baseline) vs the tail only.

Goals (from the issues): first frame < 0.5 s; every frame < 50 ms; no line dropped; memory bounded;
with 1,000 runs: idle CPU < 3 %, RSS < 150 MB, key -> frame p50 < 50 ms at 100k lines/s.
Numbers depend on the machine; compare only rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

WRITER = textwrap.dedent(
    """
    import sys, time
    paths, rate, seconds = sys.argv[1:-2], int(sys.argv[-2]), float(sys.argv[-1])
    files = [open(p, "a", buffering=1 << 20) for p in paths]
    batch = max(1, rate // 200 // len(files))  # 5 ms batches per file
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for rank, f in enumerate(files):
            now = time.strftime("%H:%M:%S")
            f.write("".join(f"{now} rank {rank} L{n + i:09d} " + "x" * 70 + "\\n" for i in range(batch)))
            f.flush()
        n += batch
        target = start + n * len(files) / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    for f in files:
        f.close()
    print(n * len(files))
    """
)


# --- 1. launch -> first frame -----------------------------------------------------------------


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", "dinfbench", *args], capture_output=True, text=True).stdout


def time_launch(command: str, ready_text: str, env: dict[str, str], timeout: float = 20.0) -> tuple[float, float]:
    """(first non-empty frame, frame containing ready_text) in seconds after launch."""
    fifo = Path(tempfile.mkdtemp()) / "go"
    os.mkfifo(fifo)
    envs = " ".join(f"{k}={v}" for k, v in env.items())
    _tmux("kill-server")
    _tmux("new-session", "-d", "-x", "130", "-y", "40", f"read x < {fifo}; exec env -u COLUMNS -u LINES {envs} {command}")
    time.sleep(0.3)
    with open(fifo, "w") as go:
        start = time.perf_counter()
        go.write("\n")
    first = ready = None
    while time.perf_counter() - start < timeout and ready is None:
        screen = _tmux("capture-pane", "-p")
        now = time.perf_counter() - start
        if first is None and screen.strip():
            first = now
        if ready_text in screen:
            ready = now
        time.sleep(0.01)
    _tmux("kill-server")
    return first or float("nan"), ready or float("nan")


def bench_launch(launches: int) -> list[tuple[str, str, str]]:
    if shutil.which("tmux") is None:
        return [("launch", "tmux not installed", "-")]
    python = sys.executable
    hello = Path(tempfile.mkdtemp()) / "hello.py"
    hello.write_text(
        "from textual.app import App\nfrom textual.widgets import Static\n"
        "class Hello(App):\n    def compose(self):\n        yield Static('hello from textual')\nHello().run()\n"
    )
    dinf_tui = str(Path(python).with_name("dinf-tui"))
    rows = []
    for label, command, ready_text in (
        ("bare Textual hello (baseline)", f"{python} {hello}", "hello from textual"),
        ("dinf-tui, first launch (empty home)", dinf_tui, "No runs yet"),
    ):
        firsts, readies = [], []
        for _ in range(launches + 1):  # one warm-up
            home = tempfile.mkdtemp()
            first, ready = time_launch(command, ready_text, {"DINF_HOME": home, "TERM": "xterm-256color"})
            firsts.append(first)
            readies.append(ready)
        firsts, readies = firsts[1:], readies[1:]
        rows.append((label, _ms(firsts), _ms(readies)))
    return rows


def _ms(values: list[float]) -> str:
    ok = [v for v in values if v == v]
    if not ok:
        return "never"
    return f"{statistics.median(ok) * 1000:.0f} ({min(ok) * 1000:.0f}-{max(ok) * 1000:.0f}), n={len(ok)}"


TORCH_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from tui.ui.app import DinfApp
    async def main():
        app = DinfApp()
        async with app.run_test() as pilot:
            while app.runs_version == 0:
                await pilot.pause(0.05)
            await pilot.press("n"); await pilot.pause(0.2)
        heavy = sorted(m for m in ("torch", "deepspeed", "transformers") if m in sys.modules)
        print("imported:", ",".join(heavy) or "none")
    asyncio.run(main())
    """
)


def torch_check() -> str:
    env = {**os.environ, "DINF_HOME": tempfile.mkdtemp()}
    out = subprocess.run([sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, env=env, cwd=ROOT)
    return (out.stdout.strip().splitlines() or [out.stderr.strip()[-200:]])[-1]


# --- 2 + 3. streaming -------------------------------------------------------------------------


class FrameClock:
    """Times every screen update and probes how long the UI loop is ever blocked."""

    def __init__(self) -> None:
        self.frames: list[float] = []
        self.ends: list[float] = []
        """perf_counter() at the end of each drawn frame (key -> frame looks up the first after a key)."""
        self.max_stall = 0.0
        self._stop = False

    def install(self) -> None:
        from textual.app import App
        from textual.screen import Screen

        original_update, original_display = Screen._on_timer_update, App._display
        frames, ends = self.frames, self.ends
        displayed = [False]

        def display(app, screen, renderable):
            displayed[0] = True
            original_display(app, screen, renderable)

        def timed(screen):
            displayed[0] = False
            start = time.perf_counter()
            original_update(screen)
            if displayed[0]:  # a frame was drawn (not just a timer tick with nothing to do)
                end = time.perf_counter()
                frames.append(end - start)
                ends.append(end)

        Screen._on_timer_update, App._display = timed, display
        self._originals = original_update, original_display

    def clear(self) -> None:
        self.frames.clear()
        self.ends.clear()

    def uninstall(self) -> None:
        from textual.app import App
        from textual.screen import Screen

        Screen._on_timer_update, App._display = self._originals

    async def probe(self) -> None:
        while not self._stop:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.max_stall = max(self.max_stall, time.perf_counter() - start - 0.005)


def start_writer(paths: list[Path], rate: int, seconds: float) -> subprocess.Popen:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *map(str, paths), str(rate), str(seconds)], stdout=subprocess.PIPE, text=True
    )


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def stream_into_dinf(rate: int, seconds: float) -> dict[str, object]:
    from remote.local import _read_local_from  # the local backend's own reader
    from remote.logstream import follow
    from tui.core.service import RunRecord
    from tui.ui.app import DinfApp
    from worker import contract

    workdir = Path(tempfile.mkdtemp())
    paths = [workdir / "logs" / contract.launcher_log_file("77", r) for r in (0, 1)]
    record = RunRecord(
        id=1, uid="bench", name="bench", cluster="local", backend="local", experiment_id=None, mode="pp",
        state="RUNNING", state_reason=None, job_id="77", job_ids=("77",), num_ranks=2, num_gpus=0, spec_json="{}",
        resources_json="{}", run_dir=str(workdir), output_dir=str(workdir / "out"), logs_dir=str(workdir / "logs"),
        script_path=None, local_results_dir=None, error=None, exit_code=None, load_time_s=None,
        created_at=time.time(), submitted_at=time.time(), started_at=time.time(), finished_at=None,
        ingested_at=None,
    )

    class StreamOnlyService:
        """The app's view of a service whose one run streams the benchmark files."""

        config = SimpleNamespace(clusters={}, default_cluster="local")  # no cluster to connect to
        cluster_errors: dict[str, str] = {}

        def reconcile(self):
            return [record]

        refresh = reconcile

        def runs_shape(self):
            return (1, 1, 1)

        def runs(self):
            return [record]

        def stream_logs(self, run_id, offsets=None, **_):
            return follow(_read_local_from, [str(p) for p in paths], offsets, poll_s=0.02)

        def measurements(self, run_id):
            return []

        def correctness(self, run_id):
            return []

    app = DinfApp(service_factory=StreamOnlyService, live_poll_s=1.0)
    clock = FrameClock()
    gc.collect()
    rss_before = _rss_mb()
    clock.install()  # before any screen exists: a screen's update timer holds the method it was made with
    async with app.run_test(size=(130, 40)) as pilot:
        while app.runs_version == 0:
            await pilot.pause(0.05)
        app.open_run(1)
        await pilot.pause(0.5)
        clock.clear()
        probe = asyncio.create_task(clock.probe())
        writer = start_writer(paths, rate, seconds)
        logs = app.run_logs[1]
        rss_half = None
        while writer.poll() is None:
            await pilot.pause(0.1)
            if rss_half is None and sum(b.received for b in logs.ranks.values()) >= rate * seconds / 2:
                rss_half = _rss_mb()  # if memory is bounded, the second half adds ~nothing
        written = int(writer.stdout.read().strip() or 0)
        stopped = time.perf_counter()
        while sum(b.received for b in logs.ranks.values()) < written and time.perf_counter() - stopped < 60:
            await pilot.pause(0.02)
        catch_up = time.perf_counter() - stopped
        await pilot.pause(0.2)
        clock._stop = True
        await probe
        clock.uninstall()
        received = sum(b.received for b in logs.ranks.values())
        kept = sum(len(b.lines) for b in logs.ranks.values()) + len(logs.merged.lines)
        view = app.screen.query_one("#log-merged")
        last_visible = logs.merged.visible[-1] if logs.merged.visible else ""
        rss_after = _rss_mb()
    return {
        "frames": clock.frames, "stall": clock.max_stall, "written": written, "received": received,
        "merged": logs.merged.received, "kept": kept, "catch_up": catch_up, "rss_before": rss_before,
        "rss_after": rss_after, "rss_half": rss_half, "following": view.scroll_y == view.max_scroll_y, "last": last_visible[:40],
    }


async def stream_into_stock_log(rate: int, seconds: float) -> dict[str, object]:
    """Baseline: Textual's own Log widget, fed by the same follower at the same rate."""
    from textual import work
    from textual.app import App
    from textual.widgets import Log

    from remote.local import _read_local_from
    from remote.logstream import follow

    workdir = Path(tempfile.mkdtemp())
    paths = [workdir / f"rank{r}.out" for r in (0, 1)]
    for p in paths:
        p.touch()
    stop = threading.Event()

    class StockLogApp(App):
        received = 0

        def compose(self):
            yield Log(max_lines=50_000)

        @work(thread=True)
        def tail(self) -> None:
            for batch in follow(_read_local_from, [str(p) for p in paths], None, poll_s=0.02, stop=stop):
                lines = [line for chunk in batch for line in chunk.lines]
                if lines:
                    self.call_from_thread(self.add, lines)

        def add(self, lines: list[str]) -> None:
            self.received += len(lines)
            self.query_one(Log).write_lines(lines)

    app = StockLogApp()
    clock = FrameClock()
    gc.collect()
    rss_before = _rss_mb()
    clock.install()
    async with app.run_test(size=(130, 40)) as pilot:
        app.tail()
        clock.clear()
        probe = asyncio.create_task(clock.probe())
        writer = start_writer(paths, rate, seconds)
        while writer.poll() is None:
            await pilot.pause(0.1)
        written = int(writer.stdout.read().strip() or 0)
        stopped = time.perf_counter()
        while app.received < written and time.perf_counter() - stopped < 60:
            await pilot.pause(0.02)
        catch_up = time.perf_counter() - stopped
        stop.set()
        clock._stop = True
        await probe
        clock.uninstall()
        rss_after = _rss_mb()
    return {"frames": clock.frames, "stall": clock.max_stall, "written": written, "received": app.received,
            "catch_up": catch_up, "rss_before": rss_before, "rss_after": rss_after}


def memory_unbounded_baseline(lines: int) -> float:
    """RSS growth of simply keeping every line (what an unbounded viewer does)."""
    gc.collect()
    before = _rss_mb()
    kept = [f"20:00:00 rank 0 L{i:09d} " + "x" * 70 for i in range(lines)]
    after = _rss_mb()
    del kept
    gc.collect()
    return after - before


# --- 4. a large history -----------------------------------------------------------------------


def fill_history(dinf, count: int) -> None:
    """`count` finished, ingested runs (the state history of a real one), written in one transaction."""
    from storage import repo
    from storage.db import write_session

    spec = {"model": {"config": "tiny", "seed": 7}, "mode": "pp", "dtype": "float16", "batch_size": 8,
            "max_new_tokens": 64, "num_requests": 32, "prompts": "builtin", "micro_batches": 2}
    with write_session(dinf.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        for i in range(count):
            at = time.time() - 86_400 + i
            run = repo.create_run(session=session, uid=f"old-{i}", name=f"history run {i}", mode="pp",
                                  spec={**spec, "seed": i}, num_ranks=2, cluster_id=cluster.id, at=at)
            for state in ("SUBMITTED", "PENDING", "RUNNING", "COMPLETED"):
                repo.record_state(session=session, run=run, state=state, at=at)
            repo.update_run(session=session, run=run, job_id=str(1000 + i), job_ids_json=f'["{1000 + i}"]',
                            output_dir=f"/tmp/none/{i}/out", logs_dir=f"/tmp/none/{i}/logs",
                            submitted_at=at, started_at=at, finished_at=at + 30, ingested_at=at + 31, exit_code=0)
        session.commit()


def add_live_run(dinf, workdir: Path, job_id: str) -> int:
    """One RUNNING run whose launcher logs are the benchmark's files (its job reads as RUNNING)."""
    from storage import repo
    from storage.db import write_session

    with write_session(dinf.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        run = repo.create_run(session=session, uid="live", name="live run", mode="pp", spec={"live": True},
                              num_ranks=2, cluster_id=cluster.id)
        for state in ("SUBMITTED", "RUNNING"):
            repo.record_state(session=session, run=run, state=state)
        repo.update_run(session=session, run=run, job_id=job_id, job_ids_json=f'["{job_id}"]',
                        run_dir=str(workdir), output_dir=str(workdir / "out"), logs_dir=str(workdir / "logs"),
                        submitted_at=time.time(), started_at=time.time())
        session.commit()
        return run.id


class RunningCluster:
    """The real local backend (logs are read by it), except that every job reads as RUNNING."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def status(self, job_ids: list[str]):
        from remote.cluster import JobState, JobStatus

        return {job_id: JobStatus(job_id, JobState.RUNNING) for job_id in job_ids}


def _cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _live_paths(home: Path) -> tuple[Path, list[Path]]:
    from worker import contract

    workdir = home / "live"
    return workdir, [workdir / "logs" / contract.launcher_log_file("77", r) for r in (0, 1)]


def _build_live_db(home: Path, history: int, big_lines: int = 0) -> int:
    """The SQLite file (`history` old runs, one live run) and its two rank logs; returns the live run's id.

    Runs in a child process (`run_case("build", ...)`): building 1,000 runs leaves the builder's heap
    grown, which would be counted as the app's RSS if the measured process built them itself.
    """
    from tui.core.service import Dinf, make_cluster

    workdir, paths = _live_paths(home)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    if big_lines:  # a log that already holds many lines when the run is opened
        for rank, path in enumerate(paths):
            with open(path, "w", buffering=1 << 22) as f:
                block = big_lines // len(paths)
                f.writelines("".join(f"20:00:00 rank {rank} L{start + i:09d} " + "x" * 70 + "\n"
                                    for i in range(min(10_000, block - start))) for start in range(0, block, 10_000))
    dinf = Dinf(db_path=home / "dinf.db", data_dir=home, cluster_factory=lambda config: RunningCluster(make_cluster(config)))
    fill_history(dinf, history)
    return add_live_run(dinf, workdir, "77")


def _open_live_service(home: Path, history: int, big_lines: int = 0):
    """A real Dinf over a real SQLite file built by a child process: `history` old runs, one live run."""
    from tui.core.service import Dinf, make_cluster

    run_id = run_case("build", home=str(home), history=history, big_lines=big_lines)["run_id"]
    _, paths = _live_paths(home)
    dinf = Dinf(db_path=home / "dinf.db", data_dir=home, cluster_factory=lambda config: RunningCluster(make_cluster(config)))
    return dinf, run_id, paths


async def _press_timed(app, pilot, key: str, clock: FrameClock, handled: list[float]) -> float | None:
    """Seconds from posting `key` until the first frame drawn after the app handled it."""
    from textual import events

    handled.clear()
    posted = time.perf_counter()
    app.post_message(events.Key(key, key))
    deadline = posted + 5.0
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.002)
        if handled and clock.ends and clock.ends[-1] > handled[0]:
            first = next(end for end in clock.ends if end > handled[0])
            return first - posted
    return None


async def history_case(history: int, rate: int, seconds: float, idle_s: float) -> dict[str, object]:
    """Idle CPU on the runs screen, then RSS and key -> frame while the live run streams at `rate`."""
    from tui.ui.app import DinfApp
    from tui.ui.screens.run import RunScreen

    home = Path(tempfile.mkdtemp())
    dinf, run_id, paths = _open_live_service(home, history)
    app = DinfApp(service_factory=lambda: dinf)
    clock = FrameClock()
    handled: list[float] = []
    original_toggle = RunScreen.action_toggle_follow

    def toggle(screen):
        handled.append(time.perf_counter())
        original_toggle(screen)

    RunScreen.action_toggle_follow = toggle
    clock.install()
    async with app.run_test(size=(130, 40)) as pilot:
        while len(app.runs) < history + 1:
            await pilot.pause(0.05)
        await pilot.pause(2.0)  # settle: first refreshes, first paint of every row
        cpu, wall = _cpu_s(), time.perf_counter()
        await asyncio.sleep(idle_s)
        idle_cpu = (_cpu_s() - cpu) / (time.perf_counter() - wall) * 100
        app.open_run(run_id)
        await pilot.pause(0.5)
        clock.clear()
        writer = start_writer(paths, rate, seconds)
        keys, rss_max = [], 0.0
        while writer.poll() is None:
            latency = await _press_timed(app, pilot, "f", clock, handled)
            if latency is not None:
                keys.append(latency)
            rss_max = max(rss_max, _rss_mb())
            await asyncio.sleep(0.2)
        written = int(writer.stdout.read().strip() or 0)
        logs = app.run_logs[run_id]
        stopped = time.perf_counter()
        while logs.merged.received < written and time.perf_counter() - stopped < 60:
            await pilot.pause(0.05)
        clock.uninstall()
        rss_max = max(rss_max, _rss_mb())
        received = logs.merged.received
    RunScreen.action_toggle_follow = original_toggle
    return {"idle_cpu": idle_cpu, "rss_max": rss_max, "keys": keys, "frames": clock.frames,
            "written": written, "received": received}


async def open_big_case(big_lines: int, tail: bool) -> dict[str, object]:
    """Open a live run whose log already holds `big_lines` lines: RSS, time to its last line, lines read."""
    from tui.ui.app import DinfApp

    home = Path(tempfile.mkdtemp())
    dinf, run_id, paths = _open_live_service(home, 0, big_lines)
    kwargs = {} if tail else {"log_tail_bytes": None}
    app = DinfApp(service_factory=lambda: dinf, **kwargs)
    last = f"L{big_lines // 2 - 1:09d}"
    async with app.run_test(size=(130, 40)) as pilot:
        while not app.runs:
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        gc.collect()
        rss_before, rss_max = _rss_mb(), 0.0
        start = time.perf_counter()
        app.open_run(run_id)
        logs = app.logs_for(run_id)
        shown = None
        while time.perf_counter() - start < 120:
            await pilot.pause(0.05)
            rss_max = max(rss_max, _rss_mb())
            if all(b.lines and last in b.lines[-1] for b in logs.ranks.values()) and len(logs.ranks) == 2:
                shown = time.perf_counter() - start
                break
        received = logs.merged.received
    return {"rss_before": rss_before, "rss_max": rss_max, "shown": shown, "received": received,
            "log_mb": sum(p.stat().st_size for p in paths) / 2**20}


def run_case(kind: str, **params: object) -> dict[str, object]:
    """One case in a fresh interpreter, so that RSS and CPU belong to it alone."""
    out = subprocess.run([sys.executable, __file__, "--case", json.dumps({"kind": kind, **params})], check=False,
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DINF_HOME": tempfile.mkdtemp()})
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise SystemExit(f"case {kind} {params} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _case_main(spec: str) -> None:
    params = json.loads(spec)
    kind = params.pop("kind")
    if kind == "build":
        print(json.dumps({"run_id": _build_live_db(Path(params["home"]), params["history"], params["big_lines"])}))
        return
    case = {"history": history_case, "open_big": open_big_case}[kind]
    print(json.dumps(asyncio.run(case(**params))))


def _p50_max(values: list[float]) -> str:
    if not values:
        return "no samples"
    return f"{statistics.median(values) * 1000:5.0f} / {max(values) * 1000:4.0f} ms (n={len(values)})"


def bench_history(history: int, rate: int, seconds: float, idle_s: float, big_lines: int) -> None:
    print(f"\n## a large history: idle CPU over {idle_s:.0f} s with one live run (runs screen), then {rate} lines/s "
          f"for {seconds:.0f} s (run screen, 'f' pressed every ~0.2 s)")
    print(f"{'database':34} | idle CPU | RSS max at {rate // 1000}k/s | key -> frame p50 / max | frame p50 | dropped")
    for label, runs in (("clean: 1 live run (baseline)", 0), (f"{history:,} runs + 1 live run", history)):
        r = run_case("history", history=runs, rate=rate, seconds=seconds, idle_s=idle_s)
        frames = statistics.median(r["frames"]) * 1000 if r["frames"] else float("nan")
        print(f"{label:34} | {r['idle_cpu']:6.1f} % | {r['rss_max']:10.0f} MB | {_p50_max(r['keys']):22} | "
              f"{frames:6.1f} ms | {r['written'] - r['received']}")
    print("goals: idle CPU < 3 %, RSS < 150 MB, key -> frame p50 < 50 ms")
    if not big_lines:
        return
    print(f"\n## opening a live run whose log already holds {big_lines:,} lines")
    print(f"{'reading':34} | log size | lines read | RSS growth (max) | last line shown after")
    for label, tail in (("from byte 0 (baseline)", False), ("the tail only", True)):
        r = run_case("open_big", big_lines=big_lines, tail=tail)
        shown = f"{r['shown']:.2f} s" if r["shown"] is not None else "not within 120 s"
        print(f"{label:34} | {r['log_mb']:5.0f} MB | {r['received']:10,} | {r['rss_max'] - r['rss_before']:13.0f} MB "
              f"| {shown}")


def frame_summary(frames: list[float]) -> str:
    if not frames:
        return "no frames"
    ordered = sorted(frames)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    over = sum(f > 0.050 for f in frames)
    return (f"n={len(frames)} median {statistics.median(frames) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms, >50 ms: {over}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100_000, help="lines/s over both ranks")
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--skip-launch", action="store_true")
    parser.add_argument("--skip-stream", action="store_true", help="skip sections 2 and 3")
    parser.add_argument("--history", type=int, default=1000, help="runs in the large-history database")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--big-lines", type=int, default=2_000_000, help="lines already in the log opened; 0 skips")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case of section 4, in a child process
    args = parser.parse_args()
    if args.case:
        _case_main(args.case)
        return
    os.environ.setdefault("DINF_HOME", tempfile.mkdtemp())

    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if not args.skip_launch:
        print("\n## launch -> first frame (ms: median (min-max), n) in tmux 130x40")
        print(f"{'app':40} | {'first frame':28} | content ready")
        for label, first, ready in bench_launch(args.launches):
            print(f"{label:40} | {first:28} | {ready}")
        print(f"heavy modules after opening the app, its service and the new-run form: {torch_check()}")

    if not args.skip_stream:
        bench_stream(args.rate, args.seconds)
    bench_history(args.history, args.rate, args.seconds, args.idle_seconds, args.big_lines)


def bench_stream(rate: int, seconds: float) -> None:
    print(f"\n## {rate} lines/s for {seconds:.0f} s (two rank files, 100-byte lines), headless 130x40")
    dinf = asyncio.run(stream_into_dinf(rate, seconds))
    stock = asyncio.run(stream_into_stock_log(rate, seconds))
    print(f"{'viewer':34} | {'frame time (screen update)':62} | max UI stall | written | received | dropped | catch-up")
    for label, r in (("dinf-tui run screen (merged view)", dinf), ("Textual Log, max_lines=50k (base)", stock)):
        print(f"{label:34} | {frame_summary(r['frames']):62} | {r['stall'] * 1000:9.1f} ms | {r['written']:7} | "
              f"{r['received']:8} | {r['written'] - r['received']:7} | {r['catch_up']:.2f} s")
    print(f"dinf-tui: merged view received {dinf['merged']} lines, still following: {dinf['following']}, "
          f"last line shown: {dinf['last']!r}")

    print(f"\n## memory after {dinf['received']} lines through the views")
    print(f"{'case':46} | RSS growth")
    half = dinf["rss_half"]
    print(f"{'dinf-tui (3 views, 50k lines kept each)':46} | {dinf['rss_after'] - dinf['rss_before']:.0f} MB "
          f"(lines held: {dinf['kept']}; RSS at half the lines {half - dinf['rss_before']:.0f} MB)"
          if half is not None else f"{'dinf-tui':46} | {dinf['rss_after'] - dinf['rss_before']:.0f} MB")
    print(f"{'Textual Log max_lines=50k (baseline)':46} | {stock['rss_after'] - stock['rss_before']:.0f} MB")
    print(f"{'a list holding every line (unbounded baseline)':46} | {memory_unbounded_baseline(dinf['received']):.0f} MB")


if __name__ == "__main__":
    main()
