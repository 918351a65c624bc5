"""The `dinf compare`, `dinf report` and `dinf experiment ...` subcommands.

`register(commands)` adds them to the `dinf` parser (tui/cli/main.py calls it); each handler takes the
service (`Dinf`) and the parsed arguments and returns an exit code, like the other commands.

    dinf compare RUN... [--experiment EXP] [--baseline RUN] [--batch-size B] [--no-charts]
    dinf report EXPERIMENT... -o FILE.md [--png]
    dinf experiment presets
    dinf experiment plan PRESET [study options] [--write-specs DIR]
    dinf experiment create PRESET --name NAME [study options] [--cluster C] [--no-submit | --record-only] [--serial]
    dinf experiment sweep --name NAME [SPEC.json] --axis FIELD=V1,V2 ... [--paired] [--cluster C]
    dinf experiment list | show EXP | submit EXP [--serial] | resubmit EXP | attach EXP DIR...

Errors raise the exceptions tui/cli/main.py maps to exit codes (ExperimentError is a ValueError: 2).

Building the parser imports nothing heavy (`dinf --help` runs it): the handlers import the storage
layer (SQLModel) and the study modules that read it when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from remote.cluster import Resources
from tui.cli.slurm_options import add_slurm_options, apply_slurm_options
from tui.display.tables import text_table
from tui.studies.catalog import PRESETS, plan
from tui.studies.presets import (
    ClusterShape,
    ExperimentError,
    ExperimentPlan,
    StudyConfig,
    parse_axis,
    plan_sweep,
)
from worker.contract import ModelSource, RunSpec

RESOURCE_FLAGS = ("partition", "account", "qos", "time_limit", "constraint", "mem", "container_image",
                  "cpus_per_task")


def register(commands: argparse._SubParsersAction) -> None:
    def command(parent, name: str, handler, help: str) -> argparse.ArgumentParser:  # noqa: A002
        sub = parent.add_parser(name, help=help, description=help)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler)
        return sub

    compare = command(commands, "compare", cmd_compare,
                      "compare runs: fields that differ, metrics against a baseline, charts")
    compare.add_argument("runs", nargs="*", metavar="RUN", help="run id, uid or name")
    compare.add_argument("--experiment", action="append", default=[], metavar="EXP",
                         help="add every run with results of this experiment (repeatable)")
    compare.add_argument("--baseline", metavar="RUN", help="the run others are measured against (default: an experiment's baseline cell, else "
                              "the first single-rank run, else the first)")
    compare.add_argument("--batch-size", type=int, help="only this batch size")
    compare.add_argument("--no-charts", action="store_true")
    compare.add_argument("--width", type=int, default=76, help="chart width in columns")

    report = command(commands, "report", cmd_report, "write the Markdown report of experiments")
    report.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="experiment id or name")
    report.add_argument("-o", "--output", type=Path, required=True, help="Markdown file to write")
    report.add_argument("--png", action="store_true", help="also write PNG charts beside it (needs matplotlib)")

    experiment = commands.add_parser("experiment", help="studies made of several runs (presets, sweeps)",
                                     description="studies made of several runs (presets, sweeps)")
    sub = experiment.add_subparsers(dest="experiment_command", required=True, metavar="ACTION")

    command(sub, "presets", cmd_presets, "list the presets")

    plan_cmd = command(sub, "plan", cmd_plan, "show the runs a preset would make, without recording anything")
    plan_cmd.add_argument("preset", choices=sorted(PRESETS))
    _study_flags(plan_cmd)
    plan_cmd.add_argument("--write-specs", type=Path, metavar="DIR",
                          help="write each cell's spec.json (and resources.json) under DIR/<cell>/ "
                               "for launching by hand (torchrun)")

    create = command(sub, "create", cmd_create, "record an experiment from a preset and submit its runs")
    create.add_argument("preset", choices=sorted(PRESETS))
    _study_flags(create)
    create.add_argument("--cluster", help="configured cluster (default: [defaults] cluster, else local)")
    mode = create.add_mutually_exclusive_group()
    mode.add_argument("--no-submit", action="store_true", help="record the runs as DRAFT only")
    mode.add_argument("--record-only", action="store_true",
                      help="record the plan without runs (results are attached later: experiment attach)")
    create.add_argument("--write-specs", type=Path, metavar="DIR",
                        help="also write each cell's spec.json and resources.json under DIR/<cell>/")
    _serial_flag(create)

    sweep = command(sub, "sweep", cmd_sweep, "record a paired or Cartesian sweep over spec/resource fields")
    sweep.add_argument("spec", nargs="?", type=Path, help="base RunSpec JSON (default: all defaults)")
    sweep.add_argument("--name", required=True)
    sweep.add_argument("--axis", action="append", required=True, metavar="FIELD=V1,V2",
                       help="a field and its values (resources.<field> for resources; ';' separates list values)")
    sweep.add_argument("--paired", action="store_true", help="zip the axes instead of their product")
    sweep.add_argument("--cluster")
    sweep.add_argument("--nodes", type=int, default=1)
    sweep.add_argument("--ranks-per-node", type=int, default=1)
    sweep.add_argument("--gpus-per-node", type=int, default=0)
    sweep.add_argument("--no-submit", action="store_true")

    command(sub, "list", cmd_list, "list experiments")
    show = command(sub, "show", cmd_show, "an experiment's grid of cells and their states")
    show.add_argument("experiment")
    submit = command(sub, "submit", cmd_submit, "submit cells that have no run yet, or whose run is DRAFT")
    submit.add_argument("experiment")
    submit.add_argument("--cluster")
    _serial_flag(submit)
    resubmit = command(sub, "resubmit", cmd_resubmit, "a new run for every failed cell")
    resubmit.add_argument("experiment")
    resubmit.add_argument("--cluster", help="default: the cluster the failed run used")
    attach = command(sub, "attach", cmd_attach,
                     "ingest result bundles made by hand and link each to its cell (by run name)")
    attach.add_argument("experiment")
    attach.add_argument("directories", nargs="+", type=Path)


def _study_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("study")
    group.add_argument("--name", default="study", help="experiment name (also prefixes its run names)")
    group.add_argument("--model", default="tiny", help="synthetic config name (tiny, open_llama_3b_v2)")
    group.add_argument("--checkpoint", help="local Hugging Face directory instead of a synthetic model")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--dtype", default="float16")
    group.add_argument("--device", default="auto")
    group.add_argument("--modes", default="pp,tp,dp", help="parallel modes, comma-separated")
    group.add_argument("--nodes", type=int, default=1, help="nodes the cluster can give")
    group.add_argument("--ranks-per-node", type=int, default=2, help="GPUs (or CPU ranks) per node")
    group.add_argument("--cpu", action="store_true", help="CPU ranks: ask for no GPUs")
    group.add_argument("--batch-size", type=int, default=20)
    group.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="batch sweep / profile sizes")
    group.add_argument("--max-new-tokens", type=int, default=64)
    group.add_argument("--num-requests", type=int,
                       help="requests per measurement (scaling default: batch size x --batches-per-gpu, "
                            "x the largest rank count for strong scaling)")
    group.add_argument("--batches-per-gpu", type=int, default=8,
                       help="scaling without --num-requests: batches each GPU runs (default 8)")
    group.add_argument("--micro-batches", type=int, default=1)
    group.add_argument("--warmup", type=int, default=1)
    group.add_argument("--repeats", type=int, default=3)
    group.add_argument("--rank-counts", help="scaling: rank counts, e.g. 1,2,4 (default: powers of 2)")
    group.add_argument("--scale-by", choices=("gpus", "nodes"), default="gpus")
    group.add_argument("--parallel-ranks", type=int, help="ranks per parallel mode (default 2)")
    group.add_argument("--prompts-file")
    group.add_argument("--quant-schemes", default="none,int8,int4", help="quantization study: schemes compared")
    group.add_argument("--quant-batch-sizes", default="1,64", help="quantization study: one job per batch size")
    for flag in RESOURCE_FLAGS:
        group.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=int if flag == "cpus_per_task" else str)
    add_flag_aliases(group)
    add_slurm_options(group)  # the same --reservation, --exclusive, --sbatch, ... as `dinf submit`


def _serial_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", action="store_true",
                        help="on Slurm, each cell's job waits for the one before (--dependency=afterany:JOB), so "
                             "no two cells share nodes or time each other (local cells run one at a time anyway)")


FLAG_ALIASES = {"--time": "time_limit", "--container": "container_image"}
"""Other spellings of resource flags, accepted by `submit` and `experiment` alike and left out of
--help: the canonical names are the resource fields' own (`--time-limit`, `--container-image`)."""


