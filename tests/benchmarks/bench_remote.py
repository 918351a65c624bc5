"""Benchmark of the remote layer against the real minicluster; prints one table.

    bash tests/cluster/minicluster up
    .venv/bin/python tests/benchmarks/bench_remote.py [--quick]

Rows: squeue and sacct round trips over one open connection (baseline: `true` on the same
connection, a fresh connection per call, and Nagle left on); latency from a line written on the
remote to its delivery by the log streamer (p50, p90; baseline: `tail -F` on an exec channel);
the streamer's ingest rate (lines/s; baseline: one SFTP download of the same file); scheduler calls
per minute with 1, 10 and 100 tracked (held, pending) jobs (baseline: one squeue per job per poll);
and scheduler commands per minute with the real app's refresh loop driving `Dinf.refresh` over 3
running jobs, then idle (goal <= 12 and <= 1; baseline: one poll per loop tick, as before the
poller's backoff keyed on state changes), and with a run screen watching one of them (5 s, no backoff). Commands are counted by a wrapper around the SSH
connection's `run`: every squeue, sacct, sbatch, scancel and sinfo that reaches the login node.
Every baseline is measured in the same run. No thresholds: this reports, it does not judge.

    .venv/bin/python tests/benchmarks/bench_remote.py --only app   # just the app's polling rows
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from remote import slurm  # noqa: E402
from remote.poller import JobPoller  # noqa: E402
from remote.quoting import join_argv  # noqa: E402
from tests.conftest import _load_minicluster  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(table, name, values, unit, note=""):
    table.append((name, f"{statistics.median(values):.1f}", f"{percentile(values, 0.9):.1f}", unit, note))


def round_trips(mc, table, n):
    conn = mc.connection()
    conn.open()
    row(table, "`true` round trip (baseline)", timed(lambda: conn.run(["true"]), n), "ms", "one connection")
    row(table, "squeue round trip", timed(lambda: conn.run(slurm.squeue_argv(["1"]), check=False), n), "ms", "one connection")
    row(table, "sacct round trip", timed(lambda: conn.run(slurm.sacct_status_argv(["1"])), n), "ms", "one connection")

    def fresh():
        c = mc.connection()
        c.run(slurm.squeue_argv(["1"]), check=False)
        c.close()

    row(table, "squeue, new connection each (baseline)", timed(fresh, max(5, n // 3)), "ms", "connect+auth+run")
    conn._client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    row(table, "squeue, Nagle on (baseline)", timed(lambda: conn.run(slurm.squeue_argv(["1"]), check=False), max(5, n // 3)),
        "ms", "paramiko default")
    conn.close()


WRITER = (
    "import time,sys\n"
    "f=open(sys.argv[1],'a',buffering=1)\n"
    "for i in range(int(sys.argv[2])):\n"
    "    f.write('%.6f %d\\n' % (time.time(), i)); time.sleep(float(sys.argv[3]))\n"
)


def line_latency(mc, table, lines, poll_s):
    cluster = mc.cluster()
    conn = cluster.connection
    path = f"{cluster.workdir}/latency-{uuid.uuid4().hex[:6]}.log"
    conn.makedirs(cluster.workdir)
    latencies: list[float] = []
    stop = threading.Event()

    def write():
        conn.run(["python3", "-c", WRITER, path, str(lines), "0.02"], timeout_s=600)
        time.sleep(2 * poll_s + 0.2)
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    for batch in cluster.stream_logs([path], poll_s=poll_s, stop=stop):
        now = time.time()
        for chunk in batch:
            latencies += [(now - float(line.split()[0])) * 1000 for line in chunk.lines]
    writer.join()
    row(table, f"line write -> delivery (poll {poll_s}s)", latencies, "ms", f"{len(latencies)} lines")

    # Baseline: tail -F on an exec channel (one channel per file, pushes as soon as the file grows).
    path2 = path + ".tail"
    conn.run(["touch", path2])
    tail_lat: list[float] = []
    chan = conn._client.get_transport().open_session()
    chan.exec_command(join_argv(["tail", "-n", "+1", "-F", path2]))
    writer2 = threading.Thread(target=lambda: conn.run(["python3", "-c", WRITER, path2, str(lines), "0.02"], timeout_s=600))
    writer2.start()
    buffer = b""
    while len(tail_lat) < lines:
        buffer += chan.recv(65536)
        now = time.time()
        *complete, buffer = buffer.split(b"\n")
        tail_lat += [(now - float(line.split()[0])) * 1000 for line in complete if line.strip()]
    chan.close()
    writer2.join()
    row(table, "line write -> delivery, tail -F (baseline)", tail_lat, "ms", f"{len(tail_lat)} lines")
    conn.run(["rm", "-f", path, path2])
    cluster.close()


def ingest_rate(mc, table, lines):
    cluster = mc.cluster()
    conn = cluster.connection
    conn.makedirs(cluster.workdir)
    path = f"{cluster.workdir}/ingest.log"
    conn.run(["python3", "-c", f"import sys\nwith open(sys.argv[1],'w') as f:\n    for i in range({lines}): f.write('rank 0 step %d some log text of typical length here\\n' % i)", path])
    rates, base = [], []
    for _ in range(3):
        got = 0
        t0 = time.perf_counter()
        stream = cluster.stream_logs([path], poll_s=0.01)
        while got < lines:
            got += sum(len(c.lines) for c in next(stream))
        stream.close()
        rates.append(lines / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        n = len(conn.get_bytes(path).splitlines())
        base.append(n / (time.perf_counter() - t0))
    table.append(("streamer ingest rate", f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f} (min)", "lines/s",
                  f"{lines:,} lines"))
    table.append(("one SFTP download (baseline)", f"{statistics.median(base):,.0f}", f"{min(base):,.0f} (min)", "lines/s",
                  "same file"))
    conn.run(["rm", "-f", path])
    cluster.close()


def scheduler_calls(mc, table, window_s):
    cluster = mc.cluster()
    conn = cluster.connection
    held = [slurm.parse_sbatch_job_id(conn.run(["sbatch", "--parsable", "--hold", "-J", "bench-held", "--wrap", "true"]).stdout)
            for _ in range(100)]
    try:
        for n in (1, 10, 100):
            poller = JobPoller(cluster.status, active_s=2.0, idle_max_s=30.0)
            for job_id in held[:n]:
                poller.track(job_id)
            calls_before = cluster.scheduler_calls
            durations = []
            deadline = time.monotonic() + window_s
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                if poller.poll_if_due() is not None:
                    durations.append((time.perf_counter() - t0) * 1000)
                time.sleep(min(0.05, poller.wait_s() or 0.05))
            per_min = (cluster.scheduler_calls - calls_before) * 60 / window_s
            naive = n * 60 / 2.0
            table.append((f"scheduler calls/min, {n} tracked job(s)", f"{per_min:.1f}", f"naive {naive:.0f}", "calls/min",
                          f"batched call {statistics.median(durations):.0f} ms; idle backoff"))
    finally:
        conn.run(["scancel", *held], check=False)
        cluster.close()


_SCHEDULER_COMMAND = re.compile(r"\b(squeue|sacct|sbatch|scancel|sinfo|sstat|scontrol)\b")


class CountingConnection:
    """Counts the scheduler commands (and round trips) that go through an SshConnection's `run`."""

    def __init__(self, connection):
        self.connection = connection
        self.commands = 0
        self.round_trips = 0
        self._run = connection.run
        connection.run = self.run

    def run(self, argv, *args, command=None, **kwargs):
        line = command if command is not None else join_argv(argv)
        found = len(_SCHEDULER_COMMAND.findall(line))
        if found:
            self.commands += found
            self.round_trips += 1
        return self._run(argv, *args, command=command, **kwargs)


