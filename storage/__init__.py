"""dinf's SQLite database: `models` (tables), `db` (engine, sessions, schema-version guard),
`migrations` (the numbered steps that bring an older file up to date at open), `repo`
(keyword-only query functions taking a session) and `ingest` (result bundles -> rows).

Imports sqlmodel and `worker.contract` only; never torch, Textual or paramiko.
"""
