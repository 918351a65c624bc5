"""The committed 2x H200 report regenerates byte for byte from its committed bundles, by the
commands `gpu/README.md` lists (run in-process here). A change to the report's text shows up
as a diff of `gpu/report-2xH200.md` in the same commit, not as silent drift."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tui import cli

GPU = Path(__file__).parent / "gpu"
COMMON = ("--model open_llama_3b_v2 --seed 0 --dtype float16 --device cuda --modes pp,dp --nodes 1 "
          "--ranks-per-node 2 --warmup 1")
PLANS = {  # as gpu/README.md records them
    "gpu-correctness": "correctness --batch-size 20 --max-new-tokens 32 --repeats 1",
    "gpu-scaling": "strong_scaling --batch-size 16 --num-requests 64 --max-new-tokens 32 --repeats 3 --rank-counts 1,2",
    "gpu-sweep": "batch_sweep --batch-sizes 1,8,64 --num-requests 64 --max-new-tokens 16 --repeats 2",
    "gpu-profile": "profile --batch-sizes 1,64 --num-requests 64 --max-new-tokens 16 --repeats 1",
}


def test_gpu_report_regenerates_from_the_committed_bundles(tmp_path, monkeypatch, capsys):
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
        dinf("experiment", "attach", name, *sorted(str(p) for p in (GPU / "bundles" / name).iterdir()))
    dinf("report", *PLANS, "-o", "report.md")
    assert (tmp_path / "report.md").read_text() == (GPU / "report-2xH200.md").read_text()