def app_polling(mc, table, running_s: float, idle_s: float, *, baseline: bool = False):
    """The real DinfApp (headless) over a Dinf with 3 running `sleep` jobs on the minicluster."""
    from remote.cluster import Resources
    from tui.core.service import Dinf
    from tui.ui.app import DinfApp
    from worker.contract import RunSpec

    home = Path(tempfile.mkdtemp(prefix="bench-app-"))
    (home / "config.toml").write_text('[clusters.mini]\nhost = "mini"\n')
    cluster = mc.cluster(job_command=["sleep", "600"])
    counter = CountingConnection(cluster.connection)
    dinf = Dinf(data_dir=home, config_path=home / "config.toml", cluster_factory=lambda cfg: cluster)
    if baseline:  # as before: every refresh polls (whole-record comparison never backed off)
        dinf._pollers["mini"] = JobPoller(cluster.status, active_s=0.0, idle_max_s=0.0)
    runs = [dinf.submit(dinf.new_run(cluster="mini", spec=RunSpec(), resources=Resources(), name=f"bench-{i}").id)
            for i in range(3)]
    deadline = time.monotonic() + 60
    while any(dinf.run(r.id).state != "RUNNING" for r in runs):
        dinf.refresh(force=True)
        if time.monotonic() > deadline:
            sys.exit("bench: the 3 sleep jobs never all ran")
        time.sleep(0.5)
    rows = []

    async def drive():
        app = DinfApp(service_factory=lambda: dinf)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.service is None or not app.runs:
                await pilot.pause(0.1)
            windows = [("3 running jobs", running_s), ("3 running, 1 watched", running_s / 2), ("idle", idle_s)]
            for label, window in windows if not baseline else [windows[0], windows[2]]:
                if label == "3 running, 1 watched":  # what an open run screen may ask for
                    dinf.watch_run(runs[0].id)
                if label == "idle":
                    dinf.unwatch_run(runs[0].id)
                    for r in runs:
                        dinf.cancel(r.id)
                    await pilot.pause(3)  # the app sees them end
                before_c, before_r = counter.commands, counter.round_trips
                await asyncio.sleep(window)
                rows.append((label, (counter.commands - before_c) * 60 / window,
                             (counter.round_trips - before_r) * 60 / window))

    try:
        asyncio.run(drive())
    finally:
        for r in runs:
            if not dinf.run(r.id).finished:
                dinf.cancel(r.id)
        dinf.close()
    name = "app refresh loop, every tick polls (baseline)" if baseline else "app refresh loop, Dinf.refresh"
    windows = {"3 running jobs": running_s, "3 running, 1 watched": running_s / 2, "idle": idle_s}
    for label, commands, trips in rows:
        table.append((f"{name}: {label}", f"{commands:.1f}", f"{trips:.1f} trips", "cmds/min",
                      f"over {windows[label]:.0f} s; sacct only once a job ends"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", choices=("app",), help="only these rows")
    args = parser.parse_args()
    mc = _load_minicluster()
    if isinstance(mc, str):
        sys.exit(mc)
    n = 10 if args.quick else 40
    table: list[tuple[str, str, str, str, str]] = []
    if args.only is None:
        round_trips(mc, table, n)
        line_latency(mc, table, 50 if args.quick else 200, 0.2)
        line_latency(mc, table, 50 if args.quick else 200, 0.05)
        ingest_rate(mc, table, 20_000 if args.quick else 200_000)
        scheduler_calls(mc, table, 10 if args.quick else 30)
    app_polling(mc, table, 30 if args.quick else 120, 20 if args.quick else 60)
    app_polling(mc, table, 15 if args.quick else 30, 10 if args.quick else 20, baseline=True)
    header = ("measurement", "p50 / value", "p90 / other", "unit", "note")
    widths = [max(len(r[i]) for r in table + [header]) for i in range(5)]
    print(f"minicluster {mc.user}@{mc.host}:{mc.port}, {mc.nodes} nodes; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for r in [header, tuple("-" * w for w in widths)] + table:
        print("  ".join(c.ljust(w) if i in (0, 3, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


if __name__ == "__main__":
    main()
