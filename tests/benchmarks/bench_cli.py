"""`dinf` start-up benchmark: wall time of whole commands, each a fresh process, as a user types them.

    .venv/bin/python tests/benchmarks/bench_cli.py [--repeat 15] [--against OTHER_CHECKOUT]

Rows: `dinf --help`; `dinf runs` in a fresh home (no database file yet), over an empty database and
over 1,000 finished runs (the history bench_tui.py builds); `dinf show` of an ingested run with
measurements (tests/storage/fixtures/pp2_bundle) in that database; an argument error; `dinf
completion bash` (run once when completion is set up, never per TAB). Baselines in
the same run: a bare `python -c pass` (the floor no command can beat) and `python -c "import
argparse"` (what any argparse CLI pays). The commands are run round-robin, `--repeat` rounds after
one warm-up round, so a load change on a shared machine touches every row alike; each cell is the
median and the min-max of its rounds, in wall time and in the process's CPU time (user + system,
which a busy machine inflates far less). The last column lists the heavy packages the command loaded
(one extra run each, under `python -X importtime`). Each process runs this checkout's code
(PYTHONPATH), through the `dinf` console script beside the running Python. `--against DIR` adds
every dinf row run with another checkout's code (e.g. `git worktree add /tmp/before main`), in the
same rounds, for a before/after on a shared machine. No thresholds: it reports.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FIXTURE = ROOT / "tests" / "storage" / "fixtures" / "pp2_bundle"
HEAVY = ("sqlmodel", "sqlalchemy", "pydantic", "paramiko", "cryptography", "plotext", "textual", "rich")


def environment(home: Path | None, code: Path = ROOT) -> dict[str, str]:
    """The environment of one run: `home` as DINF_HOME, the dinf code of the checkout `code` first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DINF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    if home is not None:
        env["DINF_HOME"] = str(home)
    return env


def build_history(home: Path, runs: int) -> str | None:
    """A database (made by the service) with `runs` finished runs (bench_tui.py's history) and, if
    any, the fixture bundle ingested; that run's id."""
    from bench_tui import fill_history

    from tui.core.service import Dinf

    with Dinf(db_path=home / "dinf.db", data_dir=home) as dinf:
        if not runs:
            return None
        fill_history(dinf, runs)
        return str(dinf.ingest_dir(FIXTURE).run_id)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run: CPU is user + system of the child, which a busy machine
    inflates far less than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 2):  # 2: the argument-error row
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(argv: list[str], env: dict[str, str]) -> str:
    """The HEAVY packages one run of the command imported (its -X importtime report)."""
    if Path(argv[0]).name == "dinf":  # the console script is a Python file: run it under -X importtime
        argv = [sys.executable, "-X", "importtime", *argv]
    else:
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
              if line.startswith("import time:")}
    return ", ".join(name for name in HEAVY if name in loaded) or "none"


def spread(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{statistics.median(ms):6.0f} ms  ({ms[0]:.0f}-{ms[-1]:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds (after one warm-up round)")
    parser.add_argument("--history", type=int, default=1000, help="runs in the large database")
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout to time beside this one")
    args = parser.parse_args()

    python = sys.executable
    dinf = str(Path(python).with_name("dinf"))
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        empty, full = work / "empty", work / "full"
        show_id = build_history(full, args.history)
        build_history(empty, 0)
        fresh = iter(range(10**6))

        def home(path: Path | None, code: Path):
            if path is None:  # a new, empty DINF_HOME for every run
                return lambda: environment(work / f"fresh-{next(fresh)}", code)
            return lambda: environment(path, code)

        cases = [
            ("python -c pass (floor)", [python, "-c", "pass"], lambda: environment(None)),
            ('python -c "import argparse" (baseline)', [python, "-c", "import argparse"], lambda: environment(None)),
        ]
        for code, suffix in [(ROOT, "")] + ([(args.against.resolve(), f" [{args.against.name}]")] if args.against else []):
            cases += [
                ("dinf --help" + suffix, [dinf, "--help"], home(empty, code)),
                ("dinf runs --bogus (argument error)" + suffix, [dinf, "runs", "--bogus"], home(empty, code)),
                ("dinf runs (fresh home, no database)" + suffix, [dinf, "runs"], home(None, code)),
                ("dinf runs (empty database)" + suffix, [dinf, "runs"], home(empty, code)),
                (f"dinf runs ({args.history:,} runs)" + suffix, [dinf, "runs"], home(full, code)),
                (f"dinf runs --json ({args.history:,} runs)" + suffix, [dinf, "runs", "--json"], home(full, code)),
                ("dinf show RUN (with measurements)" + suffix, [dinf, "show", show_id], home(full, code)),
            ]
        cases.append(("dinf completion bash (once, at set-up)", [dinf, "completion", "bash"], home(empty, ROOT)))
        walls: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        cpus: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for round_ in range(args.repeat + 1):
            for label, argv, env in cases:
                wall, cpu = timed(argv, env())
                if round_:  # round 0 warms the page cache and the .pyc files
                    walls[label].append(wall)
                    cpus[label].append(cpu)
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average "
              f"{os.getloadavg()[0]:.1f}; {args.repeat} rounds, the whole process")
        width = max(len(label) for label, _, _ in cases)
        print(f"{'command':{width}} | {'wall: median (min-max)':24} | {'CPU: median (min-max)':24} | "
              "heavy packages imported")
        for label, argv, env in cases:
            print(f"{label:{width}} | {spread(walls[label]):24} | {spread(cpus[label]):24} | "
                  f"{heavy_imports(argv, env())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
