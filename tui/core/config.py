"""dinf's configuration: the clusters in a TOML file, plus the built-in `local` cluster.

    [defaults]
    cluster = "gpu"                 # what `dinf submit` uses without --cluster (default "local")

    [clusters.gpu]                  # backend = "slurm" unless said otherwise
    host = "gpu-login"              # a Host alias from ~/.ssh/config (user, port, key, ProxyJump live there)
    ssh_config = "~/.ssh/config"    # optional: another OpenSSH config file to resolve the alias in
    workdir = "~/dinf-runs"         # remote work directory; one sub-directory per run
    transport = "paramiko"          # or "openssh": run the user's `ssh` (Kerberos, their ControlMaster, 2FA)
    control_path = "~/.ssh/cm-%C"   # openssh only, optional: the ControlMaster socket to reuse (or open)
    control_persist = "10m"         # openssh only, optional: how long a master dinf opened stays up

    [clusters.gpu.python]           # how the job gets a Python with the worker installed
    python = "python3"
    venv = "/shared/venvs/dinf"
    modules = ["cuda/12.4"]
    setup_lines = ["export HF_HOME=/scratch/hf"]
    env = { NCCL_DEBUG = "WARN" }

    [clusters.gpu.slurm]            # default Resources for runs on this cluster
    partition = "gpu"
    account = "proj"
    gpus_per_node = 4
    tasks_per_node = 4
    time_limit = "00:30:00"
    gpu_type = "h100"               # --gpus-per-node=h100:4
    reservation = "dinf"
    exclusive = true
    extra_sbatch = ["--mail-type=END", "--comment=dinf"]   # more #SBATCH lines; not ones dinf sets
    container_runtime = "pyxis"     # or "apptainer" (the default), for container_image
    container_mounts = ["/scratch/data:/data:ro"]

`[clusters.local]` may set `workdir` and `[clusters.local.python]` (the local backend runs the worker
as processes on this machine, with this interpreter by default); it can't become a Slurm cluster.

A missing file is an empty configuration (first launch). Every mistake raises ConfigError naming
the file, the TOML key at fault and what it should be. Nothing here connects anywhere.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote.cluster import PythonEnvironment, Resources
from remote.hostnames import host_name_problem, split_host_spec
from remote.slurm import resource_problems, slurm_path_problem
from tui.core import locations

LOCAL = "local"
BACKENDS = ("slurm", LOCAL)
TRANSPORTS = ("paramiko", "openssh")
"""How a Slurm cluster is reached: paramiko in-process (the default), or the user's `ssh` binary."""
DEFAULT_SSH_CONFIG = "~/.ssh/config"
_CONTROL_PERSIST = re.compile(r"^(yes|no|\d+|(\d+[smhdwSMHDW])+)$")


class ConfigError(ValueError):
    """A configuration mistake; the message names the file and the key."""


@dataclass
class ClusterConfig:
    """One cluster as configured (the remote layer builds a backend from it)."""

    name: str
    backend: str = "slurm"
    host: str | None = None
    ssh_config: str = DEFAULT_SSH_CONFIG
    workdir: str = "~/dinf-runs"
    transport: str = "paramiko"
    """One of TRANSPORTS."""
    control_path: str | None = None
    """openssh: the ControlMaster socket to use; None: the user's ssh configuration's, else dinf's own."""
    control_persist: str = "10m"
    """openssh: how long a master dinf opened outlives its last command (ssh's ControlPersist)."""
    python: PythonEnvironment = field(default_factory=PythonEnvironment)
    defaults: Resources = field(default_factory=Resources)
    """Resources every run on this cluster starts from (the New-run form's initial values)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DinfConfig:
    path: Path
    clusters: dict[str, ClusterConfig]
    default_cluster: str = LOCAL

    def cluster(self, name: str) -> ClusterConfig:
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(sorted(self.clusters))
            raise ConfigError(
                f"no cluster named {name!r}; known: {known}. Add [clusters.{name}] to {self.path}"
            ) from None


def local_cluster(data_dir: Path | None = None) -> ClusterConfig:
    """The built-in cluster: worker processes on this machine, under dinf's data directory."""
    return ClusterConfig(
        name=LOCAL,
        backend=LOCAL,
        workdir=str(locations.local_runs_dir(data_dir)),
        python=PythonEnvironment(python=sys.executable),
    )


