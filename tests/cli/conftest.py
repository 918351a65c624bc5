"""Run the real `dinf` console script as a subprocess against a private DINF_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DINF = Path(sys.executable).parent / "dinf"
FIXTURE_BUNDLE = REPO_ROOT / "tests" / "storage" / "fixtures" / "pp2_bundle"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class DinfCommand:
    def __init__(self, home: Path):
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DINF_")},
            "DINF_HOME": str(home),
            "OMP_NUM_THREADS": "1",
        }

    def __call__(self, *args: str, timeout: float = 300, input: str | None = None) -> Result:  # noqa: A002
        done = subprocess.run(
            [str(DINF), *args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout, input=input,
        )
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def dinf(tmp_path) -> DinfCommand:
    assert DINF.exists(), f"{DINF} missing: install the project (pip install -e .)"
    return DinfCommand(tmp_path / "home")
