"""Fixtures of the worker tests: a tiny synthetic checkpoint written by the real CLI, and rank launchers.

Ranks are real `python -m worker run` processes talking over gloo, started the way Slurm's `srun`
starts them (SLURM_* variables only) or through torchrun.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_SIZE"):
        env.pop(name, None)
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], cwd=REPO, env=worker_env(**env),
        capture_output=True, text=True, timeout=timeout,
    )


def start_slurm_ranks(n: int, args: list[str], log_dir: Path) -> list[subprocess.Popen]:
    """n ranks with only Slurm's variables set, as `srun --ntasks=n` would start them on one node."""
    port = free_port()
    slurm = {"SLURM_NTASKS": str(n), "SLURM_JOB_NODELIST": "localhost"}
    if 20000 <= port < 40000:
        slurm["SLURM_JOB_ID"] = str(port - 20000)  # exercises the job-id -> port derivation
    else:
        slurm.update(SLURM_JOB_ID="7", MASTER_PORT=str(port))
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(n):
        env = worker_env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), **slurm)
        out = open(log_dir / f"launcher-rank{rank}.out", "w")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "worker", "run", *args], cwd=REPO, env=env,
                             stdout=out, stderr=subprocess.STDOUT)
        )
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return codes


def launcher_output(log_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(log_dir.glob("launcher-rank*.out")))


def read_completions(out_dir: Path) -> dict[tuple[int, int], list[int]]:
    records = [json.loads(line) for line in (out_dir / "completions.jsonl").read_text().splitlines()]
    return {(r["batch_size"], r["index"]): r["output_ids"] for r in records}


# Six requests (the first six shipped prompts: 2 to ~20 tokens), so batches are left-padded.
COMMON_RUN_ARGS = ["--num-requests", "6", "--max-new-tokens", "8", "--warmup", "0", "--repeats", "1",
                   "--dtype", "float32", "--device", "cpu", "--dist-timeout", "60"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    proc = run_cli("make-checkpoint", "--config", "tiny", "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def single_run(tiny_checkpoint, tmp_path_factory) -> Path:
    """The 1-process baseline at batch sizes 3 and 6."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = run_cli("run", "--checkpoint", str(tiny_checkpoint), "--mode", "single", "--batch-sizes", "3,6",
                   *COMMON_RUN_ARGS, "--repeats", "2", "--profile", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
