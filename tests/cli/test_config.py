"""The TOML configuration and the XDG / DINF_* locations."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tui.core import locations
from tui.core.config import LOCAL, ConfigError, load_config

GOOD = """
[defaults]
cluster = "gpu"

[clusters.gpu]
host = "gpu-login"
ssh_config = "/etc/dinf/ssh_config"
workdir = "/scratch/me/dinf"

[clusters.gpu.python]
venv = "/shared/venvs/dinf"
modules = ["cuda/12.4", "nccl"]
env = { NCCL_DEBUG = "WARN" }

[clusters.gpu.slurm]
partition = "gpu"
account = "proj"
gpus_per_node = 4
tasks_per_node = 4
time_limit = 30

[clusters.local]
workdir = "/tmp/dinf-local"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_missing_file_is_the_local_cluster_alone(tmp_path):
    config = load_config(tmp_path / "absent.toml", data_dir=tmp_path)
    assert list(config.clusters) == [LOCAL] and config.default_cluster == LOCAL
    local = config.cluster(LOCAL)
    assert local.backend == "local" and local.python.python == sys.executable
    assert local.workdir == str(tmp_path / "local-runs")


def test_full_config(tmp_path):
    config = load_config(write(tmp_path, GOOD), data_dir=tmp_path)
    gpu = config.cluster("gpu")
    assert config.default_cluster == "gpu"
    assert (gpu.backend, gpu.host, gpu.workdir) == ("slurm", "gpu-login", "/scratch/me/dinf")
    assert gpu.ssh_config == "/etc/dinf/ssh_config"
    assert gpu.python.venv == "/shared/venvs/dinf" and gpu.python.modules == ["cuda/12.4", "nccl"]
    assert gpu.python.env == {"NCCL_DEBUG": "WARN"} and gpu.python.python == "python3"
    assert (gpu.defaults.partition, gpu.defaults.gpus_per_node, gpu.defaults.time_limit) == ("gpu", 4, "30")
    assert config.cluster(LOCAL).workdir == "/tmp/dinf-local"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[clusters.gpu]\nworkdir = 'x'\n", r"clusters\.gpu\.host: is required"),
        ("[clusters.gpu]\nhost = 'h'\nhots = 1\n", r"clusters\.gpu\.hots: unknown key"),
        ("[clusters.gpu]\nhost = 'h'\n[clusters.gpu.slurm]\ngpus_per_node = 'four'\n",
         r"clusters\.gpu\.slurm\.gpus_per_node: must be an integer >= 0, got 'four'"),
        ("[clusters.gpu]\nhost = 'h'\n[clusters.gpu.slurm]\npartitoin = 'gpu'\n",
         r"clusters\.gpu\.slurm\.partitoin: unknown key"),
        ("[clusters.gpu]\nhost = 'h'\n[clusters.gpu.python]\nmodules = 'cuda'\n",
         r"clusters\.gpu\.python\.modules: must be a list of strings"),
        ("[clusters.gpu]\nhost = 'h'\nbackend = 'local'\n", r"clusters\.gpu\.backend: must be 'slurm'"),
        ("[clusters.local]\nhost = 'h'\n", r"clusters\.local\.host: unknown key"),
        ("[defaults]\ncluster = 'nope'\n", r"defaults\.cluster: names 'nope', which is not a cluster"),
        ("clusters = 3\n", r"clusters: must be a table"),
        ("[clusters\n", r"not valid TOML"),
        ("[clusters.gpu]\nhost = 'h'\ntransport = 'ssh'\n",
         r"clusters\.gpu\.transport: must be 'paramiko' .* or 'openssh' .*, got 'ssh'"),
        ("[clusters.gpu]\nhost = 'h'\ncontrol_path = '~/.ssh/cm-%C'\n",
         r"clusters\.gpu\.control_path: is used only with transport = \"openssh\""),
        ("[clusters.gpu]\nhost = 'h'\ntransport = 'openssh'\ncontrol_persist = 'forever'\n",
         r"clusters\.gpu\.control_persist: must be an ssh ControlPersist time .* got 'forever'"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, data_dir=tmp_path)
    assert str(path) in str(info.value)


SITE = """
[clusters.gpu]
host = "gpu-login"
[clusters.gpu.slurm]
gpus_per_node = 4
gpu_type = "h100"
reservation = "maint"
exclusive = true
dependency = "singleton"
extra_sbatch = ["--mail-type=END", "--comment=two words"]
container_image = "nvcr.io#nvidia/pytorch:24.01-py3"
container_runtime = "pyxis"
container_mounts = ["/scratch/data:/data:ro"]
"""


