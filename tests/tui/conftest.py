"""Fixtures for the app's tests: the real service over a temp SQLite file, with a chosen backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from scripted_cluster import ScriptedCluster


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read or write the developer's own configuration or database.
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DINF_DB", raising=False)
    monkeypatch.delenv("DINF_CONFIG", raising=False)


@pytest.fixture(autouse=True)
def _no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deterministic screens (harlequin's trick): the input cursor never blinks.
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None, raising=False)


@pytest.fixture
def scripted() -> ScriptedCluster:
    cluster = ScriptedCluster("local")
    yield cluster
    cluster.close()


@pytest.fixture
def service_factory(tmp_path: Path, scripted: ScriptedCluster) -> Callable[[], object]:
    """Opens the real Dinf service on tmp files; every cluster is the scripted one."""

    def open_service():
        from tui.core.service import Dinf

        return Dinf(
            data_dir=tmp_path / "data",
            config_path=tmp_path / "config.toml",
            cluster_factory=lambda config: scripted,
        )

    return open_service


@pytest.fixture
def make_app(service_factory):
    from tui.ui.app import DinfApp

    def make(**kwargs):
        kwargs.setdefault("service_factory", service_factory)
        kwargs.setdefault("live_poll_s", 0.1)
        kwargs.setdefault("idle_poll_s", 0.2)
        kwargs.setdefault("max_backoff_s", 0.5)
        return DinfApp(**kwargs)

    return make
