"""Fixtures for the experiment, analysis and report tests: a real SQLite file of finished studies."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import make_engine
from tests.experiments import fixture_db


@pytest.fixture
def study_db(tmp_path: Path):
    """(engine, {experiment name: id}) for the four hand-numbered studies of fixture_db."""
    engine = make_engine(tmp_path / "dinf.db")
    ids = fixture_db.build(engine, tmp_path / "bundles")
    yield engine, ids
    engine.dispose()