def add_flag_aliases(group: argparse._ActionsContainer) -> None:
    for flag, dest in FLAG_ALIASES.items():
        group.add_argument(flag, dest=dest, help=argparse.SUPPRESS)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ExperimentError(f"{flag}: expected integers like 1,2,4, got {text!r}") from None


def study_config(dinf, args, *, cluster: str | None = None) -> StudyConfig:
    """The study settings from the flags, starting from the cluster's default resources."""
    resources = Resources()
    local = False
    if cluster is not None:
        cluster_config = dinf.config.cluster(cluster)
        resources = dataclasses.replace(cluster_config.defaults)
        local = cluster_config.backend == "local"
    for flag in RESOURCE_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            setattr(resources, flag, value)
    resources = apply_slurm_options(resources, args)
    if args.checkpoint:
        model = ModelSource(source="checkpoint", path=args.checkpoint, seed=args.seed)
    else:
        model = ModelSource(source="synthetic", config=args.model, seed=args.seed)
    return StudyConfig.of(
        name=args.name, model=model, dtype=args.dtype, device=args.device,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        shape=ClusterShape(nodes=args.nodes, ranks_per_node=args.ranks_per_node, gpus=not (args.cpu or local)),
        resources=resources, batch_size=args.batch_size, batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
        max_new_tokens=args.max_new_tokens, num_requests=args.num_requests,
        batches_per_gpu=args.batches_per_gpu, micro_batches=args.micro_batches,
        warmup=args.warmup, repeats=args.repeats, rank_counts=_ints(args.rank_counts, "--rank-counts"),
        scale_by=args.scale_by, parallel_ranks=args.parallel_ranks, prompts_file=args.prompts_file,
        quant_schemes=tuple(s.strip() for s in args.quant_schemes.split(",") if s.strip()),
        quant_batch_sizes=_ints(args.quant_batch_sizes, "--quant-batch-sizes"),
    )


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _plan_text(p: ExperimentPlan) -> str:
    rows = [[c.key, c.role, c.spec.mode, str(c.num_ranks), f"{c.resources.nodes}x{c.resources.tasks_per_node}",
             str(c.resources.gpus_per_node), ",".join(str(b) for b in c.spec.batch_sizes),
             str(c.spec.num_requests or "prompts"), "yes" if c.spec.profile else ""]
            for c in p.cells]
    lines = [f"{p.kind} {p.name}: {len(p.cells)} runs",
             text_table(("CELL", "ROLE", "MODE", "RANKS", "NODESxTASKS", "GPUS/NODE", "BATCH SIZES", "REQUESTS",
                         "PROFILE"), rows)]
    for key, why in p.skipped:
        lines.append(f"not run: {key}: {why}")
    return "\n".join(lines)


