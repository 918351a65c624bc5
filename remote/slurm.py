"""Slurm as pure functions over strings: the batch script, command argv lists, output parsers.

What it does: renders the sbatch script a run executes (sorted `#SBATCH` flags; environment set-up;
`srun --kill-on-bad-exit=1` with one task per GPU and per-rank logs `<logs>/%j-rank%t.out`; optional
`apptainer exec --nv IMAGE`), builds sbatch/squeue/sacct/scancel argv lists, parses `--parsable2`
style output by its header (never `--json`, whose shape changes between releases), and maps Slurm's
state strings ("CANCELLED by 1001", "3:0", short codes) onto `JobState`.

What it doesn't: run anything. `remote.slurm_cluster` sends these over SSH.

Free text (the job name) and paths never go into `#SBATCH` lines: sbatch reads those one line at a
time, so a newline in a value would end the directive and the rest would become a shell line. They
travel on the sbatch command line instead (quoted by `remote.quoting`), and inside the script body
(where bash's single quotes hold newlines) only through `quote()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from remote.cluster import FailureSummary, JobState, JobStatus, PythonEnvironment, Resources
from remote.quoting import export_lines, quote

SACCT_ACCOUNTING_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "NodeList", "AllocTRES", "MaxRSS", "TotalCPU")
SACCT_STATUS_FIELDS = ("JobID", "State", "ExitCode", "DerivedExitCode", "Elapsed", "NodeList", "Reason")
# squeue has no --parsable2; an explicit -o format with '|' and its header line is the equivalent.
SQUEUE_FIELDS = (("JOBID", "%i"), ("STATE", "%T"), ("REASON", "%r"), ("TIME", "%M"), ("NODELIST", "%N"))

_SHORT_STATES = {
    "PD": "PENDING", "R": "RUNNING", "CG": "COMPLETING", "CD": "COMPLETED", "F": "FAILED",
    "CA": "CANCELLED", "TO": "TIMEOUT", "NF": "NODE_FAIL", "OOM": "OUT_OF_MEMORY", "PR": "PREEMPTED",
    "BF": "BOOT_FAIL", "DL": "DEADLINE", "S": "SUSPENDED", "RQ": "REQUEUED", "CF": "CONFIGURING",
    "RS": "RESIZING", "RH": "REQUEUED", "RF": "REQUEUED", "SE": "FAILED", "ST": "SUSPENDED",
}
# States Slurm has that the interface folds into its nearest neighbour.
_ALIASES = {
    "REQUEUE_HOLD": "REQUEUED", "REQUEUE_FED": "REQUEUED", "SPECIAL_EXIT": "FAILED", "STOPPED": "SUSPENDED",
    "SIGNALING": "RUNNING", "STAGE_OUT": "COMPLETING", "RESV_DEL_HOLD": "PENDING", "REVOKED": "CANCELLED",
}
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+\-\[\]&|!()*/@ ]+$")
_TIME_LIMIT = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(:\d{1,2}(:\d{1,2})?)?|UNLIMITED|INFINITE)$")


class SlurmOutputError(ValueError):
    """Slurm printed something these parsers cannot read."""


# --- states and fields -------------------------------------------------------------------------


def parse_state(text: str) -> tuple[JobState, str | None]:
    """'CANCELLED by 1001' → (CANCELLED, 'by 1001'); 'PD' → PENDING; unknown → (UNKNOWN, text)."""
    text = text.strip()
    if not text:
        return JobState.UNKNOWN, None
    word, _, detail = text.partition(" ")
    word = word.rstrip("+").upper()
    word = _SHORT_STATES.get(word, word)
    word = _ALIASES.get(word, word)
    try:
        return JobState(word), (detail.strip() or None)
    except ValueError:
        return JobState.UNKNOWN, text


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct ExitCode 'code:signal' → (code, signal); '' → (None, None)."""
    text = text.strip()
    if not text:
        return None, None
    code, _, signal = text.partition(":")
    try:
        return int(code), (int(signal) if signal else 0)
    except ValueError as exc:
        raise SlurmOutputError(f"cannot read exit code {text!r} (expected 'code:signal')") from exc


