"""dinf-tui benchmark: first frame, frames under a 100k lines/s log stream, memory with 1M lines.

Run:  .venv/bin/python tests/benchmarks/bench_tui.py [--seconds 10] [--rate 100000] [--launches 5]

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

Goals (from the issue): first frame < 0.5 s; every frame < 50 ms; no line dropped; memory bounded.
Numbers depend on the machine; compare only rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
    from tui.app import DinfApp
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
        self.max_stall = 0.0
        self._stop = False

    def install(self) -> None:
        from textual.app import App
        from textual.screen import Screen

        original_update, original_display = Screen._on_timer_update, App._display
        frames = self.frames
        displayed = [False]

        def display(app, screen, renderable):  # noqa: ANN001
            displayed[0] = True
            original_display(app, screen, renderable)

        def timed(screen):  # noqa: ANN001
            displayed[0] = False
            start = time.perf_counter()
            original_update(screen)
            if displayed[0]:  # a frame was drawn (not just a timer tick with nothing to do)
                frames.append(time.perf_counter() - start)

        Screen._on_timer_update, App._display = timed, display
        self._originals = original_update, original_display

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
    from remote.logstream import follow
    from remote.local import _read_local_from  # the local backend's own reader
    from tui.app import DinfApp
    from tui.services import RunRecord
    from worker import contract

    workdir = Path(tempfile.mkdtemp())
    paths = [workdir / "logs" / contract.launcher_log_file("77", r) for r in (0, 1)]
    record = RunRecord(
        id=1, uid="bench", name="bench", cluster="local", backend="local", experiment_id=None, mode="pp",
        state="RUNNING", state_reason=None, job_id="77", job_ids=("77",), num_ranks=2, num_gpus=0, spec={},
        resources={}, run_dir=str(workdir), output_dir=str(workdir / "out"), logs_dir=str(workdir / "logs"),
        script_path=None, local_results_dir=None, error=None, exit_code=None, load_time_s=None,
        created_at=time.time(), submitted_at=time.time(), started_at=time.time(), finished_at=None,
        ingested_at=None,
    )

    class StreamOnlyService:
        """The app's view of a service whose one run streams the benchmark files."""

        config = None
        cluster_errors: dict[str, str] = {}

        def reconcile(self):
            return [record]

        refresh = reconcile

        def runs(self):
            return [record]

        def stream_logs(self, run_id, offsets=None, **_):
            return follow(_read_local_from, [str(p) for p in paths], offsets, poll_s=0.02)

        def measurements(self, run_id):
            return []

    app = DinfApp(service_factory=StreamOnlyService, live_poll_s=1.0)
    clock = FrameClock()
    gc.collect()
    rss_before = _rss_mb()
    async with app.run_test(size=(130, 40)) as pilot:
        while app.runs_version == 0:
            await pilot.pause(0.05)
        app.open_run(1)
        await pilot.pause(0.5)
        clock.install()
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
    async with app.run_test(size=(130, 40)) as pilot:
        app.tail()
        clock.install()
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
    args = parser.parse_args()
    os.environ.setdefault("DINF_HOME", tempfile.mkdtemp())

    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if not args.skip_launch:
        print("\n## launch -> first frame (ms: median (min-max), n) in tmux 130x40")
        print(f"{'app':40} | {'first frame':28} | content ready")
        for label, first, ready in bench_launch(args.launches):
            print(f"{label:40} | {first:28} | {ready}")
        print(f"heavy modules after opening the app, its service and the new-run form: {torch_check()}")

    print(f"\n## {args.rate} lines/s for {args.seconds:.0f} s (two rank files, 100-byte lines), headless 130x40")
    dinf = asyncio.run(stream_into_dinf(args.rate, args.seconds))
    stock = asyncio.run(stream_into_stock_log(args.rate, args.seconds))
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