# --- handlers --------------------------------------------------------------------------------------


def cmd_compare(dinf, args) -> int:
    from tui.core.comparisons import compare  # plotext: only when charting
    from tui.studies.comparison import format_comparison, run_label

    comparison = compare(dinf, args.runs, experiments=args.experiment, baseline=args.baseline,
                         batch_size=args.batch_size)
    if args.json:
        _print_json({
            "baseline": comparison.baseline.id,
            "runs": [{"id": r.id, "name": r.name, "label": run_label(r)} for r in comparison.runs],
            "diff": [{"field": name, "values": list(values)} for name, values in comparison.diff],
            "derived": [{"run": d.run.id, "batch_size": d.point.batch_size, "output_tok_s": d.point.output_tok_s,
                         "speedup": d.speedup, "efficiency": d.efficiency, "memory_ratio": d.memory_ratio,
                         "ttft_s": d.point.ttft_s, "tpot_s": d.point.tpot_s, "wall_s": d.point.wall_s,
                         "wall_ci95_s": d.point.wall_ci95, "repeats": d.point.repeats}
                        for d in comparison.derived],
            "correctness": [{"run": r.id, "batch_size": b, "exact": c.exact_matches, "n": c.n,
                             "first_divergences": [x.first_divergence for x in c.checks]}
                            for r, b, c in comparison.correctness],
            "warnings": list(comparison.warnings),
        })
        return 0
    sys.stdout.write(format_comparison(comparison, with_charts=not args.no_charts, width=args.width))
    return 0


