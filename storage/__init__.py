"""dinf's SQLite database: `models` (tables), `db` (engine, sessions, schema-version guard),
`migrations` (the numbered steps that bring an older file up to date at open), `repo`
(keyword-only query functions taking a session), `ingest` (result bundles -> rows) and
`light_read` (the schema version and the runs list through the standard library's sqlite3, for
commands that must start without SQLModel).

Imports sqlmodel and `worker.contract` only; never torch, Textual or paramiko.
"""