def load_config(path: Path | None = None, *, data_dir: Path | None = None, required: bool = False) -> DinfConfig:
    """The configuration at `path` (default: $DINF_CONFIG or XDG's). A missing file is an empty
    configuration, unless `required` (the user named the file, `dinf --config FILE`)."""
    path = Path(path) if path is not None else locations.config_path()
    raw: dict[str, Any] = {}
    if required and not path.exists():
        raise ConfigError(f"{path}: no such configuration file (given with --config)")
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); dinf reads TOML") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_config(raw, path=path, data_dir=data_dir)


def parse_config(raw: dict[str, Any], *, path: Path, data_dir: Path | None = None) -> DinfConfig:
    reader = _Reader(path)
    reader.only(raw, "", {"defaults", "clusters"})
    clusters = {LOCAL: local_cluster(data_dir)}
    sections = reader.table(raw, "clusters", "clusters")
    for name, section in sections.items():
        key = f"clusters.{name}"
        if not isinstance(section, dict):
            raise reader.error(key, "must be a table ([clusters.NAME])")
        if name == LOCAL:
            clusters[LOCAL] = _local_override(reader, section, clusters[LOCAL])
            continue
        clusters[name] = _cluster(reader, name, section)
    defaults = reader.table(raw, "defaults", "defaults")
    reader.only(defaults, "defaults", {"cluster"})
    default_cluster = reader.string(defaults, "cluster", "defaults.cluster") or LOCAL
    if default_cluster not in clusters:
        raise reader.error(
            "defaults.cluster", f"names {default_cluster!r}, which is not a cluster; known: {', '.join(sorted(clusters))}"
        )
    return DinfConfig(path=path, clusters=clusters, default_cluster=default_cluster)


def _cluster(reader: _Reader, name: str, section: dict[str, Any]) -> ClusterConfig:
    key = f"clusters.{name}"
    reader.only(section, key, {"backend", "host", "ssh_config", "workdir", "transport", "control_path",
                               "control_persist", "python", "slurm"})
    backend = reader.string(section, "backend", f"{key}.backend") or "slurm"
    if backend != "slurm":
        raise reader.error(
            f"{key}.backend", f"must be 'slurm' (the only local cluster is the built-in 'local'), got {backend!r}"
        )
    host = reader.string(section, "host", f"{key}.host")
    if not host:
        raise reader.error(f"{key}.host", "is required: a Host alias from ~/.ssh/config, or user@hostname")
    problem = host_name_problem(split_host_spec(host)[1])
    if problem:
        raise reader.error(f"{key}.host", f"{host!r} {problem}; give a Host alias from ~/.ssh/config, or user@hostname")
    workdir = reader.string(section, "workdir", f"{key}.workdir") or "~/dinf-runs"
    problem = slurm_path_problem(workdir)
    if problem:
        raise reader.error(f"{key}.workdir", f"{workdir!r} {problem}; choose a directory without ' \" \\ or %")
    ssh_config = reader.string(section, "ssh_config", f"{key}.ssh_config") or DEFAULT_SSH_CONFIG
    transport = reader.string(section, "transport", f"{key}.transport") or "paramiko"
    if transport not in TRANSPORTS:
        raise reader.error(f"{key}.transport", f"must be 'paramiko' (dinf's own SSH, the default) or 'openssh' "
                                               f"(your ssh binary and its ControlMaster), got {transport!r}")
    control_path = reader.string(section, "control_path", f"{key}.control_path")
    control_persist = reader.string(section, "control_persist", f"{key}.control_persist")
    for option in ("control_path", "control_persist"):
        if option in section and transport != "openssh":
            raise reader.error(f"{key}.{option}", "is used only with transport = \"openssh\" (paramiko keeps one "
                                                  "connection itself); set the transport or remove the key")
    if control_persist is not None and not _CONTROL_PERSIST.match(control_persist):
        raise reader.error(f"{key}.control_persist", f"must be an ssh ControlPersist time such as '10m', '1h' or "
                                                     f"'600' (seconds), or 'yes', got {control_persist!r}")
    return ClusterConfig(
        name=name,
        backend="slurm",
        host=host,
        ssh_config=ssh_config,
        workdir=workdir,
        transport=transport,
        control_path=control_path,
        control_persist=control_persist or "10m",
        python=_python(reader, reader.table(section, "python", f"{key}.python"), f"{key}.python", PythonEnvironment()),
        defaults=_resources(reader, reader.table(section, "slurm", f"{key}.slurm"), f"{key}.slurm"),
    )


