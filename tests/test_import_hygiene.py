"""Layer boundaries, checked on what a fresh interpreter actually loads (and by import-linter).

Each case imports a set of modules in a clean subprocess and lists the top-level packages that
ended up in sys.modules: the laptop side must never pull torch & co, the headless CLI must not
pull Textual, and the worker must not pull the laptop stack. Sub-modules are discovered, so a
module added later is covered without editing this file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "deepspeed", "transformers"}

PROBE = """
import importlib, json, pkgutil, sys
names = []
for target in sys.argv[1:]:
    if target.endswith(".*"):
        package = importlib.import_module(target[:-2])
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if not m.name.rsplit(".", 1)[-1].startswith("__")]
    else:
        names.append(target)
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def loaded_by(*targets: str) -> tuple[list[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *targets], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["imported"], set(report["loaded"])


@pytest.mark.parametrize(
    ("targets", "forbidden"),
    [
        # The CLI's module and its light reads: `dinf --help` and `dinf runs` start without SQLModel
        # (tests/cli/test_cli_startup.py follows whole commands).
        (["tui.cli.main", "tui.cli.studies", "storage.light_read", "tui.core.records"],
         HEAVY | {"textual", "sqlmodel", "sqlalchemy", "pydantic", "paramiko", "plotext"}),
        (["tui.core.service", "tui.core.config", "tui.core.locations"], HEAVY | {"textual"}),
        (["storage.*"], HEAVY | {"textual", "paramiko", "plotext", "remote", "tui"}),
        (["remote.*"], HEAVY | {"textual", "tui", "storage", "sqlmodel"}),
        (["worker.contract"], HEAVY | {"textual", "paramiko", "sqlmodel"}),
        # The local backend needs no SSH; paramiko's import alone held ~4 MB of the app's RSS.
        (["remote.local", "tui.ui.app"], HEAVY | {"paramiko", "cryptography"}),
    ],
    ids=["cli", "services", "storage", "remote", "contract", "local-backend"],
)
def test_laptop_side_stays_light(targets, forbidden):
    imported, loaded = loaded_by(*targets)
    assert imported, "nothing was imported; the probe is broken"
    assert loaded & forbidden == set(), f"importing {targets} loaded {sorted(loaded & forbidden)}"


def test_worker_never_reaches_the_laptop_stack():
    imported, loaded = loaded_by("worker.*")
    assert "worker.runner" in imported
    assert "torch" in loaded  # sanity: the probe really imported the worker's heavy modules
    forbidden = {"textual", "paramiko", "sqlmodel", "sqlalchemy", "plotext", "remote", "storage", "tui"}
    assert loaded & forbidden == set()


def test_import_linter_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed in this environment (pip install -e '.[test]')"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_local_backend_works_without_paramiko_installed(tmp_path):
    """Not just unimported: with paramiko unimportable, the local backend still loads and answers,
    and the app's connection handling (which classifies SSH errors) still imports."""
    probe = f"""
import sys
sys.modules["paramiko"] = None  # what an environment without paramiko looks like to `import`
from remote.local import LocalCluster
import tui.core.connection, tui.ui.app
cluster = LocalCluster(workdir={str(tmp_path)!r})
print(cluster.status([]))
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "{}"
