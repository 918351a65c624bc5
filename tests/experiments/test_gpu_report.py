"""The committed 2x and 4x H200 reports regenerate byte for byte from their committed bundles, by the
commands `gpu/README.md` lists (run in-process here). A change to the report's text shows up
as a diff of `gpu/report-*xH200.md` in the same commit, not as silent drift."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from tui.cli import main as cli

GPU = Path(__file__).parent / "gpu"


def read_plans(path: Path) -> tuple[str, dict[str, str]]:
    """COMMON options and NAME -> 'PRESET OPTIONS...' of a plans file (the format gpu/plan_2gpu.sh reads)."""
    common, plans = "", {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if name == "COMMON":
            common = rest
        else:
            plans[name] = rest
    return common, plans


# (plans the bundles were run from, bundles, report)
REPORTS = {
    "2xH200": ("plans-2xH200.txt", "bundles", "report-2xH200.md"),
    "4xH200": ("plans-4xH200-fast.txt", "bundles-4xH200", "report-4xH200.md"),
}


@pytest.mark.parametrize("which", sorted(REPORTS))
def test_gpu_report_regenerates_from_the_committed_bundles(which, tmp_path, monkeypatch, capsys):
    plans_file, bundles, report = REPORTS[which]
    COMMON, PLANS = read_plans(GPU / plans_file)
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("DINF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DINF_HOME", str(tmp_path / "home"))

    def dinf(*args: str) -> None:
        assert cli.main(["--db", str(tmp_path / "dinf.db"), *args]) == 0, capsys.readouterr().err

    for name, plan in PLANS.items():
        kind, *options = shlex.split(plan)
        dinf("experiment", "create", kind, "--record-only", "--name", name, *shlex.split(COMMON), *options,
             "--write-specs", f"gpu_specs/{name}")
    for name in PLANS:
        if (GPU / bundles / name).is_dir():  # an experiment whose cells never ran has no bundles
            dinf("experiment", "attach", name, *sorted(str(p) for p in (GPU / bundles / name).iterdir()))
    dinf("report", *PLANS, "-o", "report.md")
    assert (tmp_path / "report.md").read_text() == (GPU / report).read_text()