def parse_duration(text: str) -> float | None:
    """Slurm durations: [D-][HH:]MM:SS[.fff] (Elapsed, TotalCPU, squeue %M) → seconds."""
    text = text.strip()
    if not text or text in {"INVALID", "UNLIMITED", "N/A"}:
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = text.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError as exc:
        raise SlurmOutputError(f"cannot read duration {text!r}") from exc
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return days * 86400 + seconds


def parse_memory(text: str) -> int | None:
    """MaxRSS '38784K' → bytes."""
    text = text.strip()
    if not text:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(float(text))


def parse_table(text: str, separator: str = "|") -> list[dict[str, str]]:
    """Rows of `--parsable2`-style output keyed by its header line (column order is not trusted)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split(separator)
    rows = []
    for line in lines[1:]:
        cells = line.split(separator)
        if len(cells) != len(header):
            raise SlurmOutputError(f"row {line!r} has {len(cells)} fields, the header {header} has {len(header)}")
        rows.append({name.strip(): cell.strip() for name, cell in zip(header, cells)})
    return rows


def parse_sbatch_job_id(stdout: str) -> str:
    """`sbatch --parsable` prints 'jobid' or 'jobid;cluster'."""
    for line in stdout.splitlines():
        candidate = line.strip().split(";")[0]
        if candidate.isdigit():
            return candidate
    raise SlurmOutputError(f"could not read a job id from sbatch's output {stdout!r}")


def statuses_from_squeue(text: str) -> dict[str, JobStatus]:
    statuses = {}
    for row in parse_table(text):
        state, detail = parse_state(row["STATE"])
        reason = row.get("REASON") or detail
        nodelist = row.get("NODELIST") or None
        statuses[row["JOBID"]] = JobStatus(
            job_id=row["JOBID"],
            state=state,
            reason=None if reason in (None, "None") else reason,
            elapsed_s=parse_duration(row.get("TIME", "")),
            nodelist=nodelist,
        )
    return statuses


def statuses_from_sacct(text: str) -> dict[str, JobStatus]:
    """Allocation lines only (steps like '12.batch' / '12.0' are skipped)."""
    statuses = {}
    for row in parse_table(text):
        job_id = row["JobID"]
        if "." in job_id:
            continue
        state, detail = parse_state(row["State"])
        code, signal = parse_exit_code(row.get("ExitCode", ""))
        # With srun --kill-on-bad-exit the batch step reports the signal that killed the other
        # tasks (15); DerivedExitCode, the highest exit code of any step, keeps the task's own code.
        derived, _ = parse_exit_code(row.get("DerivedExitCode", ""))
        if derived:
            code = derived
        reason = row.get("Reason") or None
        statuses[job_id] = JobStatus(
            job_id=job_id,
            state=state,
            reason=detail or (None if reason in (None, "None") else reason),
            exit_code=code,
            signal=signal,
            elapsed_s=parse_duration(row.get("Elapsed", "")),
            nodelist=None if row.get("NodeList") in (None, "", "None assigned") else row["NodeList"],
        )
    return statuses


def merge_statuses(job_ids: list[str], squeue: dict[str, JobStatus], sacct: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """squeue is live (pending reasons); sacct knows how a job ended (exit codes) and lags a little."""
    merged = {}
    for job_id in job_ids:
        live, accounted = squeue.get(job_id), sacct.get(job_id)
        if accounted and accounted.state.is_terminal:
            merged[job_id] = accounted
        elif live:
            merged[job_id] = live
        elif accounted:
            merged[job_id] = accounted
        else:
            merged[job_id] = JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="not known to squeue or sacct")
    return merged


STEPS_KEY = "Steps"
"""Where `accounting_from_sacct` keeps the step rows (a list of dicts beside the allocation's strings)."""


def accounting_from_sacct(text: str, job_id: str) -> dict:
    """The allocation's fields, with MaxRSS the largest over its steps (the allocation line has none).

    The step rows themselves ride along under STEPS_KEY: they tell how each step ended, which
    `summarize_failure` reads, and they are kept with the accounting record.
    """
    rows = parse_table(text)
    allocation = next((r for r in rows if r["JobID"] == job_id), None)
    if allocation is None:
        return {}
    result: dict = {name: allocation.get(name, "") for name in SACCT_ACCOUNTING_FIELDS}
    steps = [r for r in rows if r["JobID"].startswith(job_id + ".")]
    step_rss = [(parse_memory(r.get("MaxRSS", "")) or 0, r.get("MaxRSS", "")) for r in steps]
    if not result["MaxRSS"] and step_rss:
        result["MaxRSS"] = max(step_rss)[1]
    result[STEPS_KEY] = steps
    return result


# --- argv builders -----------------------------------------------------------------------------


def squeue_argv(job_ids: list[str]) -> list[str]:
    fmt = "|".join(code for _, code in SQUEUE_FIELDS)
    # -t all: also jobs that just ended (kept MinJobAge seconds), so a fast job is never "missing".
    return ["squeue", "-t", "all", "-j", ",".join(job_ids), "-o", fmt]


def sacct_status_argv(job_ids: list[str]) -> list[str]:
    return ["sacct", "--parsable2", "-X", "-j", ",".join(job_ids), f"--format={','.join(SACCT_STATUS_FIELDS)}"]


def sacct_accounting_argv(job_id: str) -> list[str]:
    return ["sacct", "--parsable2", "-j", job_id, f"--format={','.join(SACCT_ACCOUNTING_FIELDS)}"]


def sinfo_partitions_argv() -> list[str]:
    return ["sinfo", "-h", "-o", "%P"]


def partitions_from_sinfo(text: str) -> list[str]:
    """`sinfo -h -o %P` lines ('debug*' marks the default) → partition names, in order, once each."""
    names: list[str] = []
    for line in text.splitlines():
        name = line.strip().rstrip("*")
        if name and name not in names:
            names.append(name)
    return names


def scancel_argv(job_id: str) -> list[str]:
    return ["scancel", job_id]


def batch_log_file(job_id: str) -> str:
    """The batch script's own output in the logs directory: srun's and slurmstepd's messages."""
    return f"{job_id}-batch.out"


def sbatch_argv(script_path: str, *, job_name: str, run_dir: str, test_only: bool = False) -> list[str]:
    """sbatch with the free-text and path flags that must not live in #SBATCH lines."""
    argv = ["sbatch", "--parsable", f"--job-name={job_name}", f"--chdir={run_dir}",
            f"--output={escape_filename_pattern(run_dir)}/logs/{batch_log_file('%j')}"]
    if test_only:
        argv.append("--test-only")
    return argv + [script_path]


SLURM_REWRITTEN = {"'": "a quote", '"': "a quote", "\\": "a backslash", "%": "a %"}


def slurm_path_problem(path: str) -> str | None:
    """Why Slurm would not write logs where `path` says, or None.

    sbatch strips backslashes (and trips on quotes) in `--output`, and srun expands `%` patterns a
    second time even when escaped as `%%`: the job then fails with no reason, or writes its logs
    somewhere else. Such paths are refused up front; a control character (newline, tab) too.
    """
    for char, what in SLURM_REWRITTEN.items():
        if char in path:
            return f"holds {what} ({char!r}), which Slurm rewrites in log paths"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "holds a control character (newline, tab, ...)"
    return None


def escape_filename_pattern(path: str) -> str:
    """Slurm expands %j, %t, ... in --output; a literal % in a path must be %%."""
    return path.replace("%", "%%")


# --- the batch script --------------------------------------------------------------------------


def resource_flags(resources: Resources) -> dict[str, str]:
    """The #SBATCH flags for `resources`; every value checked so it cannot break the directive line."""
    r = resources
    problems = {}
    for name in ("nodes", "tasks_per_node", "cpus_per_task"):
        value = getattr(r, name)
        if name == "cpus_per_task" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems[name] = f"must be a positive integer, got {value!r}"
    for name in ("gpus_per_node",):
        value = getattr(r, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems[name] = f"must be a non-negative integer, got {value!r}"
    if r.time_limit is not None and not _TIME_LIMIT.match(str(r.time_limit)):
        problems["time_limit"] = f"{r.time_limit!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)"
    for name in ("partition", "account", "qos", "constraint", "mem"):
        value = getattr(r, name)
        if value is not None and (not isinstance(value, str) or not _SAFE_VALUE.match(value)):
            problems[name] = f"{value!r} has characters Slurm does not accept here (letters, digits, _.,:=+-[]&|!()*/@)"
    if problems:
        raise ValueError("invalid resources: " + "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    flags = {"nodes": str(r.nodes), "ntasks-per-node": str(r.tasks_per_node)}
    if r.gpus_per_node:
        flags["gpus-per-node"] = str(r.gpus_per_node)
    for key, value in (("cpus-per-task", r.cpus_per_task), ("partition", r.partition), ("account", r.account),
                       ("qos", r.qos), ("time", r.time_limit), ("constraint", r.constraint), ("mem", r.mem)):
        if value is not None and value != "":
            flags[key] = str(value)
    return flags


@dataclass(frozen=True)
class ScriptPaths:
    run_dir: str
    logs_dir: str
    output_dir: str
    spec_path: str


def script_paths(run_dir: str) -> ScriptPaths:
    return ScriptPaths(
        run_dir=run_dir,
        logs_dir=f"{run_dir}/logs",
        output_dir=f"{run_dir}/out",
        spec_path=f"{run_dir}/spec.json",
    )


def worker_command(python: str, spec_path: str) -> list[str]:
    """The worker's entry point as the job runs it."""
    return [python, "-m", "worker", "run", "--spec", spec_path]


def render_batch_script(
    *,
    run_id: str,
    resources: Resources,
    environment: PythonEnvironment,
    run_dir: str,
    command: list[str],
) -> str:
    """The whole sbatch script. `command` is the per-rank argv (the worker, or a test's stand-in)."""
    paths = script_paths(run_dir)
    flags = resource_flags(resources)
    lines = [
        "#!/bin/bash",
        f"# dinf run {run_id}: rendered by remote.slurm.render_batch_script.",
        "# The job name, working directory and batch log are given on the sbatch command line.",
    ]
    lines += [f"#SBATCH --{key}={flags[key]}" for key in sorted(flags)]
    lines += ["", "set -eo pipefail", f"cd {quote(paths.run_dir)}", "", "# environment"]
    lines += [f"module load {quote(m)}" for m in environment.modules]
    if environment.venv:
        lines.append(f"source {quote(environment.venv.rstrip('/') + '/bin/activate')}")
    lines += export_lines(environment.env)
    lines += list(environment.setup_lines)
    lines += ["", "# one task per GPU (or per requested task); per-rank logs named by job id and rank"]
    srun = [
        "srun",
        "--kill-on-bad-exit=1",
        "--unbuffered",
        f"--nodes={resources.nodes}",
        f"--ntasks-per-node={resources.tasks_per_node}",
        f"--output={escape_filename_pattern(paths.logs_dir)}/%j-rank%t.out",
    ]
    if resources.container_image:
        srun += ["apptainer", "exec", "--nv", resources.container_image]
    lines.append(" ".join(quote(word) for word in srun + command))
    return "\n".join(lines) + "\n"


def parse_time_limit(text: str | None) -> float | None:
    """Slurm's --time formats → seconds (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)."""
    if text is None or str(text).strip() in ("", "UNLIMITED", "INFINITE"):
        return None
    text = str(text).strip()
    if not _TIME_LIMIT.match(text):
        raise ValueError(f"time_limit {text!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        hms = [int(p) for p in text.split(":")] + [0] * (3 - len(text.split(":")))
        return days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return parts[0] * 60.0
    if len(parts) == 2:
        return parts[0] * 60.0 + parts[1]
    return parts[0] * 3600.0 + parts[1] * 60 + parts[2]


def format_duration(seconds: float, *, fraction: bool = False) -> str:
    """Seconds → Slurm's [D-]HH:MM:SS (Elapsed) or MM:SS.mmm (TotalCPU, with `fraction`)."""
    if fraction:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes):02d}:{rest:06.3f}"
    total = int(round(seconds))
    days, total = divmod(total, 86400)
    hours, total = divmod(total, 3600)
    minutes, secs = divmod(total, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


# --- why a job failed ----------------------------------------------------------------------------
#
# sacct knows each step's end (state, exit code, signal) but not which task of a step died: with
# `srun --kill-on-bad-exit=1` the step of a rank killed by SIGKILL reads "CANCELLED 0:15", the
# signal srun then sent its peers. srun itself names the task, its node and how it ended, in the
# batch log, in the order it learnt of them, so its first line is the rank that died first:
#
#   srun: error: node2: task 1: Killed
#   srun: launch/slurm: _step_signal: Terminating StepId=1.0
#   srun: error: node1: task 0: Terminated
#   srun: error: node2: tasks 2-3: Exited with exit code 3
#
# The descriptions are glibc's strsignal() texts on the cluster, so they are read with a fixed
# table rather than this machine's libc (a macOS laptop words them differently).

SIGNAL_DESCRIPTIONS = {
    "Hangup": 1, "Interrupt": 2, "Quit": 3, "Illegal instruction": 4, "Trace/breakpoint trap": 5,
    "Aborted": 6, "Bus error": 7, "Floating point exception": 8, "Killed": 9, "User defined signal 1": 10,
    "Segmentation fault": 11, "User defined signal 2": 12, "Broken pipe": 13, "Alarm clock": 14,
    "Terminated": 15, "CPU time limit exceeded": 24, "File size limit exceeded": 25,
}
SIGNAL_NAMES = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
    9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
    24: "SIGXCPU", 25: "SIGXFSZ",
}
_SRUN_TASK_END = re.compile(r"^srun: error: (?P<node>[^\s:]+): tasks? (?P<tasks>[\d,\-]+): (?P<how>.+?)\s*$")
_EXITED = re.compile(r"^Exited with exit code (\d+)$")
_JOB_END = re.compile(r"\*\*\* (?:JOB|STEP) \S+ ON (?P<node>\S+) CANCELLED AT \S+(?: DUE TO (?P<why>[A-Z ]+?))?(?: \(|\s*\*\*\*)")
_NODE_FAILURE = re.compile(r"^srun: error: Node failure on (?P<node>\S+)")
_OOM = re.compile(r"error: Detected (\d+) oom-kill event\(s\) in (?:StepId=)?(?P<step>[^\s.]+(?:\.[^\s.]+)?)")


@dataclass(frozen=True)
class TaskEnd:
    """One of srun's lines about tasks that ended badly, in the batch log's order."""

    ranks: tuple[int, ...]
    node: str
    how: str
    """srun's words: 'Killed', 'Segmentation fault (core dumped)', 'Exited with exit code 3'."""
    exit_code: int | None = None
    signal: int | None = None

    @property
    def cause(self) -> str:
        if self.exit_code is not None:
            return f"exited with code {self.exit_code}"
        if self.how == "Out Of Memory":
            return "killed for running out of memory"
        if self.signal is not None:
            core = " (core dumped)" if "core dumped" in self.how else ""
            return f"killed by signal {self.signal} ({SIGNAL_NAMES.get(self.signal, self.how)}){core}"
        return self.how

    @property
    def who(self) -> str:
        ranks = ", ".join(str(r) for r in self.ranks)
        return f"rank{'s' if len(self.ranks) > 1 else ''} {ranks} on {self.node}"


def parse_task_ranges(text: str) -> tuple[int, ...]:
    """srun's task lists: '1', '2-3', '0,2-3' → (0, 2, 3)."""
    ranks: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise SlurmOutputError(f"cannot read the task list {text!r}")
        ranks += range(int(first), int(last or first) + 1)
    return tuple(ranks)


def parse_srun_task_ends(log_text: str) -> list[TaskEnd]:
    """Every `srun: error: NODE: task(s) N: HOW` line of a batch log, in order."""
    ends = []
    for line in log_text.splitlines():
        match = _SRUN_TASK_END.match(line.strip())
        if not match:
            continue
        how = match["how"]
        exited = _EXITED.match(how)
        signal = SIGNAL_DESCRIPTIONS.get(how.removesuffix(" (core dumped)"))
        ends.append(TaskEnd(
            ranks=parse_task_ranges(match["tasks"]), node=match["node"], how=how,
            exit_code=int(exited.group(1)) if exited else None, signal=None if exited else signal,
        ))
    return ends


def job_end_notes(log_text: str) -> list[str]:
    """What slurmstepd and srun say about the whole job: time limit, node failure, OOM kills."""
    notes = []
    for line in log_text.splitlines():
        line = line.strip()
        if match := _JOB_END.search(line):
            why = (match["why"] or "").lower()
            notes.append(f"Slurm cancelled the job on {match['node']}" + (f" due to {why}" if why else ""))
        elif match := _NODE_FAILURE.match(line):
            notes.append(f"node {match['node']} failed")
        elif match := _OOM.search(line):
            notes.append(f"the kernel killed a process of step {match['step']} for memory (oom-kill)")
    return notes


def steps_from_sacct(rows: list[dict[str, str]], job_id: str) -> list[JobStatus]:
    """The steps of one job ('12.batch', '12.0', ...) from `sacct --parsable2` rows (`parse_table`)."""
    steps = []
    for row in rows:
        step_id = row.get("JobID", "")
        if not step_id.startswith(f"{job_id}."):
            continue
        state, detail = parse_state(row.get("State", ""))
        code, signal = parse_exit_code(row.get("ExitCode", ""))
        nodelist = row.get("NodeList") or None
        steps.append(JobStatus(job_id=step_id, state=state, reason=detail, exit_code=code, signal=signal,
                               elapsed_s=parse_duration(row.get("Elapsed", "")),
                               nodelist=None if nodelist == "None assigned" else nodelist))
    return steps


def _step_end(step: JobStatus) -> str:
    how = step.state.value
    if step.reason and step.state == JobState.CANCELLED:
        how += f" {step.reason}"
    if step.signal:
        how += f" by signal {step.signal} ({SIGNAL_NAMES.get(step.signal, '?')})"
    elif step.exit_code:
        how += f" with exit code {step.exit_code}"
    return f"step {step.job_id} {how}" + (f" on {step.nodelist}" if step.nodelist else "")


def summarize_failure(
    *, job_id: str, sacct_rows: list[dict[str, str]] | None = None, batch_log: str | None = None
) -> FailureSummary | None:
    """The failure of job `job_id`, told straight; None if neither source shows one.

    `sacct_rows` are `sacct --parsable2 -j JOB` rows with the steps (`accounting_from_sacct` keeps them
    under STEPS_KEY); `batch_log` is the job's `--output` file (`batch_log_file`), where srun and
    slurmstepd write. Either may be missing.
    """
    steps = steps_from_sacct(sacct_rows, job_id) if sacct_rows else []
    failed_steps = [s for s in steps if s.state.is_terminal and s.state != JobState.COMPLETED
                    and not s.job_id.endswith((".batch", ".extern"))]
    ends = parse_srun_task_ends(batch_log) if batch_log else []
    notes = job_end_notes(batch_log) if batch_log else []
    # A time limit or a node failure ends every task: the tasks' deaths are its consequences.
    job_causes = [n for n in notes if " due to " in n or n.startswith("node ")]
    if job_causes:
        consequences = [f"{end.who}: {end.cause}" for end in ends] + [n for n in notes if n != job_causes[0]]
        return FailureSummary(rank=None, node=None, signal=None, exit_code=None, cause=job_causes[0],
                              consequences=tuple(consequences), source="srun")
    if ends:
        first, rest = ends[0], ends[1:]
        consequences = [f"{end.who}: {end.cause}" + (" when srun ended the step" if end.signal == 15 else "")
                        for end in rest]
        # A step srun ended with SIGTERM says nothing the task lines did not; an exit code may.
        consequences += [_step_end(s) for s in failed_steps if s.signal != 15] + notes
        return FailureSummary(rank=first.ranks[0], node=first.node, signal=first.signal, exit_code=first.exit_code,
                              cause=f"{first.who} died first: {first.cause}", consequences=tuple(consequences),
                              source="srun")
    if failed_steps:
        first_step = failed_steps[0]
        return FailureSummary(rank=None, node=first_step.nodelist, signal=first_step.signal or None,
                              exit_code=first_step.exit_code or None, cause=_step_end(first_step),
                              consequences=tuple([_step_end(s) for s in failed_steps[1:]] + notes), source="sacct")
    if notes:
        return FailureSummary(rank=None, node=None, signal=None, exit_code=None, cause=notes[0],
                              consequences=tuple(notes[1:]), source="srun")
    return None
