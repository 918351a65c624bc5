"""Fixtures for storage tests: a real SQLite file per test (WAL needs a file, not :memory:)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import make_engine

FIXTURES = Path(__file__).parent / "fixtures"


def write_schema1_file(path: Path) -> Path:
    """The database dinf wrote at schema 1 (fixtures/schema1.sql, see fixtures/README.md) at `path`."""
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "schema1.sql").read_text())
    conn.close()
    return path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "dinf.db"


@pytest.fixture
def engine(db_path: Path):
    engine = make_engine(db_path)
    yield engine
    engine.dispose()


@pytest.fixture
def bundle_dir() -> Path:
    """A result bundle written by hand to follow worker/contract.py's comments exactly."""
    return FIXTURES / "pp2_bundle"
