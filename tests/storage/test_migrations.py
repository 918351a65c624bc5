"""Schema migrations at open: a file written by schema 1 keeps every row and ends up shaped
exactly like a new file; a failing step leaves it as it was."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from storage import migrations, repo
from storage.db import DatabaseError, make_engine, read_session, schema_version, write_session
from storage.ingest import ingest_bundle
from storage.migrations import DB_SCHEMA_VERSION, FIRST_VERSION, Step
from tests.storage.conftest import write_schema1_file


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").fetchall()
    return [name for (name,) in rows]


def _rows(path: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every table's column names and rows, by id."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in _tables(conn):
            cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
            out[table] = ([d[0] for d in cursor.description], cursor.fetchall())
        return out
    finally:
        conn.close()


def _shape(path: Path) -> dict[str, dict]:
    """Per table: columns (name, type, not null, default, primary key), indexes and foreign keys."""
    conn = sqlite3.connect(path)
    try:
        shape = {}
        for table in _tables(conn):
            columns = [row[1:] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            indexes = sorted(
                (unique, origin, tuple(col[2] for col in conn.execute(f'PRAGMA index_info("{name}")')))
                for _, name, unique, origin, _partial in conn.execute(f'PRAGMA index_list("{table}")')
            )
            foreign = sorted(row[2:5] for row in conn.execute(f'PRAGMA foreign_key_list("{table}")'))
            shape[table] = {"columns": columns, "indexes": indexes, "foreign_keys": foreign}
        return shape
    finally:
        conn.close()


def test_steps_are_numbered_one_after_another():
    assert [s.version for s in migrations.STEPS] == list(range(FIRST_VERSION + 1, DB_SCHEMA_VERSION + 1))
    assert DB_SCHEMA_VERSION == 6


def test_schema1_file_is_migrated_at_open_and_keeps_every_row(tmp_path):
    path = write_schema1_file(tmp_path / "old.db")
    before = _rows(path)
    assert before["schema_version"][1] == [(1, 1, "0.1.0")]

    engine = make_engine(path)
    try:
        assert schema_version(engine) == DB_SCHEMA_VERSION
        after = _rows(path)
        assert set(after) == set(before) | {"run_tag"}  # step 6's table, empty
        assert after["run_tag"] == (["id", "run_id", "tag"], [])
        for table, (columns, rows) in before.items():
            if table == "schema_version":
                continue
            new_columns, new_rows = after[table]
            assert new_columns[: len(columns)] == columns, table  # old columns kept, new ones appended
            assert [row[: len(columns)] for row in new_rows] == rows, table
        assert after["run"][0][len(before["run"][0]):] == [
            "engine_impl", "engine_compiled", "engine_cuda_graphs", "engine_capture_s", "failure_json",
            "quant_scheme", "accuracy_json", "notes"]
        # runs from before the fast path ran the reference, eagerly; runs from before step 3 have no failure
        # record; runs from before step 4 were not quantized and not scored; before step 6, no note
        assert [row[len(before["run"][0]):] for row in after["run"][1]] == [
            ("reference", 0, 0, None, None, "none", None, "")] * 3
        # step 5: the fixture's bundle came from a worker that wrote no p99, std, min or max: blank, not zero
        new_measurement = after["measurement"][0][len(before["measurement"][0]):]
        assert new_measurement == [f"{m}_{part}_s" for m in ("ttft", "tpot", "itl", "e2e", "prefill")
                                   for part in ("p99", "std", "min", "max")]
        assert [row[len(before["measurement"][0]):] for row in after["measurement"][1]] == [(None,) * 20] * 2

        with read_session(engine) as session:  # and the repository reads them as before
            runs = repo.list_runs(session=session)
            assert [(r.name, r.state, r.engine_impl, r.engine_compiled) for r in runs] == [
                ("pp2-v1", "COMPLETED", "reference", False), ("draft", "DRAFT", "reference", False),
                ("failed", "SUBMIT_FAILED", "reference", False)]
            pp2 = runs[0]
            history = repo.state_history(session=session, run_id=pp2.id)
            assert [(h.state, h.at) for h in history] == [
                ("DRAFT", 1_700_000_000.0), ("PENDING", 1_700_000_010.0), ("RUNNING", 1_700_000_020.0),
                ("COMPLETED", 1_700_000_090.0)]
            assert [h.reason for h in repo.state_history(session=session, run_id=runs[2].id)] == [
                None, "sbatch: error: invalid partition"]
            measurements = repo.measurements_for_runs(session=session, run_ids=[pp2.id])
            assert [(m.batch_size, m.output_throughput_tok_s) for m in measurements] == [(1, 38.1), (2, 50.800000000000004)]
            stats = repo.rank_stats_for_measurements(session=session, measurement_ids=[m.id for m in measurements])
            assert [(s.measurement_id, s.rank) for s in stats] == [(1, 0), (1, 1), (2, 0), (2, 1)]
            assert len(repo.completions_for_run(session=session, run_id=pp2.id)) == 4
            assert [c.batch_size for c in repo.correctness_for_runs(session=session, run_ids=[pp2.id])] == [-1, 1, 2]
            assert [a.elapsed for a in repo.accounting_for_run(session=session, run_id=pp2.id)] == ["00:01:10"]
    finally:
        engine.dispose()


def test_step5_fills_the_new_latency_parts_from_each_measurements_record(tmp_path):
    path = write_schema1_file(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    (raw,) = conn.execute("SELECT raw_json FROM measurement WHERE id = 1").fetchone()
    record = json.loads(raw)
    record["ttft_s"].update(p99=0.0598, std=0.00707, min=0.05, max=0.06)  # as a newer worker wrote them
    record["tpot_s"].update(p99="fast", std=None)  # not numbers: left blank
    with conn:
        conn.execute("UPDATE measurement SET raw_json = ? WHERE id = 1", (json.dumps(record),))
        conn.execute("UPDATE measurement SET raw_json = ? WHERE id = 2", ('{"ttft_s": {"p99": NaN}}',))
    conn.close()
    make_engine(path).dispose()
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT id, ttft_p99_s, ttft_std_s, ttft_min_s, ttft_max_s, tpot_p99_s, tpot_std_s, "
                            "e2e_max_s FROM measurement ORDER BY id").fetchall()
    finally:
        conn.close()
    assert rows == [(1, 0.0598, 0.00707, 0.05, 0.06, None, None, None), (2, None, None, None, None, None, None, None)]


def test_migrated_file_is_shaped_like_a_new_one(tmp_path):
    migrated = write_schema1_file(tmp_path / "old.db")
    make_engine(migrated).dispose()
    fresh = tmp_path / "new.db"
    make_engine(fresh).dispose()
    assert _shape(migrated) == _shape(fresh)


def test_migrated_file_takes_new_runs_and_bundles(tmp_path, bundle_dir):
    engine = make_engine(write_schema1_file(tmp_path / "old.db"))
    try:
        with write_session(engine) as session:
            run = repo.create_run(session=session, uid="fast-1", name="fast", mode="single",
                                  spec={"mode": "single", "impl": "fast", "compile": True, "cuda_graphs": False})
            report = ingest_bundle(session=session, bundle_dir=bundle_dir)  # already stored: found by digest
            session.commit()
        with read_session(engine) as session:
            stored = repo.get_run(session=session, run_id=run.id)
            assert (stored.engine_impl, stored.engine_compiled, stored.engine_cuda_graphs) == ("fast", True, False)
        assert (report.run_id, report.created_run) == (1, False)
    finally:
        engine.dispose()


def test_reopening_a_migrated_file_changes_nothing(tmp_path):
    path = write_schema1_file(tmp_path / "old.db")
    make_engine(path).dispose()
    once = _rows(path)
    make_engine(path).dispose()
    assert _rows(path) == once


def test_failing_step_rolls_back_every_step(tmp_path, monkeypatch):
    path = write_schema1_file(tmp_path / "old.db")
    before = (_rows(path), _shape(path))

    real_step = migrations.STEPS[0]

    def add_columns_then_fail(conn):
        real_step.apply(conn)  # the real step 2 alters the run table, then this one fails
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(migrations, "STEPS", (Step(2, "fails halfway", add_columns_then_fail),))
    with pytest.raises(DatabaseError, match=r"cannot migrate .* from schema 1 to \d+: disk on fire.*left at schema 1"):
        make_engine(path)
    assert (_rows(path), _shape(path)) == before


def test_two_openers_of_an_old_file_migrate_it_once(tmp_path):
    path = write_schema1_file(tmp_path / "old.db")
    engines, errors = [], []

    def open_it():
        try:
            engines.append(make_engine(path))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    assert len(engines) == 2
    assert _rows(path)["schema_version"][1] == [(1, DB_SCHEMA_VERSION, "0.1.0")]
