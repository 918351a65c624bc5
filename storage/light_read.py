"""The database read with the standard library's sqlite3 alone: its schema version, and the runs list.

Importing SQLModel (SQLAlchemy and pydantic with it) takes most of a second on a small laptop, more
than `dinf runs` spends on everything else over 1,000 runs. So the reads a command needs before it
knows whether it needs the whole storage layer live here, without it:

- `read_schema_version(path)`: which schema a file has, read without writing a byte (`storage.db`
  checks it before it opens an engine, and refuses a file from a newer dinf untouched);
- `read_runs(path, ...)`: the rows `storage.repo.list_runs`, `list_clusters` and `state_histories`
  give for the runs list, in one read transaction, as namespaces with the columns as attributes, so
  the code that turns ORM rows into snapshots (`tui.core.records`) reads these alike. A test holds
  the two paths to the same bytes of `dinf runs --json`.

What it deliberately doesn't do: write, create, migrate or refuse a file. `read_runs` answers for
a file at today's schema (`DB_SCHEMA_VERSION`), or for none at all (no runs), and returns None
otherwise; the caller then goes through `storage.db.make_engine`, the one owner of those decisions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

from storage.migrations import DB_SCHEMA_VERSION
from storage.states import FINISHED_STATES

BUSY_TIMEOUT_MS = 30_000
"""How long a connection waits for another one's lock before giving up (the poller's writes take
milliseconds); `storage.db`'s engine uses it too."""


class DatabaseError(RuntimeError):
    """The database file cannot be used; the message says why and what to do."""


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(path.resolve().as_posix())}?{mode}"


def read_schema_version(path: Path) -> int | None:
    """The version recorded in an existing file, read without writing a byte; None if unversioned."""
    # With no -wal file beside it the main file is complete, and immutable=1 reads it without
    # creating -wal/-shm files; otherwise another process has it open and WAL must be honoured.
    wal_in_use = Path(f"{path}-wal").exists()
    try:
        conn = sqlite3.connect(_uri(path, "mode=ro" if wal_in_use else "immutable=1"), uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    try:
        try:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{path} is not a dinf database (SQLite says: {exc})") from exc
        if not has_table:
            others = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if others:
                raise DatabaseError(
                    f"{path} is an SQLite database of something else ({others} tables, no dinf schema_version); "
                    "point DINF_DB at another file. It was not modified."
                )
            return None
        row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        return None if row is None else int(row[0])
    finally:
        conn.close()


@dataclass(frozen=True)
class RunsRead:
    """What the runs list needs, read in one transaction."""

    runs: list[SimpleNamespace]
    """`run` rows, oldest first (like `repo.list_runs`)."""
    clusters: list[SimpleNamespace]
    """Every `cluster` row (like `repo.list_clusters`)."""
    histories: list[SimpleNamespace]
    """`state_change` rows (run_id, state, at, reason) of those runs, by run then entry (like
    `repo.state_histories`)."""
    tags: dict[int, list[str]]
    """run id -> its tags, sorted (like `repo.tags_for_runs`)."""
    polled: bool
    """Whether any run in the file, listed or not, is submitted and unfinished: what a refresh polls."""


def read_runs(
    path: Path, *, experiment_id: int | None = None, states: Iterable[str] | None = None
) -> RunsRead | None:
    """The runs (filtered like `repo.list_runs`), their clusters and histories. No runs when there is
    no file yet (or an empty one); None for a file at another schema than today's. A file that
    isn't a dinf database raises DatabaseError."""
    path = Path(path).expanduser()
    if not path.exists() or path.stat().st_size == 0:
        return RunsRead(runs=[], clusters=[], histories=[], tags={}, polled=False)
    if read_schema_version(path) != DB_SCHEMA_VERSION:
        return None
    where, params = ["1"], []
    if experiment_id is not None:
        where.append("experiment_id = ?")
        params.append(experiment_id)
    if states is not None:
        wanted = list(states)
        where.append(f"state IN ({', '.join('?' * len(wanted))})" if wanted else "0")
        params += wanted
    condition = " AND ".join(where)
    finished = sorted(FINISHED_STATES)
    conn = sqlite3.connect(_uri(path, "mode=ro"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: a poller committing meanwhile changes none of the three reads
        runs = _rows(conn, "run", f"SELECT * FROM run WHERE {condition} ORDER BY id", params)
        clusters = _rows(conn, "cluster", "SELECT * FROM cluster ORDER BY name", [])
        histories = _rows(
            conn, "state_change",
            f"SELECT run_id, state, at, reason FROM state_change WHERE run_id IN (SELECT id FROM run WHERE {condition}) "
            "ORDER BY run_id, id", params,
        )
        tags: dict[int, list[str]] = {}
        for run_id, tag in conn.execute(  # as repo.tags_for_runs: sorted per run
            f"SELECT run_id, tag FROM run_tag WHERE run_id IN (SELECT id FROM run WHERE {condition}) "
            "ORDER BY run_id, tag", params,
        ):
            tags.setdefault(run_id, []).append(tag)
        polled = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM run WHERE job_id IS NOT NULL AND state NOT IN "
            f"({', '.join('?' * len(finished))}))", finished,
        ).fetchone()[0]
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read database {path}: {exc}") from exc
    finally:
        conn.close()
    return RunsRead(runs=runs, clusters=clusters, histories=histories, tags=tags, polled=bool(polled))


def _rows(conn: sqlite3.Connection, table: str, sql: str, params: list) -> list[SimpleNamespace]:
    """Rows as namespaces, BOOLEAN columns as bool (SQLite stores 0/1; SQLAlchemy hands out bools)."""
    booleans = {name for _, name, kind, *_ in conn.execute(f"PRAGMA table_info({table})")
                if kind.upper() == "BOOLEAN"}
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    rows = []
    for values in cursor:
        row = dict(zip(names, values))
        for name in booleans & row.keys():
            if row[name] is not None:
                row[name] = bool(row[name])
        rows.append(SimpleNamespace(**row))
    return rows
