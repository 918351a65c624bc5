"""Schema migrations: bring a database written by an older dinf up to today's tables, at open.

A file records its version in the one-row `schema_version` table (`models.SchemaVersion`).
`DB_SCHEMA_VERSION`, the version today's models describe, is the number of the last step in
`STEPS`, so appending a step is the whole of bumping it. `migrate` runs every step newer than the
file, oldest first, on the caller's connection inside the caller's write transaction, and records
the new version there too: a failing step rolls back every step before it, and the file stays as
it was. SQLite's DDL is transactional, so this holds for ALTER TABLE as well.

Each step is raw SQL frozen when it was written, never today's models: the models move on, and a
step must keep turning the schema *it* found into the next one. ALTER TABLE can add a column (a
NOT NULL one needs a constant default) or rename one; anything else (a new type, a dropped
constrained column) rebuilds the table as https://sqlite.org/lang_altertable.html#otheralter says.

To change the schema: edit `storage.models`, append a `Step` here that takes the previous schema
to the new one, and give it a case in `tests/storage/test_migrations.py`. That test migrates a
schema-1 file and compares it with a fresh one table by table, so a step that forgets a column,
a default or an index fails there.

It does not create the tables of a new file (`storage.db` runs `create_all` for that) and does not
decide to refuse a file from a newer dinf (`storage.db` checks that before opening anything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # DB_SCHEMA_VERSION is read by storage.light_read, which must not load SQLAlchemy
    from sqlalchemy.engine import Connection

FIRST_VERSION = 1
"""The schema of the first files that recorded a version (dinf before migrations existed)."""


@dataclass(frozen=True)
class Step:
    """One migration: `apply` takes a file at `version - 1` to `version`."""

    version: int
    summary: str
    apply: Callable[[Connection], None]


def _run_engine(conn: Connection) -> None:
    # Runs before this step came from a worker without a fast path: the Hugging Face reference,
    # eager, no graphs (what ingest assumes for a bundle without an "engine" object too).
    for ddl in (
        "ALTER TABLE run ADD COLUMN engine_impl VARCHAR DEFAULT 'reference' NOT NULL",
        "ALTER TABLE run ADD COLUMN engine_compiled BOOLEAN DEFAULT 0 NOT NULL",
        "ALTER TABLE run ADD COLUMN engine_cuda_graphs BOOLEAN DEFAULT 0 NOT NULL",
        "ALTER TABLE run ADD COLUMN engine_capture_s FLOAT",
    ):
        conn.exec_driver_sql(ddl)


def _run_failure(conn: Connection) -> None:
    # Runs that failed before this step keep only their error text.
    conn.exec_driver_sql("ALTER TABLE run ADD COLUMN failure_json VARCHAR")


def _run_quant(conn: Connection) -> None:
    # Runs before this step had no quantization and were never scored.
    conn.exec_driver_sql("ALTER TABLE run ADD COLUMN quant_scheme VARCHAR DEFAULT 'none' NOT NULL")
    conn.exec_driver_sql("ALTER TABLE run ADD COLUMN accuracy_json VARCHAR")


# Frozen copies of the names step 5 knew (storage.models.STAT_COLUMNS / STAT_PARTS may grow later).
_STEP5_STATS = {"ttft": "ttft_s", "tpot": "tpot_s", "itl": "itl_s", "e2e": "e2e_s", "prefill": "prefill_latency_s"}
_STEP5_PARTS = ("p99", "std", "min", "max")


def _measurement_spread(conn: Connection) -> None:
    # Every measurement keeps the record it came from (raw_json), so the parts a bundle had are
    # filled in from it; a part it lacked (bundles from before the worker wrote them), or one that
    # is not a number, stays NULL: blank, never zero. A record that is not strict JSON (a NaN)
    # fills nothing.
    for prefix, field in _STEP5_STATS.items():
        for part in _STEP5_PARTS:
            column, path = f"{prefix}_{part}_s", f"$.{field}.{part}"
            conn.exec_driver_sql(f"ALTER TABLE measurement ADD COLUMN {column} FLOAT")
            conn.exec_driver_sql(
                f"UPDATE measurement SET {column} = json_extract(raw_json, '{path}') "
                f"WHERE json_valid(raw_json) AND json_type(raw_json, '{path}') IN ('integer', 'real')"
            )


def _run_tags_and_notes(conn: Connection) -> None:
    # Runs before this step have no tags and an empty note.
    conn.exec_driver_sql("ALTER TABLE run ADD COLUMN notes VARCHAR DEFAULT '' NOT NULL")
    conn.exec_driver_sql(
        "CREATE TABLE run_tag (id INTEGER NOT NULL, run_id INTEGER NOT NULL, tag VARCHAR NOT NULL, "
        "PRIMARY KEY (id), UNIQUE (run_id, tag), FOREIGN KEY(run_id) REFERENCES run (id))"
    )
    conn.exec_driver_sql("CREATE INDEX ix_run_tag_tag ON run_tag (tag)")


STEPS: tuple[Step, ...] = (
    Step(2, "runs record the worker's engine: implementation, compiled, CUDA graphs, capture time", _run_engine),
    Step(3, "runs record how a failed job ended (first rank to die, node, signal or exit code)", _run_failure),
    Step(4, "runs record their weight quantization and, when scored, their accuracy against fp16", _run_quant),
    Step(5, "measurements keep p99, std, min and max of every latency (filled from their records)", _measurement_spread),
    Step(6, "runs carry tags (a table, to filter by) and a note", _run_tags_and_notes),
)

DB_SCHEMA_VERSION = STEPS[-1].version if STEPS else FIRST_VERSION
"""The database schema today's `storage.models` describe. Not `worker.contract.SCHEMA_VERSION`,
which versions the run spec, events and result bundle the worker exchanges with the laptop."""


def pending(version: int) -> list[Step]:
    """The steps a file at `version` still needs, oldest first."""
    return [step for step in STEPS if step.version > version]


def migrate(conn: Connection, *, from_version: int, written_by: str) -> list[Step]:
    """Apply every pending step on `conn` and record the version reached; the caller commits.

    `conn` must be inside a write transaction (`storage.db.write_session`), so a concurrent opener
    waits for the lock, then finds the file migrated and has nothing left to do.
    """
    if from_version < FIRST_VERSION:
        raise ValueError(f"from_version: no dinf wrote schema version {from_version}")
    steps = pending(from_version)
    for step in steps:
        step.apply(conn)
    if steps:
        conn.exec_driver_sql(
            "UPDATE schema_version SET version = ?, written_by = ? WHERE id = 1", (steps[-1].version, written_by)
        )
    return steps
