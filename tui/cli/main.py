"""`dinf`: the headless command line over the same services as the app (no Textual on this path).

    dinf submit [SPEC.json|-] [--set model.config=tiny] [--mode pp] [--ranks-per-node 2] [--wait]
    dinf demo [--wait]                       the 2-rank pipeline demo on the local cluster
    dinf runs [--state S] [--tag T] [--match RE] [--sort COL]  list runs (after polling unfinished ones)
    dinf show RUN                            one run: timeline, measurements, latency stats, correctness, sacct
    dinf tag RUN [+TAG] [-TAG] [TAG]         add (+ or bare) and remove (-) tags; alone, print them
    dinf note RUN [TEXT | --clear]           set or clear the run's note; alone, print it
    dinf logs RUN [-f] [--rank N] [--kind worker|events|launcher]
    dinf cancel RUN
    dinf resubmit RUN [--wait]               a new run with the same cluster, spec and resources
    dinf ingest DIR [--run RUN]              store a result bundle from disk (idempotent)
    dinf export [--format csv|json|parquet] [--run RUN ...] [--experiment ID] [--tag T] [-o FILE]
    dinf trace RUN|DIR [-o FILE]             a profiled run's rank traces merged into one Perfetto file
    dinf clusters                            the configured clusters
    dinf trust CLUSTER [--fingerprint FP]    show / record a cluster's SSH host key
    dinf compare | report | experiment ...   studies over many runs (tui/cli/studies.py)
    dinf completion bash|zsh|tcsh            the shell completion script (tui/cli/completion.py)

RUN is a numeric id, a uid (or a unique prefix of one) or a unique run name. Every command takes
--json for machine-readable output on stdout; messages go to stderr. `--wait` without --json
prints each state change of the run on stdout before its result line, and on a terminal one
progress line rewritten in place (tui/cli/wait_report.py).

Start-up is kept light, since a command is often a whole process: `--help`, argument errors and
`clusters` import neither the service nor SQLModel; `runs` reads with sqlite3 alone unless a run
needs polling (`light_runs`); the service and its backends are imported only by the commands that
use them, and each error's class is looked up only where its module was loaded (`_loaded`).

Exit codes (stable, for scripts):
  0  done
  1  the operation failed (cluster unreachable, submission refused), or `--wait` saw the run end
     in any state but COMPLETED
  2  bad input: usage, a bad spec or resource field (named), a configuration error
  3  no such run
  4  the database can't be used (written by a newer dinf, or not a dinf database)
  130 interrupted (Ctrl-C); a submitted job keeps running
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remote.cluster import ClusterError, Resources
from remote.poller import ACTIVE_S
from tui.cli import studies as study_cli
from tui.cli.completion import SHELLS
from tui.cli.slurm_options import FIELDS as SLURM_OPTION_FIELDS
from tui.cli.slurm_options import add_slurm_options, apply_slurm_options, join_sbatch_values
from tui.core import locations
from tui.core.export import FORMATS, ExportError, repeat_stats, to_csv, to_json, write_parquet
from tui.core.logs.follow import follow_then_drain
from tui.display.tables import text_table
from worker.contract import RunSpec, SpecError

if TYPE_CHECKING:
    from tui.cli.wait_report import WaitReport
    from tui.core.logs.buffers import RankState
    from tui.core.records import RunRecord

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_DATABASE = 4
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input that argparse itself can't see."""