def _local_override(reader: _Reader, section: dict[str, Any], base: ClusterConfig) -> ClusterConfig:
    key = f"clusters.{LOCAL}"
    reader.only(section, key, {"workdir", "python"})
    workdir = reader.string(section, "workdir", f"{key}.workdir") or base.workdir
    python = _python(reader, reader.table(section, "python", f"{key}.python"), f"{key}.python", base.python)
    return dataclasses.replace(base, workdir=workdir, python=python)


def _python(reader: _Reader, section: dict[str, Any], key: str, base: PythonEnvironment) -> PythonEnvironment:
    reader.only(section, key, {f.name for f in dataclasses.fields(PythonEnvironment)})
    env = reader.table(section, "env", f"{key}.env")
    for name, value in env.items():
        if not isinstance(value, str):
            raise reader.error(f"{key}.env.{name}", f"must be a string, got {value!r}")
    return PythonEnvironment(
        python=reader.string(section, "python", f"{key}.python") or base.python,
        venv=reader.string(section, "venv", f"{key}.venv") or base.venv,
        modules=reader.strings(section, "modules", f"{key}.modules", base.modules),
        setup_lines=reader.strings(section, "setup_lines", f"{key}.setup_lines", base.setup_lines),
        env=dict(env) or dict(base.env),
    )


_RESOURCE_INTS = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0, "cpus_per_task": 1}
_RESOURCE_BOOLS = {"exclusive"}
_RESOURCE_LISTS = {"extra_sbatch", "container_mounts"}


def _resources(reader: _Reader, section: dict[str, Any], key: str) -> Resources:
    fields = {f.name for f in dataclasses.fields(Resources)}
    reader.only(section, key, fields)
    values: dict[str, Any] = {}
    for name in fields:
        if name not in section:
            continue
        value = section[name]
        if name in _RESOURCE_INTS:
            minimum = _RESOURCE_INTS[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise reader.error(f"{key}.{name}", f"must be an integer >= {minimum}, got {value!r}")
        elif name in _RESOURCE_BOOLS:
            if not isinstance(value, bool):
                raise reader.error(f"{key}.{name}", f"must be true or false, got {value!r}")
        elif name in _RESOURCE_LISTS:
            value = reader.strings(section, name, f"{key}.{name}", [])
        else:
            if isinstance(value, int) and not isinstance(value, bool) and name == "time_limit":
                value = str(value)  # minutes, as Slurm reads a bare number
            if not isinstance(value, str) or not value.strip():
                raise reader.error(f"{key}.{name}", f"must be a non-empty string, got {value!r}")
        values[name] = value
    resources = Resources(**values)
    # Each value on its own, as the job script will use it (a run may still change the others).
    for name, why in sorted(resource_problems(resources).items()):
        raise reader.error(f"{key}.{name}", why)
    return resources


class _Reader:
    """Typed access to a parsed TOML table, with errors that name the file and dotted key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {why}")

    def only(self, table: dict[str, Any], key: str, allowed: set[str]) -> None:
        for name in table:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.error(where, f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def table(self, parent: dict[str, Any], name: str, key: str) -> dict[str, Any]:
        value = parent.get(name, {})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table, got {value!r}")
        return value

    def string(self, table: dict[str, Any], name: str, key: str) -> str | None:
        value = table.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def strings(self, table: dict[str, Any], name: str, key: str, default: list[str]) -> list[str]:
        value = table.get(name)
        if value is None:
            return list(default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"must be a list of strings, got {value!r}")
        return list(value)
