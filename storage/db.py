"""The engine and sessions: one SQLite file in WAL mode, safe to share between threads and processes.

`make_engine(path)` checks the file's schema version *before* anything can write to it: a database
written by a newer dinf is refused with `SchemaTooNew` and left byte-for-byte as it was. Then it
turns on WAL (readers never block the writer) and a generous busy timeout, and in one write
transaction either creates the tables of a new file or migrates an older one up to
`DB_SCHEMA_VERSION` (`storage.migrations`).

Write transactions start with `BEGIN IMMEDIATE` (`write_session`): the poller thread and the UI
then queue for the write lock instead of failing with "database is locked" when a deferred
read transaction tries to upgrade after the other side committed.

It deliberately holds no queries (`storage.repo`) and no table definitions (`storage.models`); the
version read that comes first is `storage.light_read`'s (no SQLModel there, for the light commands).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from storage import migrations, models
from storage.light_read import BUSY_TIMEOUT_MS, DatabaseError, read_schema_version  # no SQLModel there
from storage.migrations import DB_SCHEMA_VERSION
from storage.models import SchemaVersion

DINF_VERSION = "0.1.0"


class SchemaTooNew(DatabaseError):
    """The file was written by a newer dinf; it is refused and left untouched."""


def _check_version(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    version = read_schema_version(path)
    if version is not None and version > DB_SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database {path} has schema version {version}, but this dinf ({DINF_VERSION}) knows "
            f"schema {DB_SCHEMA_VERSION}. It was written by a newer dinf; upgrade dinf, or point "
            "DINF_DB at another file. The file was not modified."
        )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself, instead of pysqlite's implicit one.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(path: Path | str) -> Engine:
    """An engine for the database at `path` (created with its parent directory if missing), its
    schema brought up to date: a file from an older dinf is migrated before this returns.

    Raises SchemaTooNew for a file from a newer dinf, DatabaseError for a file that isn't a
    database or whose migration failed (then rolled back: its tables and rows are as they were).
    """
    path = Path(path).expanduser()
    _check_version(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )
    _configure_sqlite(engine)
    with engine.connect() as conn:
        # journal_mode can't change inside a transaction; run it on the raw connection.
        raw = conn.connection.dbapi_connection
        mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(f"cannot turn on WAL mode for {path} (got {mode!r}); is it on a network disk?")
        raw.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a power cut loses at most the last commit
    try:
        _bring_schema_up_to_date(engine, path)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _bring_schema_up_to_date(engine: Engine, path: Path) -> None:
    """Create a new file's tables, or migrate an older file, in one write transaction.

    The version is read again under the write lock: another process may have created or migrated
    the file since `_check_version`, and then there is nothing left to do here.
    """
    assert models.Run.__tablename__  # the import registers every table before create_all
    with write_session(engine) as session:
        conn = session.connection()
        versioned = conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).first()
        row = session.get(SchemaVersion, 1) if versioned else None
        if row is None:
            SQLModel.metadata.create_all(conn)
            session.add(SchemaVersion(id=1, version=DB_SCHEMA_VERSION, written_by=DINF_VERSION))
        elif row.version > DB_SCHEMA_VERSION:  # a newer dinf upgraded it between our check and now
            raise SchemaTooNew(f"database schema version {row.version} is newer than {DB_SCHEMA_VERSION}")
        elif row.version < DB_SCHEMA_VERSION:
            try:
                migrations.migrate(conn, from_version=row.version, written_by=DINF_VERSION)
            except Exception as exc:  # the transaction rolls back as the session closes
                raise DatabaseError(
                    f"cannot migrate database {path} from schema {row.version} to {DB_SCHEMA_VERSION}: {exc}. "
                    f"It was left at schema {row.version}, unchanged."
                ) from exc
        session.commit()


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transactions take the write lock up front (BEGIN IMMEDIATE)."""
    with Session(engine.execution_options(sqlite_immediate=True), expire_on_commit=False) as session:
        yield session


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads; it sees one consistent snapshot per transaction."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


def schema_version(engine: Engine) -> int:
    with read_session(engine) as session:
        return session.exec(select(SchemaVersion.version)).one()