# --- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_sbatch_values(sys.argv[1:] if argv is None else argv))
    try:
        return _dispatch(args)
    except (SpecError, UsageError, *_loaded("tui.core.config", "ConfigError"),
            *_loaded("storage.ingest", "IngestError")) as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    except BrokenPipeError:
        # The reader went away (`dinf logs 3 | head`): not an error. Before the OSError below (it is
        # one). Point stdout at /dev/null so the interpreter's final flush doesn't complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except _loaded("storage.repo", "RunNotFound") as exc:
        return _fail(exc, EXIT_NOT_FOUND)
    except _loaded("storage.light_read", "DatabaseError") as exc:
        return _fail(exc, EXIT_DATABASE)
    except (ClusterError, ExportError, OSError, *_loaded("tui.core.service", "ServiceError")) as exc:
        return _fail(exc, EXIT_FAILED)
    except ValueError as exc:  # the service's field checks (resources.*, rank, experiment_id)
        return _fail(exc, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    """The command's light path if it has one and it can answer, else its handler over the service."""
    light = getattr(args, "light", None)
    if light is not None:
        code = light(args)
        if code is not None:
            return code
    # The service brings SQLModel and the clusters' code: most of a second, paid only here.
    from tui.core.service import Dinf

    with Dinf(db_path=args.db, config_path=args.config, config_required=args.config is not None) as dinf:
        return args.handler(dinf, args)


def _loaded(module: str, name: str) -> tuple[type[BaseException], ...]:
    """The exception class `module.name` if that module is loaded, else none: an error of a module
    that was never imported was never raised, and importing it to name its errors (the service:
    SQLModel) would cost the light commands their start-up."""
    loaded = sys.modules.get(module)
    return (getattr(loaded, name),) if loaded is not None else ()


def run() -> None:
    sys.exit(main())


class _VersionAction(argparse.Action):
    """--version, looked up only when asked: importlib.metadata is ~30 ms of every start-up else."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dinf-tui")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _fail(exc: BaseException, code: int) -> int:
    print(f"dinf: {exc}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinf", description="Run and compare distributed LLaMA inference on Slurm clusters (headless).",
        epilog="Exit codes: 0 ok, 1 failed, 2 bad input, 3 no such run, 4 unusable database.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--db", type=Path, help="database file (default: $DINF_DB, $DINF_HOME/dinf.db or XDG)")
    parser.add_argument("--config", type=Path, help="configuration TOML (default: $DINF_CONFIG or XDG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str, light=None) -> argparse.ArgumentParser:  # noqa: A002
        """`handler(dinf, args)` runs over the service; `light(args)`, where given, runs first without
        it and returns None when it can't answer alone."""
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(handler=handler, light=light)
        return sub

    submit = command("submit", cmd_submit, "record and submit a run")
    submit.add_argument("spec", nargs="?", help="RunSpec JSON file, or - for stdin (default: all defaults)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="set a spec field (dotted for model.*; VALUE is JSON, else a string)")
    submit.add_argument("--mode", help="single, pp, tp or dp")
    submit.add_argument("--batch-sizes", help="comma-separated, e.g. 1,2,4")
    submit.add_argument("--max-new-tokens", type=int)
    submit.add_argument("--name", help="run name (default: the spec's run_name)")
    submit.add_argument("--cluster", help="configured cluster (default: [defaults] cluster, else local)")
    submit.add_argument("--experiment", type=int, help="attach the run to this experiment id")
    _resource_flags(submit)
    submit.add_argument("--dry-run", action="store_true", help="validate and print the batch script only")
    submit.add_argument("--wait", action="store_true", help="wait until the run ends (exit 1 unless COMPLETED)")
    submit.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                        help="with --wait: ask the cluster at least this often (default 5, at least 1)")

    demo = command("demo", cmd_demo, "submit the 2-rank pipeline demo on the local cluster")
    demo.add_argument("--wait", action="store_true")
    demo.add_argument("--poll", type=float, default=None, metavar="SECONDS")

    runs = command("runs", cmd_runs, "list runs", light=light_runs)
    runs.add_argument("--state", action="append", help="only runs in this state (repeatable)")
    runs.add_argument("--tag", action="append", help="only runs with this tag (repeatable: every one must match)")
    runs.add_argument("--experiment", type=int)
    runs.add_argument("--match", metavar="REGEX",
                      help="only runs whose name, uid, cluster, mode, state or a tag matches")
    runs.add_argument("--sort", default="id", choices=RUN_SORT_KEYS, help="sort by this column (default id)")
    runs.add_argument("--no-refresh", action="store_true", help="don't poll clusters first")

    show = command("show", cmd_show, "one run in full")
    show.add_argument("run")
    show.add_argument("--no-refresh", action="store_true")

    tag = command("tag", cmd_tag, "add and remove a run's tags: dinf tag RUN +fast -old (a bare TAG adds)")
    tag.add_argument("run")
    # REMAINDER: "-old" is a tag to remove, not an unknown option.
    tag.add_argument("edits", nargs=argparse.REMAINDER, metavar="[+|-]TAG",
                     help="+TAG or TAG adds it, -TAG removes it; none: print the tags")

    note = command("note", cmd_note, "set, clear or print a run's note")
    note.add_argument("run")
    note.add_argument("text", nargs="?", help="the note (replaces the one there); none: print it")
    note.add_argument("--clear", action="store_true", help="remove the note")

    logs = command("logs", cmd_logs, "print (or follow) a run's per-rank logs")
    logs.add_argument("run")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    logs.add_argument("--rank", type=int, action="append", help="only this rank (repeatable)")
    logs.add_argument("--kind", action="append", choices=("worker", "events", "launcher"),
                      help="which file per rank (default: launcher, the rank's whole output; worker "
                           "where there is none)")
    logs.add_argument("--idle", type=float, default=1.0,
                      help="without -f: stop after this many seconds without new lines")

    resubmit = command("resubmit", cmd_resubmit, "submit a copy of a run (same cluster, spec and resources)")
    resubmit.add_argument("run")
    resubmit.add_argument("--name", help="name of the copy (default: the run's)")
    resubmit.add_argument("--wait", action="store_true")
    resubmit.add_argument("--poll", type=float, default=None, metavar="SECONDS")

    cancel = command("cancel", cmd_cancel, "cancel a run (waits until its job has ended)")
    cancel.add_argument("run")

    ingest = command("ingest", cmd_ingest, "store a result bundle directory (idempotent)")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--run", help="the run it belongs to (default: a new IMPORTED run)")

    export = command("export", cmd_export,
                     "measurements as CSV, JSON or Parquet, one row per run and batch size")
    export.add_argument("--format", choices=FORMATS, default="csv",
                        help="csv (default), json, or parquet (needs pyarrow: pip install 'dinf-tui[parquet]')")
    export.add_argument("--run", action="append", help="only this run (repeatable)")
    export.add_argument("--experiment", type=int)
    export.add_argument("--tag", action="append", help="only runs with this tag (repeatable: every one must match)")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout; parquet needs one)")

    command("clusters", None, "list the configured clusters", light=cmd_clusters)

    trust = command("trust", cmd_trust, "check a cluster's SSH host key; record it once you confirm it")
    trust.add_argument("cluster")
    trust.add_argument("--fingerprint", help="the SHA256:... fingerprint you verified (out of band)")
    trace = command("trace", cmd_trace, "merge a profiled run's per-rank traces into one file for Perfetto")
    trace.add_argument("run", help="run id, uid or name, or a results directory holding rank<r>.trace.json")
    trace.add_argument("-o", "--output", type=Path, help="file to write (default: <run uid>.trace.json here)")
    study_cli.register(commands)  # compare, report, experiment ... (tui/cli/studies.py)

    completion = commands.add_parser("completion", help="print the shell completion script",
                                     description="print the shell completion script: "
                                                 "dinf completion bash > ~/.local/share/bash-completion/completions/dinf")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=None, light=cmd_completion)
    return parser


