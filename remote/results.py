"""Copying a finished run's files to the laptop, in the one layout every backend produces.

The worker's output directory (result.json, completions.jsonl, spec.json, each rank's events and
log) lands at the top of the local directory, the launcher's per-rank stdout/stderr under `logs/`.
A backend says only how to list a directory's regular files and how to copy one file; this module
opens no connection and knows nothing of Slurm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from remote.cluster import PreparedRun

LOGS_SUBDIR = "logs"
"""Where the launcher's logs go inside the local copy."""


def copy_run_files(
    prepared: PreparedRun,
    local_dir: str | Path,
    *,
    list_files: Callable[[str], list[str]],
    copy_file: Callable[[str, Path], None],
) -> list[str]:
    """Copy every file of the run's output and logs directories; returns the local paths.

    `list_files(directory)` names the regular files directly in it; `copy_file(path, local_path)`
    copies one of them.
    """
    fetched = []
    for source_dir, subdir in ((prepared.output_dir, ""), (prepared.logs_dir, LOGS_SUBDIR)):
        target = Path(local_dir) / subdir
        target.mkdir(parents=True, exist_ok=True)
        for name in list_files(source_dir):
            local_path = target / name
            copy_file(f"{source_dir}/{name}", local_path)
            fetched.append(str(local_path))
    return fetched
