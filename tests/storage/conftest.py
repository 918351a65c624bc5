"""Fixtures for storage tests: a real SQLite file per test (WAL needs a file, not :memory:)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import make_engine

FIXTURES = Path(__file__).parent / "fixtures"


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