def _resource_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resources (default: the cluster's [clusters.NAME.slurm] values)")
    group.add_argument("--nodes", type=int)
    group.add_argument("--ranks-per-node", dest="tasks_per_node", type=int, help="ranks (tasks) per node")
    group.add_argument("--gpus-per-node", type=int)
    group.add_argument("--cpus-per-task", type=int)
    group.add_argument("--partition")
    group.add_argument("--account")
    group.add_argument("--qos")
    group.add_argument("--time-limit", dest="time_limit", help="Slurm time limit, e.g. 00:30:00")
    group.add_argument("--constraint")
    group.add_argument("--mem")
    group.add_argument("--container-image", dest="container_image", help="container image (see --container-runtime)")
    study_cli.add_flag_aliases(group)  # --time, --container
    add_slurm_options(group)  # --reservation, --gpu-type, --exclusive, --dependency, --sbatch, ... (shared)


# --- commands ------------------------------------------------------------------------------------


def cmd_submit(dinf, args) -> int:
    spec = build_spec(args)
    cluster_name = args.cluster or dinf.config.default_cluster
    cluster = dinf.config.cluster(cluster_name)
    resources = apply_slurm_options(dataclasses.replace(
        cluster.defaults,
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Resources)
           if f.name not in SLURM_OPTION_FIELDS and getattr(args, f.name, None) is not None},
    ), args)
    if args.dry_run:
        script = dinf.render_script(cluster=cluster_name, spec=spec, resources=resources, name=args.name)
        _emit(args, {"script": script}, script)
        return EXIT_OK
    record = dinf.new_run(cluster=cluster_name, spec=spec, resources=resources, name=args.name,
                          experiment_id=args.experiment)
    record = dinf.submit(record.id)
    return _after_submit(dinf, args, record)