def test_site_slurm_options_are_cluster_defaults(tmp_path):
    defaults = load_config(write(tmp_path, SITE), data_dir=tmp_path).cluster("gpu").defaults
    assert (defaults.gpu_type, defaults.reservation, defaults.exclusive, defaults.dependency) == (
        "h100", "maint", True, "singleton")
    assert defaults.extra_sbatch == ["--mail-type=END", "--comment=two words"]
    assert (defaults.container_runtime, defaults.container_mounts) == ("pyxis", ["/scratch/data:/data:ro"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("exclusive = 'yes'", r"clusters\.gpu\.slurm\.exclusive: must be true or false, got 'yes'"),
        ("extra_sbatch = '--hold'", r"clusters\.gpu\.slurm\.extra_sbatch: must be a list of strings"),
        ("extra_sbatch = ['--nodes=2']", r"clusters\.gpu\.slurm\.extra_sbatch: '--nodes=2' gives --nodes, which dinf sets"),
        ('extra_sbatch = ["--comment=a\\nb"]', r"clusters\.gpu\.slurm\.extra_sbatch: .* control character"),
        ("dependency = 'after ok'", r"clusters\.gpu\.slurm\.dependency: 'after ok' is not a Slurm dependency"),
        ("gpu_type = 'h100:4'", r"clusters\.gpu\.slurm\.gpu_type: 'h100:4' is not a GRES type"),
        ("container_runtime = 'docker'", r"clusters\.gpu\.slurm\.container_runtime: must be one of apptainer, pyxis"),
        ("container_mounts = ['data:/data']", r"clusters\.gpu\.slurm\.container_mounts: 'data:/data' is not SRC:DST"),
        ("time_limit = 'soon'", r"clusters\.gpu\.slurm\.time_limit: 'soon' is not a Slurm time"),
    ],
)
def test_bad_site_slurm_options_name_the_key_when_the_file_is_read(tmp_path, line, message):
    path = write(tmp_path, f"[clusters.gpu]\nhost = 'h'\n[clusters.gpu.slurm]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, data_dir=tmp_path)


def test_unknown_cluster_says_where_to_add_it(tmp_path):
    config = load_config(tmp_path / "absent.toml", data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"no cluster named 'gpu'; known: local\. Add \[clusters\.gpu\]"):
        config.cluster("gpu")


def test_locations_env_overrides(monkeypatch, tmp_path):
    for name in ("DINF_HOME", "DINF_DB", "DINF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert locations.config_path() == tmp_path / "cfg" / "dinf" / "config.toml"
    assert locations.db_path() == tmp_path / "data" / "dinf" / "dinf.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec says: ignore relative paths
    assert locations.data_dir() == Path.home() / ".local/share/dinf"
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))
    assert locations.config_path() == tmp_path / "home" / "config.toml"
    assert locations.db_path() == tmp_path / "home" / "dinf.db"
    monkeypatch.setenv("DINF_DB", str(tmp_path / "other.db"))
    monkeypatch.setenv("DINF_CONFIG", str(tmp_path / "other.toml"))
    assert (locations.db_path(), locations.config_path()) == (tmp_path / "other.db", tmp_path / "other.toml")


def test_the_openssh_transport_and_its_control_master(tmp_path):
    """transport = "openssh" builds the ssh-binary transport with the socket and persistence asked
    for; without a terminal to ask on, ssh runs with BatchMode=yes. paramiko stays the default."""
    from remote.openssh import OpenSshConnection
    from remote.ssh import SshConnection
    from tui.core.service import make_cluster

    config = load_config(write(tmp_path, (
        "[clusters.gpu]\nhost = 'me@gpu-login:2200'\ntransport = 'openssh'\ncontrol_path = '~/.ssh/cm-%C'\n"
        "control_persist = '1h'\n[clusters.plain]\nhost = 'gpu-login'\n"
    )), data_dir=tmp_path)
    gpu = config.cluster("gpu")
    assert (gpu.transport, gpu.control_path, gpu.control_persist) == ("openssh", "~/.ssh/cm-%C", "1h")
    assert config.cluster("plain").transport == "paramiko"

    connection = make_cluster(gpu, answer_prompts=lambda *question: []).connection
    assert isinstance(connection, OpenSshConnection)
    argv = connection.ssh_argv("true")
    assert "BatchMode=yes" in argv, "the app's dialog can't answer ssh: it must never prompt"
    assert f"ControlPath={Path('~/.ssh/cm-%C').expanduser()}" in argv and "ControlPersist=1h" in argv
    assert "-F" not in argv, "the user's own ssh configuration, /etc/ssh/ssh_config included"
    assert isinstance(make_cluster(config.cluster("plain")).connection, SshConnection)
