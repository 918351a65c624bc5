"""Benchmark of the storage and service layer on a real SQLite file; prints one table.

    .venv/bin/python tests/benchmarks/bench_storage.py [--runs 2000]

Rows: listing every run as RunRecord snapshots (`Dinf.runs()`, three queries in all; baseline: one
snapshot per run, two queries each, as the first version did); ingesting a result bundle (first time,
and again: the idempotent upsert path; baseline: a plain INSERT of the same measurement rows);
and small write transactions per second from two threads at once (the poller and the UI), which
must all succeed. Every baseline is measured in the same run. No thresholds: it reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import repo  # noqa: E402
from storage.db import read_session, write_session  # noqa: E402
from storage.ingest import ingest_bundle  # noqa: E402
from storage.models import Measurement  # noqa: E402
from tui.core.service import Dinf  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"


def timed(fn, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def fill(dinf: Dinf, count: int) -> None:
    with write_session(dinf.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        for i in range(count):
            run = repo.create_run(session=session, uid=f"bench-{i}", name=f"bench {i}", mode="pp", spec={"i": i},
                                  num_ranks=2, cluster_id=cluster.id, at=1000.0 + i)
            for state in ("PENDING", "RUNNING", "COMPLETED"):
                repo.record_state(session=session, run=run, state=state)
        session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        dinf = Dinf(data_dir=Path(tmp), config_path=Path(tmp) / "config.toml")
        fill(dinf, args.runs)

        def per_run_snapshots():
            with read_session(dinf.engine) as session:
                for run in repo.list_runs(session=session):
                    cluster = repo.get_cluster(session=session, cluster_id=run.cluster_id)
                    repo.state_history(session=session, run_id=run.id)
                    assert cluster is not None

        batched = timed(dinf.runs)
        baseline = timed(per_run_snapshots)
        rows.append((f"list {args.runs} runs as snapshots", f"{batched * 1e3:.1f} ms",
                     f"{baseline * 1e3:.1f} ms (2 queries per run)"))

        bundles = Path(tmp) / "bundles"
        count = 50
        for i in range(count):
            target = bundles / str(i)
            shutil.copytree(FIXTURE, target)
            result = json.loads((target / "result.json").read_text())
            result["run_name"] = f"bundle-{i}"
            (target / "result.json").write_text(json.dumps(result))

        def ingest_all():
            for i in range(count):
                with write_session(dinf.engine) as session:
                    ingest_bundle(session=session, bundle_dir=bundles / str(i))
                    session.commit()

        first = timed(ingest_all, repeat=1)
        again = timed(ingest_all, repeat=1)

        def plain_inserts():
            with write_session(dinf.engine) as session:
                run = repo.create_run(session=session, uid=f"plain-{time.perf_counter_ns()}", name="p", mode="pp",
                                      spec={})
                for i in range(count):
                    for batch in (1, 2):
                        session.add(Measurement(run_id=run.id, batch_size=1000 * i + batch))
                    session.flush()
                session.rollback()

        plain = timed(plain_inserts, repeat=1)
        rows.append((f"ingest {count} bundles (first time)", f"{first / count * 1e3:.2f} ms/bundle",
                     f"{plain / count * 1e3:.2f} ms/bundle (bare INSERT of its measurement rows)"))
        rows.append((f"ingest {count} bundles again (no-op upserts)", f"{again / count * 1e3:.2f} ms/bundle", "-"))

        errors: list[BaseException] = []
        done = [0, 0]

        def writer(slot: int, seconds: float = 2.0):
            deadline = time.perf_counter() + seconds
            try:
                while time.perf_counter() < deadline:
                    with write_session(dinf.engine) as session:
                        run = repo.get_run(session=session, run_id=1 + slot)
                        repo.update_run(session=session, run=run, state_reason=str(time.perf_counter_ns()))
                        session.commit()
                    done[slot] += 1
            except BaseException as exc:  # noqa: BLE001 - reported in the table
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(slot,)) for slot in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        solo = [0]

        def solo_writer():
            deadline = time.perf_counter() + 2.0
            while time.perf_counter() < deadline:
                with write_session(dinf.engine) as session:
                    run = repo.get_run(session=session, run_id=1)
                    repo.update_run(session=session, run=run, state_reason=str(time.perf_counter_ns()))
                    session.commit()
                solo[0] += 1

        solo_writer()
        rows.append(("write transactions/s, two threads", f"{sum(done) / 2.0:.0f}/s, {len(errors)} errors",
                     f"{solo[0] / 2.0:.0f}/s (one thread)"))
        dinf.close()

    width = [max(len(r[i]) for r in rows + [("measure", "dinf", "baseline")]) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(("measure", "dinf", "baseline"), width)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, width)))


if __name__ == "__main__":
    main()
