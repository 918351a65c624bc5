"""What every backend does the same way: the run directory's file names, the run id and workdir
checks, the job command and spec rewritten to point into it, and waiting for a cancelled job to end.

Shared by `remote.slurm_cluster` and `remote.local`. It opens no
connection and imports no SSH library, so the local backend (and the app with only a local
cluster) never loads paramiko: its import alone held ~4 MB of the app's RSS (bench_tui.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from remote import slurm
from remote.cluster import ClusterError, JobStatus
from worker.contract import RunSpec, SpecError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROMPTS_FILE = "prompts.jsonl"
JOB_ID_FILE = "job_id"


def check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise ClusterError(
            f"run id {run_id!r} is not filesystem-safe; use letters, digits, '.', '_' and '-' "
            "(the free-text name belongs in job_name)"
        )


def check_workdir(workdir: str, *, what: str = "workdir") -> None:
    """ClusterError naming the field if Slurm would rewrite the path of the run's logs."""
    problem = slurm.slurm_path_problem(workdir)
    if problem:
        raise ClusterError(f"{what} {workdir!r} {problem}; choose a directory without ' \" \\ or %")


def expand_command(template: list[str], *, python: str, spec: str, run_dir: str, output_dir: str) -> list[str]:
    """Fill {python} {spec} {run_dir} {output_dir} in a job command template (tests use stand-ins)."""
    values = {"python": python, "spec": spec, "run_dir": run_dir, "output_dir": output_dir}
    expanded = []
    for word in template:  # literal replacement: shell snippets keep their own ${...} and {...}
        for key, value in values.items():
            word = word.replace("{" + key + "}", value)
        expanded.append(word)
    return expanded


def rewrite_spec(spec_json: str, *, output_dir: str, prompts_path: str | None) -> str:
    """The spec with output_dir (and prompts_file) pointing into the run directory; validated first."""
    try:
        spec = RunSpec.from_json(spec_json)
    except SpecError as exc:
        raise ClusterError(f"the run's spec is invalid, nothing was uploaded:\n{exc}") from exc
    spec.output_dir = output_dir
    if prompts_path is not None:
        spec.prompts_file = prompts_path
    return spec.to_json()


def wait_until_ended(
    status_of: Callable[[], JobStatus], *, wait_s: float, poll_s: float, sleep: Callable[[float], None] = time.sleep
) -> JobStatus | None:
    """Ask `status_of` until the job is in a terminal state; None once `wait_s` passed without it
    (the caller escalates, or says the job is still running)."""
    deadline = time.monotonic() + wait_s
    while True:
        current = status_of()
        if current.state.is_terminal:
            return current
        if time.monotonic() > deadline:
            return None
        sleep(poll_s)