def cmd_report(dinf, args) -> int:
    from storage.db import read_session
    from tui.studies.report import write_report  # plotext: only when reporting
    from tui.studies.results import load_experiments

    with read_session(dinf.engine) as session:
        experiments = load_experiments(session, args.experiments)
    written = write_report(experiments, args.output, png=args.png)
    if args.json:
        _print_json({"written": [str(p) for p in written]})
    else:
        for path in written:
            print(path)
    return 0


def cmd_presets(dinf, args) -> int:
    rows = {name: {"description": preset.description, "available": True} for name, preset in PRESETS.items()}
    if args.json:
        _print_json(rows)
        return 0
    for name, row in rows.items():
        print(f"{name:16} {row['description']}" + ("" if row["available"] else "  [not available yet]"))
    return 0


def cmd_plan(dinf, args) -> int:
    p = plan(args.preset, study_config(dinf, args))
    if args.write_specs:
        write_specs(p, args.write_specs)
    if args.json:
        _print_json(p.parameters())
    else:
        print(_plan_text(p))
    return 0


def write_specs(p: ExperimentPlan, root: Path) -> None:
    """Each cell's spec.json and resources.json under root/<cell>/, for launching by hand."""
    for cell in p.cells:
        folder = root / cell.key.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(cell.spec.to_json() + "\n")
        (folder / "resources.json").write_text(json.dumps(dataclasses.asdict(cell.resources), indent=2,
                                                          sort_keys=True) + "\n")


def _launch_text(launches) -> str:
    return "\n".join(f"{l.cell:24} {('run ' + str(l.run.id)) if l.run else '-':10} {l.note}" for l in launches)


def cmd_create(dinf, args) -> int:
    from tui.core import experiment_runs

    if args.serial and (args.record_only or args.no_submit):
        raise ExperimentError("--serial chains the cells' jobs as they are submitted; with --no-submit or "
                              "--record-only nothing is (give it to `dinf experiment submit EXP --serial` later)")
    cluster = args.cluster or dinf.config.default_cluster
    p = plan(args.preset, study_config(dinf, args, cluster=None if args.record_only else cluster))
    experiment_id = experiment_runs.record_plan(dinf, p)
    print(f"experiment {experiment_id} ({p.name}): {len(p.cells)} cells", file=sys.stderr)
    if args.write_specs:
        write_specs(p, args.write_specs)
    launches = [] if args.record_only else experiment_runs.launch(dinf, experiment_id, cluster=cluster,
                                                                  submit=not args.no_submit, serial=args.serial)
    if args.json:
        _print_json({"experiment": experiment_id, "cells": [
            {"cell": l.cell, "run": l.run.id if l.run else None, "note": l.note} for l in launches]})
    elif launches:
        print(_launch_text(launches))
    failed = [l for l in launches if l.run is not None and l.run.state == "SUBMIT_FAILED"]
    return 1 if failed else 0