def cmd_resubmit(dinf, args) -> int:
    copy = dinf.clone_run(args.run, name=args.name)
    return _after_submit(dinf, args, dinf.submit(copy.id))


def cmd_demo(dinf, args) -> int:
    return _after_submit(dinf, args, dinf.demo_run())


def _after_submit(dinf, args, record) -> int:
    if record.state == "SUBMIT_FAILED":
        _emit(args, record.to_dict(), None)
        print(f"dinf: run {record.id} ({record.uid}) was not submitted: {record.error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"submitted run {record.id} ({record.uid}) as job {record.job_id} on {record.cluster}", file=sys.stderr)
    if args.wait:
        from tui.cli.wait_report import WaitReport  # only --wait needs it

        # --json stays silent until its one JSON document; otherwise the states (and, on a
        # terminal, the ranks' progress) go to stdout, before the result line.
        report = None if args.json else WaitReport(
            sys.stdout, isatty=sys.stdout.isatty(), width=shutil.get_terminal_size().columns)
        record = wait_for(dinf, record.id, poll_s=args.poll, report=report)
    _emit(args, record.to_dict(), f"{record.id}\t{record.uid}\t{record.state}\t{record.job_id}")
    if args.wait and record.state != "COMPLETED":
        print(f"dinf: run {record.id} ended {record.state}: {record.error or record.state_reason or ''}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def wait_for(dinf, run_id: int, *, poll_s: float | None, report: WaitReport | None = None):
    """Poll until the run ends; a cluster that stops answering is reported (once per new error).

    Waiting is watching: the run's cluster is asked every `poll_s` (default the poller's 5 s, never
    below its 1 s floor) without backing off. Between checks only the database is read. With a
    `report`, each new state is printed, and on a terminal the ranks' progress from their events
    (read on a helper thread, like `dinf logs -f`).
    """
    from tui.display.runs import printable  # rich: only the commands that wait need it

    dinf.watch_run(run_id, every_s=poll_s if poll_s is not None else ACTIVE_S)
    events = _RankEvents(dinf, run_id) if report is not None and report.isatty else None
    last_error = None
    try:
        while True:
            dinf.refresh()
            record = dinf.run(run_id)
            if report is not None:
                report.states(record)
                if events is not None:
                    report.progress(record, events.ranks())
                    if events.error is not None:
                        report.clear()
                        print(f"dinf: warning: no progress from the ranks' events: {printable(events.error)}",
                              file=sys.stderr)
                        events = None
            if record.finished:
                return record
            error = dinf.cluster_errors.get(record.cluster)
            if error and error != last_error:
                if report is not None:
                    report.clear()
                print(f"dinf: warning: cluster {record.cluster} not answering, still waiting: {error}",
                      file=sys.stderr)
            last_error = error
            time.sleep(min(poll_s or 1.0, 1.0) if error is None else (poll_s or ACTIVE_S))
    finally:
        if events is not None:
            events.stop()
        if report is not None:
            report.clear()


class _RankEvents:
    """The run's rank states, folded from its event files as a helper thread reads them."""

    def __init__(self, dinf, run_id: int) -> None:
        from tui.core.logs.buffers import RunLogs

        self._stream = dinf.stream_logs(run_id, kinds=["events"])
        self._batches: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._logs = RunLogs(max_lines=100)  # error lines only; the states are what is read
        self._last_time: dict[str, float] = {}
        self.error: str | None = None
        """Why reading the events stopped, if they did; the wait goes on without progress."""
        threading.Thread(target=self._pump, name="dinf-wait-events", daemon=True).start()

    def _pump(self) -> None:
        try:
            for chunks in self._stream:  # an empty batch every fraction of a second: stop is seen
                if self._stopping.is_set():
                    break
                if chunks:
                    self._batches.put(chunks)
        except Exception as exc:  # noqa: BLE001 - progress is a nicety; the state lines still come
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()

    def ranks(self) -> dict[int, RankState]:
        from tui.core.logs.routing import route_chunks

        while True:
            try:
                chunks = self._batches.get_nowait()
            except queue.Empty:
                return self._logs.rank_states
            self._logs.apply(route_chunks(chunks, self._last_time))

    def stop(self) -> None:
        self._stopping.set()


def light_runs(args) -> int | None:
    """`dinf runs` read with sqlite3 alone, when the service would have nothing to do but read.

    That is when no run is submitted and unfinished (a refresh polls those, so the service and its
    cluster backends are needed), or with --no-refresh; and when the file is at today's schema (else
    the service migrates it, or refuses it). A home without a database lists no runs and, unlike the
    service, creates no file. The records come from the same code as the service's
    (`tui.core.records`), so the listing is the same to the byte.
    """
    from storage.light_read import read_runs
    from tui.core.records import records

    _config(args)  # a broken configuration fails `dinf runs` on either path
    if args.tag:
        return None  # filtering by tag is the service's query (its checks name a bad tag)
    read = read_runs(_db_path(args), experiment_id=args.experiment, states=args.state)
    if read is None or (read.polled and not args.no_refresh):
        return None
    return show_runs(records(read.runs, read.clusters, read.histories, read.tags), args)


def cmd_runs(dinf, args) -> int:
    if not args.no_refresh:
        _refresh(dinf)
    return show_runs(dinf.runs(experiment_id=args.experiment, states=args.state, tags=_checked_tags(args.tag)),
                     args)


def show_runs(records: list[RunRecord], args) -> int:
    """Filter (--match), sort (--sort) and print the runs: a table, or --json."""
    if args.match:
        try:
            pattern = re.compile(args.match, re.IGNORECASE)
        except re.error as exc:
            raise UsageError(f"--match {args.match!r} is not a regular expression: {exc}") from None
        records = [r for r in records
                   if any(pattern.search(str(v or "")) for v in (r.name, r.uid, r.cluster, r.mode, r.state, *r.tags))]
    records.sort(key=lambda r: _sort_key(getattr(r, args.sort)))
    if args.json:
        _print_json([r.to_dict() for r in records])
        return EXIT_OK
    from tui.display.runs import clock, duration, elapsed_s  # with rich: for the table only

    rows = [
        (str(r.id), r.name, r.cluster or "-", r.mode, str(r.num_ranks), r.state, r.job_id or "-",
         clock(r.created_at), duration(elapsed_s(r)), ",".join(r.tags) or "-")
        for r in records
    ]
    print(text_table(("ID", "NAME", "CLUSTER", "MODE", "RANKS", "STATE", "JOB", "CREATED", "ELAPSED", "TAGS"), rows))
    return EXIT_OK


def _checked_tags(tags: list[str] | None) -> list[str] | None:
    """--tag values, each checked (a typo'd tag with a space would otherwise just match nothing)."""
    from storage.tags import check_tags

    return None if not tags else check_tags(tags)


RUN_SORT_KEYS = ("id", "name", "cluster", "mode", "num_ranks", "state", "created_at", "finished_at")


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)


def cmd_show(dinf, args) -> int:
    from tui.display.runs import clock, describe_accuracy, describe_engine, printable  # with rich: not at start-up

    record = dinf.run(args.run)
    if not args.no_refresh and not record.finished and record.job_id:
        _refresh(dinf)
        record = dinf.run(record.id)
    measurements = dinf.measurements(record.id)
    correctness = dinf.correctness(record.id)
    accounting = dinf.accounting(record.id)
    if args.json:
        _print_json({**record.to_dict(), "measurements": measurements, "correctness": correctness,
                     "accounting": accounting})
        return EXIT_OK
    print(f"run {record.id}  {record.name}  ({record.uid})")
    error = record.error
    if record.failure is not None and error:
        # error starts with the failure; show the rest (the peers' own reports) under "then"
        error = error.removeprefix(record.failure.text()).removeprefix("; then ") or None
    fields = [
        ("cluster", record.cluster), ("mode", record.mode), ("ranks", record.num_ranks),
        ("engine", describe_engine(record)),
        ("accuracy", describe_accuracy(json.loads(record.accuracy_json)) if record.accuracy_json else None),
        ("state", record.state + (f" ({record.state_reason})" if record.state_reason else "")),
        ("failure", record.failure.text() if record.failure else None),
        ("job", ", ".join(record.job_ids) or "-"), ("run dir", record.run_dir),
        ("then" if record.failure else "error", error),
        ("load time", f"{record.load_time_s:.3f} s" if record.load_time_s is not None else None),
        ("tags", ", ".join(record.tags)),
        # The note is the user's own text: each line as written, under the label.
        ("note", printable(record.notes, multiline=True).replace("\n", "\n" + " " * 13)),
    ]
    for label, value in fields:
        if value not in (None, ""):
            print(f"  {label:10} {value}")
    print("timeline:")
    for entry in record.history:
        print(f"  {clock(entry.at)}  {entry.state}" + (f"  {entry.reason}" if entry.reason else ""))
    if measurements:
        print("measurements (medians; WALL s is one timed repeat's wall time, ±95% its Student-t interval "
              "over the n repeats):")
        rows = []
        for m in measurements:
            wall = repeat_stats(json.loads(m["wall_s_json"]))
            rows.append((str(m["batch_size"]), _num(m["ttft_median_s"], 1e3), _num(m["tpot_median_s"], 1e3),
                         _num(m["itl_median_s"], 1e3), _num(m["e2e_median_s"], 1e3), _num(m["output_throughput_tok_s"]),
                         _num(m["decode_throughput_tok_s"]), _num(m["per_gpu_output_tok_s"]),
                         f"{_num(wall['median'])} (n={m['repeats'] or 0})", _num(wall["ci95"])))
        print(text_table(("BATCH", "TTFT ms", "TPOT ms", "ITL ms", "E2E ms", "OUT tok/s", "DECODE tok/s",
                          "PER-GPU tok/s", "WALL s", "±95%"), rows, indent="  "))
        print("latency ms over requests (±95%: Student-t half-width of the mean; - where the worker recorded none):")
        rows = [
            (str(m["batch_size"]), label, str(m[f"{prefix}_n"]) if m[f"{prefix}_n"] is not None else "-",
             *(_num(m[f"{prefix}_{part}_s"], 1e3) for part in ("median", "p90", "p99", "mean", "ci95", "std", "min", "max")))
            for m in measurements
            for prefix, label in LATENCY_LABELS.items()
        ]
        print(text_table(("BATCH", "METRIC", "N", "MEDIAN", "P90", "P99", "MEAN", "±95%", "STD", "MIN", "MAX"),
                         rows, indent="  "))
    for c in correctness:
        if c["source"] == "experiment":  # against the experiment's baseline, as `dinf report` judges
            where = f"experiment {printable(c['experiment'])}"
            if c.get("note"):
                print(f"correctness ({where}): {c['note']}")
                continue
            verdict = (c["verdict"] or "noise floor").upper()
            print(f"correctness (batch {c['batch_size']}, {where}) vs {printable(c['reference'])}: "
                  f"{verdict}: {c['reason']}")
            continue
        scope = "all batches" if c["batch_size"] == -1 else f"batch {c['batch_size']}"
        print(f"correctness ({scope}) vs {c['reference'] or '?'}: "
              f"{c['num_exact']}/{c['num_prompts']} exact, rate {_num(c['exact_match_rate'])}")
    for a in accounting:
        print(f"sacct job {a['job_id']}: {a['state']} exit {a['exit_code']} elapsed {a['elapsed']} "
              f"nodes {a['nodelist']} maxrss {a['max_rss']}")
    return EXIT_OK


LATENCY_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E", "prefill": "PREFILL"}


def cmd_tag(dinf, args) -> int:
    from storage.tags import parse_edit

    edits = list(args.edits)
    if edits and edits[0] == "--":
        edits = edits[1:]
    if "--json" in edits:  # after RUN the flag lands among the edits; no tag starts with '-', so it is the flag
        edits.remove("--json")
        args.json = True
    edit = parse_edit(edits)  # TagError (bad input, naming the tag) before anything is written
    record = dinf.run(args.run)
    if edit.add or edit.remove:
        record = dinf.edit_tags(record.id, add=edit.add, remove=edit.remove)
    _emit(args, {"id": record.id, "uid": record.uid, "tags": list(record.tags)},
          f"{record.id}\t{','.join(record.tags) or '-'}")
    return EXIT_OK


def cmd_note(dinf, args) -> int:
    from tui.display.runs import printable  # rich: not at start-up

    if args.clear and args.text is not None:
        raise UsageError("give a note or --clear, not both")
    record = dinf.run(args.run)
    if args.clear or args.text is not None:
        record = dinf.annotate(record.id, notes="" if args.clear else args.text)
    if args.json:
        _print_json({"id": record.id, "uid": record.uid, "notes": record.notes})
    elif record.notes:
        print(printable(record.notes, multiline=True))
    return EXIT_OK


def cmd_logs(dinf, args) -> int:
    record = dinf.run(args.run)
    # The launcher's log holds what the rank printed: every line of the worker's own log (it echoes
    # them) and what only the process saw (tracebacks, srun). Both by default printed each line twice.
    kinds = args.kind or (["launcher"] if record.job_id is not None and record.logs_dir else ["worker"])
    if record.output_dir is None:
        raise UsageError(f"run {record.id} is {record.state} and has no logs yet")
    stream = dinf.stream_logs(record.id, ranks=args.rank, kinds=kinds)
    labels = {s.path: (s.rank, s.kind) for s in dinf.log_sources(record.id)}
    multi = len({labels[p] for p in labels if labels[p][1] in kinds
                 and (args.rank is None or labels[p][0] in args.rank)}) > 1
    finished = (lambda: _finished(dinf, record.id)) if args.follow else None
    for batch in follow_then_drain(stream, quiet_s=args.idle, finished=finished):
        for chunk in batch:
            rank, kind = labels.get(chunk.path, (None, "?"))
            for line in chunk.lines:
                if args.json:
                    print(json.dumps({"rank": rank, "kind": kind, "line": line}), flush=False)
                elif multi:
                    print(f"[{rank} {kind}] {line}", flush=False)
                else:
                    print(line, flush=False)
        sys.stdout.flush()
    return EXIT_OK


def _finished(dinf, run_id: int) -> bool:
    _refresh(dinf, quiet=True)
    return dinf.run(run_id).finished


def cmd_cancel(dinf, args) -> int:
    before = dinf.run(args.run)
    record = dinf.cancel(before.id)
    if before.finished:
        print(f"run {record.id} had already finished ({record.state}); nothing to cancel", file=sys.stderr)
    _emit(args, record.to_dict(), f"{record.id}\t{record.uid}\t{record.state}")
    return EXIT_OK


def cmd_ingest(dinf, args) -> int:
    report = dinf.ingest_dir(args.path, run_id=args.run)
    _emit(args, dataclasses.asdict(report),
          f"run {report.run_id}: {report.measurements} measurements, {report.completions} completions, "
          f"{report.correctness} correctness results" + (" (new imported run)" if report.created_run else ""))
    return EXIT_OK


def cmd_trace(dinf, args) -> int:
    from tui.studies.traces import TraceError, write_merged

    as_dir = Path(args.run)
    if as_dir.is_dir():
        directory, title = as_dir, as_dir.name
    else:
        record = dinf.run(args.run)
        if not record.local_results_dir:
            raise TraceError(f"run {record.id} ({record.name}) has no fetched results yet ({record.state}); "
                             "its traces come with them")
        directory, title = Path(record.local_results_dir), record.uid
    output = args.output or Path(f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', title).strip('-.') or 'run'}.trace.json")
    written = write_merged(directory, output, title=title)
    _emit(args, {"written": str(written)}, f"{written}  (open it at https://ui.perfetto.dev)")
    return EXIT_OK


def cmd_export(dinf, args) -> int:
    if args.format == "parquet" and args.output is None:
        raise UsageError("--format parquet writes a binary file: give it one with -o FILE.parquet")
    run_ids = None if not args.run else [dinf.run(ref).id for ref in args.run]
    rows = dinf.export_rows(run_ids=run_ids, experiment_id=args.experiment, tags=_checked_tags(args.tag))
    if args.format == "parquet":
        write_parquet(rows, args.output)
        print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
        _emit(args, {"written": str(args.output), "rows": len(rows)}, None)
        return EXIT_OK
    if args.format == "json" or args.json:  # --json, like every other command, means JSON
        text = to_json(rows)
    else:
        text = to_csv(rows)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_clusters(args) -> int:
    """The configuration alone: no database, no service."""
    config = _config(args)
    clusters = list(config.clusters.values())
    if args.json:
        _print_json([{**c.to_dict(), "default": c.name == config.default_cluster} for c in clusters])
        return EXIT_OK
    rows = [
        (c.name + (" *" if c.name == config.default_cluster else ""), c.backend, c.host or "-", c.workdir)
        for c in clusters
    ]
    print(text_table(("NAME", "BACKEND", "HOST", "WORKDIR"), rows))
    print(f"(configuration: {config.path})", file=sys.stderr)
    return EXIT_OK


def cmd_completion(args) -> int:
    from tui.cli.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return EXIT_OK


def cmd_trust(dinf, args) -> int:
    """Unknown host keys are refused; this shows the key and records it only for the confirmed fingerprint."""
    from remote.ssh import HostKeyError  # paramiko: only this command needs it

    config = dinf.config.cluster(args.cluster)
    if config.backend != "slurm":
        raise UsageError(f"cluster {args.cluster!r} runs on this machine; there is no host key to trust")
    if config.transport == "openssh":
        raise UsageError(f"cluster {args.cluster!r} uses transport = \"openssh\": OpenSSH checks and records its "
                         f"host key; run `ssh {config.host}` in a terminal and compare the fingerprint it shows")
    connection = dinf.cluster(args.cluster).connection
    try:
        connection.open()
    except HostKeyError as exc:
        changed = " (DIFFERENT from the key known_hosts has: it may be a man-in-the-middle)" if exc.changed else ""
        shown = {"cluster": args.cluster, "host": exc.host, "key_type": exc.key_type,
                 "fingerprint": exc.fingerprint, "changed": exc.changed}
        if args.fingerprint is None:
            _emit(args, {**shown, "trusted": False}, f"{exc.host} presents a {exc.key_type} key {exc.fingerprint}{changed}")
            print(f"dinf: not trusted. Verify it with the cluster's admins, then run: "
                  f"dinf trust {args.cluster} --fingerprint {exc.fingerprint}", file=sys.stderr)
            return EXIT_FAILED
        if args.fingerprint != exc.fingerprint:
            raise UsageError(f"--fingerprint {args.fingerprint} is not the key {exc.host} presents "
                             f"({exc.fingerprint}); nothing was recorded")
        exc.trust()
        _emit(args, {**shown, "trusted": True}, f"trusted {exc.host} {exc.key_type} {exc.fingerprint}")
        return EXIT_OK
    _emit(args, {"cluster": args.cluster, "trusted": True}, f"{args.cluster}: host key already trusted")
    return EXIT_OK


# --- spec building --------------------------------------------------------------------------------


def build_spec(args) -> RunSpec:
    """The spec file (or defaults), then --set overrides, then the shortcut flags; validated at the end."""
    data: dict[str, Any] = {}
    if args.spec:
        text = sys.stdin.read() if args.spec == "-" else _read(args.spec)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError({"<spec>": f"{args.spec} is not valid JSON: {exc}"}) from exc
        if not isinstance(data, dict):
            raise SpecError({"<spec>": f"{args.spec} must hold a JSON object"})
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise UsageError(f"--set {item!r}: {parent} is not an object")
        target[leaf] = value
    if args.mode is not None:
        data["mode"] = args.mode
    if args.max_new_tokens is not None:
        data["max_new_tokens"] = args.max_new_tokens
    if args.batch_sizes is not None:
        try:
            data["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        except ValueError:
            raise SpecError({"batch_sizes": f"--batch-sizes {args.batch_sizes!r}: expected integers like 1,2,4"})
    return RunSpec.from_dict(data)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read spec file {path}: {exc.strerror}") from exc


# --- without the service -------------------------------------------------------------------------


def _config(args):
    """The configuration the service would load (same file, same checks), without the service."""
    from tui.core.config import load_config

    return load_config(args.config, data_dir=locations.data_dir(), required=args.config is not None)


def _db_path(args) -> Path:
    """The database file the service would open."""
    return (args.db if args.db is not None else locations.db_path()).expanduser()


# --- output helpers ------------------------------------------------------------------------------


def _refresh(dinf, *, quiet: bool = False) -> None:
    dinf.refresh()
    if not quiet:
        for name, error in dinf.cluster_errors.items():
            print(f"dinf: warning: cluster {name} not reachable, states may be stale: {error}", file=sys.stderr)


def _emit(args, data: Any, text: str | None) -> None:
    if args.json:
        _print_json(data)
    elif text is not None:
        print(text)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _num(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.3g}" if abs(value * scale) < 1000 else f"{value * scale:.0f}"


if __name__ == "__main__":
    run()
