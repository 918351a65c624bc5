"""The Slurm options `dinf submit` and `dinf experiment plan|create` share, and how they land on Resources.

    --reservation NAME          --gpu-type TYPE (--gpus-per-node=TYPE:N)    --exclusive / --no-exclusive
    --dependency EXPR           --sbatch=--NAME[=VALUE] (repeatable)         --container-runtime apptainer|pyxis
    --container-mount SRC:DST[:ro|rw] (repeatable)

The repeatable ones add to the cluster's `[clusters.NAME.slurm]` lists; the others replace its value.
Only the argparse wiring lives here: what a value may be is `remote.slurm.resource_problems`, checked
with the rest of the run before anything is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from remote.cluster import Resources
from remote.slurm import CONTAINER_RUNTIMES

SCALAR_FIELDS = ("reservation", "gpu_type", "exclusive", "dependency", "container_runtime")
LIST_FIELDS = ("extra_sbatch", "container_mounts")
FIELDS = SCALAR_FIELDS + LIST_FIELDS
SBATCH_FLAG = "--sbatch"


def add_slurm_options(group: argparse._ActionsContainer) -> None:
    group.add_argument("--reservation", help="Slurm reservation to run in")
    group.add_argument("--gpu-type", dest="gpu_type", metavar="TYPE",
                       help="GRES type of the GPUs, e.g. h100: asks --gpus-per-node=TYPE:N")
    group.add_argument("--exclusive", action=argparse.BooleanOptionalAction, default=None,
                       help="whole nodes, shared with no other job")
    group.add_argument("--dependency", metavar="EXPR",
                       help="Slurm dependency, e.g. afterok:123:456 or singleton")
    group.add_argument(SBATCH_FLAG, dest="extra_sbatch", action="append", metavar="--NAME[=VALUE]",
                       help="an extra #SBATCH option, e.g. --sbatch=--comment=text (repeatable; not one dinf sets)")
    group.add_argument("--container-runtime", dest="container_runtime", choices=CONTAINER_RUNTIMES,
                       help="how --container-image runs: apptainer exec (default) or pyxis (srun --container-image)")
    group.add_argument("--container-mount", dest="container_mounts", action="append", metavar="SRC:DST[:ro]",
                       help="a host path shown in the container (repeatable)")


def apply_slurm_options(resources: Resources, args: argparse.Namespace) -> Resources:
    """`resources` with the options given on the command line (lists added to, the rest replaced)."""
    changes: dict[str, object] = {}
    for name in SCALAR_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    for name in LIST_FIELDS:
        given = getattr(args, name, None)
        if given:
            changes[name] = [*getattr(resources, name), *given]
    return dataclasses.replace(resources, **changes)


def join_sbatch_values(argv: Sequence[str]) -> list[str]:
    """`--sbatch --comment=x` as `--sbatch=--comment=x`: argparse takes a value that starts with '--'
    for the next option, and every value of --sbatch does."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word == SBATCH_FLAG:
            value = next(words, None)
            joined.append(word if value is None else f"{SBATCH_FLAG}={value}")
            if value is None:
                break
        else:
            joined.append(word)
    return joined
