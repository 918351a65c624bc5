"""The database file: WAL mode, schema-version refusal, and writers that queue instead of failing."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlmodel import func, select

from storage import repo
from storage.db import DatabaseError, SchemaTooNew, make_engine, read_session, schema_version, write_session
from storage.migrations import DB_SCHEMA_VERSION
from storage.models import Run


def test_new_file_is_wal_and_versioned(engine, db_path):
    assert schema_version(engine) == DB_SCHEMA_VERSION
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_data(db_path):
    engine = make_engine(db_path)
    with write_session(engine) as session:
        repo.create_experiment(session=session, name="e", kind="manual")
        session.commit()
    engine.dispose()
    again = make_engine(db_path)
    with read_session(again) as session:
        assert [e.name for e in repo.list_experiments(session=session)] == ["e"]
    again.dispose()


def test_newer_schema_refused_and_file_untouched(db_path):
    engine = make_engine(db_path)
    engine.dispose()
    with sqlite3.connect(db_path) as conn:  # what a future dinf would leave behind
        conn.execute("UPDATE schema_version SET version = ?", (DB_SCHEMA_VERSION + 1,))
        conn.execute("CREATE TABLE future_thing (x INTEGER)")
    conn.close()
    before = db_path.read_bytes()
    siblings_before = sorted(p.name for p in db_path.parent.iterdir())
    with pytest.raises(SchemaTooNew, match=rf"schema version {DB_SCHEMA_VERSION + 1}.*upgrade dinf.*not modified"):
        make_engine(db_path)
    assert db_path.read_bytes() == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == siblings_before


def test_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("just some text, long enough to look like a header to sqlite" * 20)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not a dinf database"):
        make_engine(path)
    assert path.read_bytes() == before


def test_someone_elses_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE run (id INTEGER PRIMARY KEY, what TEXT)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="database of something else.*not modified"):
        make_engine(path)
    assert path.read_bytes() == before


def _write_runs(engine, prefix: str, count: int, errors: list) -> None:
    """Like the poller: short write transactions, each reading then writing."""
    try:
        for i in range(count):
            with write_session(engine) as session:
                run = repo.create_run(session=session, uid=f"{prefix}-{i}", name=prefix, mode="single", spec={})
                repo.record_state(session=session, run=run, state="PENDING")
                session.commit()
            with read_session(engine) as session:
                repo.list_runs(session=session, unfinished=True)
    except Exception as exc:  # noqa: BLE001 - reported to the main thread
        errors.append(exc)


def test_two_threads_write_without_locking_errors(engine):
    errors: list = []
    threads = [threading.Thread(target=_write_runs, args=(engine, name, 60, errors)) for name in ("poller", "ui")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with read_session(engine) as session:
        assert session.exec(select(func.count()).select_from(Run)).one() == 120


def _process_writer(path: str, prefix: str, count: int) -> None:
    engine = make_engine(Path(path))
    errors: list = []
    _write_runs(engine, prefix, count, errors)
    if errors:
        raise SystemExit(f"{prefix}: {errors[0]!r}")


def test_two_processes_write_without_locking_errors(engine, db_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(str(db_path), name, 40)) for name in ("cli", "tui")]
    for p in procs:
        p.start()
    errors: list = []
    _write_runs(engine, "main", 40, errors)  # and this process too, at the same time
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert errors == []
    with read_session(engine) as session:
        assert session.exec(select(func.count()).select_from(Run)).one() == 120
