"""Where dinf keeps its files on this machine: the configuration TOML, the database, fetched results.

Follows the XDG base directories ($XDG_CONFIG_HOME/dinf, $XDG_DATA_HOME/dinf, defaulting to
~/.config/dinf and ~/.local/share/dinf). Environment overrides, strongest first:
  DINF_CONFIG  the configuration file itself
  DINF_DB      the SQLite database file
  DINF_HOME    one directory for everything (config.toml, dinf.db, runs/) - tests and demos use it

Pure path arithmetic: nothing is created here (callers mkdir what they write).
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "dinf"
CONFIG_FILE_NAME = "config.toml"
DB_FILE_NAME = "dinf.db"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _xdg(name: str, fallback: str) -> Path:
    value = os.environ.get(name)
    base = Path(value).expanduser() if value and Path(value).is_absolute() else Path.home() / fallback
    return base / APP_NAME


def config_dir() -> Path:
    return _env_path("DINF_HOME") or _xdg("XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    """Database, fetched result bundles, and the local backend's run directories."""
    return _env_path("DINF_HOME") or _xdg("XDG_DATA_HOME", ".local/share")


def config_path() -> Path:
    return _env_path("DINF_CONFIG") or config_dir() / CONFIG_FILE_NAME


def db_path() -> Path:
    return _env_path("DINF_DB") or data_dir() / DB_FILE_NAME


def results_dir(data: Path | None = None) -> Path:
    """Result bundles fetched from clusters, one sub-directory per run uid."""
    return (data or data_dir()) / "results"


def local_runs_dir(data: Path | None = None) -> Path:
    """The built-in local cluster's work directory (its per-run directories)."""
    return (data or data_dir()) / "local-runs"