def cmd_sweep(dinf, args) -> int:
    from tui.core import experiment_runs

    base = RunSpec.from_json(args.spec.read_text()) if args.spec else RunSpec()
    cluster = args.cluster or dinf.config.default_cluster
    resources = dataclasses.replace(dinf.config.cluster(cluster).defaults, nodes=args.nodes,
                                    tasks_per_node=args.ranks_per_node, gpus_per_node=args.gpus_per_node)
    axes = dict(parse_axis(a) for a in args.axis)
    p = plan_sweep(args.name, base, resources, axes, paired=args.paired)
    experiment_id = experiment_runs.record_plan(dinf, p)
    launches = experiment_runs.launch(dinf, experiment_id, cluster=cluster, submit=not args.no_submit)
    if args.json:
        _print_json({"experiment": experiment_id, "cells": [
            {"cell": l.cell, "run": l.run.id if l.run else None, "note": l.note} for l in launches]})
    else:
        print(f"experiment {experiment_id} ({p.name}): {len(p.cells)} cells", file=sys.stderr)
        print(_launch_text(launches))
    return 0


def cmd_list(dinf, args) -> int:
    from storage import repo
    from storage.db import read_session

    with read_session(dinf.engine) as session:
        experiments = repo.list_experiments(session=session)
        rows = []
        for e in experiments:
            runs = repo.list_runs(session=session, experiment_id=e.id)
            rows.append({"id": e.id, "name": e.name, "kind": e.kind, "runs": len(runs)})
    if args.json:
        _print_json(rows)
    else:
        print(text_table(("ID", "NAME", "STUDY", "RUNS"),
                         [[str(r["id"]), r["name"], r["kind"], str(r["runs"])] for r in rows]))
    return 0


def cmd_show(dinf, args) -> int:
    from tui.core import experiment_runs

    dinf.refresh()
    exp = experiment_runs.load(dinf, args.experiment)
    cells = [{"cell": c.cell.key, "role": c.cell.role, "mode": c.cell.spec.mode, "ranks": c.cell.num_ranks,
              "state": c.state, "run": c.run.id if c.run else None, "attempts": c.attempts,
              "error": c.run.error if c.run else None} for c in exp.cells]
    if args.json:
        _print_json({"id": exp.id, "name": exp.name, "kind": exp.kind, "cells": cells,
                     "skipped": exp.plan.skipped if exp.plan else []})
        return 0
    print(f"experiment {exp.id} {exp.name} ({exp.kind})")
    print(text_table(("CELL", "ROLE", "MODE", "RANKS", "STATE", "RUN", "ATTEMPTS"),
                     [[c["cell"], c["role"], c["mode"], str(c["ranks"]), c["state"], str(c["run"] or "-"),
                       str(c["attempts"])] for c in cells]))
    for key, why in (exp.plan.skipped if exp.plan else ()):
        print(f"not run: {key}: {why}")
    if any(_backend(dinf, c.run.cluster) == "local" for c in exp.cells if c.run is not None):
        print("cells on the local backend run one at a time (each waits, PENDING (Lane), for the one before)")
    return 0


def _backend(dinf, cluster: str | None) -> str | None:
    try:
        return dinf.config.cluster(cluster).backend if cluster else None
    except Exception:  # noqa: BLE001 - a cluster since removed from the configuration
        return None


def cmd_submit(dinf, args) -> int:
    from tui.core import experiment_runs

    launches = experiment_runs.launch(dinf, args.experiment, cluster=args.cluster or dinf.config.default_cluster,
                                      serial=args.serial)
    print(_launch_text(launches) if not args.json else json.dumps(
        [{"cell": l.cell, "run": l.run.id if l.run else None, "note": l.note} for l in launches]))
    return 0


def cmd_resubmit(dinf, args) -> int:
    from tui.core import experiment_runs

    dinf.refresh()
    launches = experiment_runs.resubmit_failed(dinf, args.experiment, cluster=args.cluster)
    if args.json:
        _print_json([{"cell": l.cell, "run": l.run.id if l.run else None, "note": l.note} for l in launches])
    elif launches:
        print(_launch_text(launches))
    else:
        print("no failed cells", file=sys.stderr)
    return 0


def cmd_attach(dinf, args) -> int:
    from tui.core import experiment_runs

    attached = experiment_runs.attach_bundles(dinf, args.experiment, args.directories)
    if args.json:
        _print_json([{"directory": str(d), "cell": k, "run": r} for d, k, r in attached])
    else:
        for directory, key, run_id in attached:
            print(f"{directory} -> cell {key} (run {run_id})")
    return 0
