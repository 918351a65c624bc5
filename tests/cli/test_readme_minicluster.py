"""The README's "Try it against real Slurm on one machine" recipe, followed as written.

The test reads the section's code blocks from README.md and does what they say, as a new user
would: starts the minicluster (idempotent), writes the `~/.ssh/config` block and the
`config.toml` block (with `/path/to/dinf` replaced by this checkout, as the README asks) into a
private HOME with no DINF_* variables, then runs every command of the last bash block. If the
README drifts from what works (the venv line dropped, a flag renamed), this fails.
Not done here: `bash tests/setup-venv .venv` (this test runs from that venv already).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import REPO_ROOT

pytestmark = pytest.mark.slurm

SECTION = "### Try it against real Slurm on one machine"


def readme_blocks() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ")]
    return [(m["lang"], m["body"]) for m in re.finditer(r"```(?P<lang>\w*)\n(?P<body>.*?)```", section, re.S)]


def test_the_readme_recipe_works_as_written(tmp_path, minicluster):
    blocks = readme_blocks()
    langs = [lang for lang, _ in blocks]
    assert langs == ["bash", "sshconfig", "toml", "bash"], langs
    setup, ssh_config, toml, commands = (body for _, body in blocks)
    assert "tests/setup-venv .venv" in setup and "tests/cluster/minicluster up" in setup
    assert (REPO_ROOT / ".venv" / "bin" / "dinf").exists(), "the README's venv: bash tests/setup-venv .venv"
    up = subprocess.run(["bash", "tests/cluster/minicluster", "up"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr[-2000:]

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "dinf").mkdir(parents=True)
    # The README names the default state directory; a cluster started elsewhere has its files there.
    (home / ".ssh" / "config").write_text(ssh_config.replace("/tmp/minicluster", minicluster.state_dir))
    (home / ".config" / "dinf" / "config.toml").write_text(toml.replace("/path/to/dinf", str(REPO_ROOT)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DINF_", "XDG_"))}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")

    outputs = []
    for line in commands.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line, comments=True)
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"$ {line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    submitted, shown, logs = outputs
    # --wait prints the run's state lines first; the result line is the last
    assert submitted.splitlines()[-1].split("\t")[2] == "COMPLETED", submitted
    assert "state      COMPLETED" in shown and "\nmeasurements (medians" in shown, shown
    assert "rank 1" in logs, logs
