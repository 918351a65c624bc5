"""`SlurmCluster`: the `Cluster` interface over one SSH connection to a Slurm login node.

What it does: uploads a run (spec, prompts, batch script) by SFTP into `<workdir>/runs/<run_id>`
(mode 0700), previews and preflights (`sbatch --test-only`, script on stdin: nothing is written),
submits with `sbatch --parsable`, reports the status of many jobs in ONE round trip (squeue and
sacct together), cancels and waits for the terminal state, streams every log over the one SFTP
channel from byte offsets, fetches results and sacct accounting.

What it doesn't: build strings (`remote.slurm`), quote (`remote.quoting`), manage the connection
(`remote.ssh`), or decide when to poll (`remote.poller`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from remote import slurm
from remote.cluster import (
    ClusterError,
    JobState,
    JobStatus,
    LogChunk,
    PreparedRun,
    PythonEnvironment,
    Resources,
    RunBundle,
)
from remote.logstream import MAX_READ, follow
from remote.quoting import join_sections, split_sections
from remote.results import copy_run_files
from remote.run_dir import (
    JOB_ID_FILE,
    PROMPTS_FILE,
    check_run_id,
    check_workdir,
    expand_command,
    rewrite_spec,
    wait_until_ended,
)
from remote.ssh import DEFAULT_SSH_CONFIG, CommandFailed, SshConnection, SshError, SshOptions, resolve_target

SCRIPT_FILE = "job.sbatch"


class SlurmCluster:
    """A Slurm cluster reached over SSH."""

    def __init__(
        self,
        connection: SshConnection | None = None,
        *,
        name: str = "slurm",
        host: str | None = None,
        workdir: str = "~/dinf-runs",
        python: PythonEnvironment | None = None,
        job_command: list[str] | None = None,
        ssh_options: SshOptions | None = None,
        ssh_config: str | None = DEFAULT_SSH_CONFIG,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """Either an open-able `connection`, or a `host` alias resolved through ~/.ssh/config.

        `workdir` is absolute, or relative to the remote home (`~/x` or `x`). `job_command` overrides
        the worker (a template with {python} {spec} {run_dir} {output_dir}); tests use stand-ins.
        Nothing connects until the first operation that needs the cluster.
        """
        if connection is None:
            if not host:
                raise ClusterError(f"cluster {name!r} has no host; set host to a ~/.ssh/config alias or user@hostname")
            connection = SshConnection(resolve_target(host, ssh_config=ssh_config), ssh_options)
        self.name = name
        self.connection = connection
        self.environment = python or PythonEnvironment()
        self.job_command = job_command
        check_workdir(workdir)
        workdir = workdir.removeprefix("~/") if workdir != "~" else "."
        self._workdir = workdir
        self._resolved_workdir: str | None = workdir.rstrip("/") if workdir.startswith("/") else None
        self._sleep = sleep
        self.scheduler_calls = 0
        """Round trips made to the scheduler (the benchmark reads it)."""
        self._partitions: list[str] | None = None

    # --- paths and rendering -----------------------------------------------------------------

    @property
    def workdir(self) -> str:
        if self._resolved_workdir is None:
            home = self.connection.home().rstrip("/")
            relative = self._workdir.strip("/")
            resolved = home if relative in ("", ".") else f"{home}/{relative}"
            check_workdir(resolved, what=f"the work directory {resolved!r} (under the remote home)")
            self._resolved_workdir = resolved
        return self._resolved_workdir

    def run_dir(self, run_id: str) -> str:
        check_run_id(run_id)
        return f"{self.workdir}/runs/{run_id}"

    def _command(self, run_dir: str) -> list[str]:
        paths = slurm.script_paths(run_dir)
        if self.job_command is None:
            return slurm.worker_command(self.environment.python, paths.spec_path)
        return expand_command(
            self.job_command, python=self.environment.python, spec=paths.spec_path,
            run_dir=run_dir, output_dir=paths.output_dir,
        )

    def preview(self, bundle: RunBundle) -> str:
        """The batch script; its resources checked, the partition against `sinfo` if the cluster answers."""
        run_dir = self.run_dir(bundle.run_id)
        try:
            script = slurm.render_batch_script(
                run_id=bundle.run_id, resources=bundle.resources, environment=self.environment,
                run_dir=run_dir, command=self._command(run_dir),
            )
        except ValueError as exc:
            raise ClusterError(str(exc)) from exc
        problem = self.partition_problem(bundle.resources)
        if problem:
            raise ClusterError(f"resources.partition: {problem}")
        return script

    def preflight(self, bundle: RunBundle) -> str:
        """sbatch --test-only with the script on stdin: Slurm's verdict, nothing written or queued."""
        script = self.preview(bundle)
        # No --chdir/--output here: the run directory does not exist yet, and test-only runs nothing.
        argv = ["sbatch", "--parsable", "--test-only", f"--job-name={bundle.job_name}"]
        self.scheduler_calls += 1
        result = self.connection.run(argv, stdin=script.encode(), check=False)
        if not result.ok:
            raise ClusterError(f"Slurm would reject this job: {result.tail()}\n(command: {result.command})")
        return (result.stderr.strip() or result.stdout.strip()).removeprefix("sbatch: ")

    def partitions(self) -> list[str]:
        """The cluster's partitions (`sinfo`), asked once and remembered."""
        if self._partitions is None:
            self.scheduler_calls += 1
            result = self.connection.run(slurm.sinfo_partitions_argv())
            self._partitions = slurm.partitions_from_sinfo(result.stdout)
        return self._partitions

    def partition_problem(self, resources: Resources) -> str | None:
        """Why `resources.partition` names no partition of this cluster; None if it does, or if
        the cluster can't be asked (then sbatch, or the connection's own error, says what's wrong)."""
        if not resources.partition:
            return None
        try:
            known = self.partitions()
        except (ClusterError, OSError):
            return None
        missing = [p for p in resources.partition.split(",") if p and p not in known]
        if not known or not missing:
            return None
        return f"{self.name} has no partition {', '.join(map(repr, missing))}; sinfo lists {', '.join(known)}"

    # --- prepare / submit --------------------------------------------------------------------

    def prepare(self, bundle: RunBundle) -> PreparedRun:
        run_dir = self.run_dir(bundle.run_id)
        paths = slurm.script_paths(run_dir)
        script = self.preview(bundle)  # validates resources before anything is written
        prompts_path = f"{run_dir}/{PROMPTS_FILE}" if bundle.prompts_jsonl is not None else None
        spec_json = rewrite_spec(bundle.spec_json, output_dir=paths.output_dir, prompts_path=prompts_path)
        self.connection.makedirs(f"{self.workdir}/runs", 0o700)
        self.connection.mkdir_exclusive(run_dir, 0o700)
        try:
            for sub in (paths.logs_dir, paths.output_dir):
                self.connection.mkdir_exclusive(sub, 0o700)
            self.connection.put_bytes(paths.spec_path, spec_json.encode())
            if prompts_path is not None:
                self.connection.put_bytes(prompts_path, bundle.prompts_jsonl.encode())
            self.connection.put_bytes(f"{run_dir}/{SCRIPT_FILE}", script.encode(), mode=0o700)
        except BaseException:
            self._remove_quietly(run_dir)  # nothing half-written stays behind
            raise
        return PreparedRun(
            run_id=bundle.run_id, run_dir=run_dir, script_path=f"{run_dir}/{SCRIPT_FILE}",
            output_dir=paths.output_dir, logs_dir=paths.logs_dir,
        )

    def _remove_quietly(self, run_dir: str) -> None:
        try:
            self.connection.remove_tree(run_dir)
        except (SshError, OSError):
            pass

    def submit(self, prepared: PreparedRun, bundle: RunBundle) -> str:
        argv = slurm.sbatch_argv(prepared.script_path, job_name=bundle.job_name, run_dir=prepared.run_dir)
        self.scheduler_calls += 1
        try:
            # Not idempotent: after a dropped connection we cannot know whether sbatch ran.
            result = self.connection.run(argv, idempotent=False)
        except CommandFailed as exc:
            raise ClusterError(
                f"Slurm rejected run {bundle.run_id} (nothing was queued): {exc.result.tail()}\n"
                f"  $ {exc.result.command}"
            ) from exc
        job_id = slurm.parse_sbatch_job_id(result.stdout)
        self.connection.put_bytes(f"{prepared.run_dir}/{JOB_ID_FILE}", (job_id + "\n").encode())
        return job_id

    # --- status / cancel ---------------------------------------------------------------------

    def status(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Every job's status: one squeue for all of them; sacct only for those squeue can't tell
        (jobs that ended, for their exit codes, or that it no longer holds). Jobs that are pending
        or running cost one scheduler command per poll."""
        if not job_ids:
            self.connection.open()  # an empty poll still proves the cluster is reachable
            return {}
        for job_id in job_ids:
            if not str(job_id).isdigit():
                raise ClusterError(f"{job_id!r} is not a Slurm job id")
        job_ids = [str(j) for j in job_ids]
        squeue_rc, squeue_out, stderr = self._run_section(slurm.squeue_argv(job_ids))
        # squeue exits 1 with "Invalid job id specified" when none of the ids is still in memory;
        # any other failure (slurmctld down, no squeue on PATH) must not read as "jobs unknown".
        if squeue_rc != 0 and "Invalid job id" not in stderr:
            raise ClusterError(f"squeue failed on {self.name} (exit code {squeue_rc}): {stderr.strip()[-500:]}")
        live = slurm.statuses_from_squeue(squeue_out) if squeue_rc == 0 else {}
        ask = [j for j in job_ids if j not in live or live[j].state.is_terminal]
        accounted: dict[str, JobStatus] = {}
        if ask:
            sacct_rc, sacct_out, _ = self._run_section(slurm.sacct_status_argv(ask))
            accounted = slurm.statuses_from_sacct(sacct_out) if sacct_rc == 0 else {}
        return slurm.merge_statuses(job_ids, live, accounted)

    def _run_section(self, argv: list[str]) -> tuple[int, str, str]:
        """One scheduler command: (exit code, stdout, stderr), its output checked to be whole."""
        self.scheduler_calls += 1
        for attempt in range(3):
            result = self.connection.run([], command=join_sections([argv]), check=False)
            try:
                ((code, out),) = split_sections(result.stdout, 1)
                return code, out, result.stderr
            except ValueError:
                # Output cut short: the connection dropped mid-command (sshd killed, network gone).
                # The next run() reconnects; a status query is safe to repeat.
                if attempt == 2:
                    raise ClusterError(
                        f"{argv[0]} output was cut short three times (exit code {result.exit_code}): "
                        f"{result.tail('stderr') or result.tail('stdout')}"
                    ) from None
                self._sleep(0.2)
        raise AssertionError("unreachable")

    def cancel(self, job_id: str, *, wait_s: float = 30.0) -> JobStatus:
        current = self.status([job_id])[job_id]
        if current.state.is_terminal:
            return current
        self.connection.run(slurm.scancel_argv(job_id))
        ended = wait_until_ended(lambda: self.status([job_id])[job_id], wait_s=wait_s, poll_s=0.25,
                                 sleep=self._sleep)
        if ended is None:
            state = self.status([job_id])[job_id].state.value
            raise ClusterError(f"job {job_id} is still {state} {wait_s:.0f} s after scancel")
        return ended

    # --- logs and results --------------------------------------------------------------------

    def stream_logs(
        self,
        paths: list[str],
        offsets: dict[str, int] | None = None,
        *,
        poll_s: float = 0.2,
        stop: threading.Event | None = None,
        tail_bytes: int | None = None,
    ) -> Iterator[list[LogChunk]]:
        """All files over the one SFTP channel (sshd allows ~10 sessions per connection)."""

        def size_of(path: str) -> int | None:
            attributes = self.connection.stat(path)
            return None if attributes is None else attributes.st_size

        return follow(
            lambda path, offset: self.connection.read_from(path, offset, MAX_READ),
            paths, offsets, poll_s=poll_s, stop=stop, sleep=self._sleep, tail_bytes=tail_bytes, size_of=size_of,
        )

    def fetch_results(self, prepared: PreparedRun, local_dir: str) -> list[str]:
        """Every file of the output and logs directories (result.json, completions, events, logs), by SFTP."""

        def download(path: str, local_path: Path) -> None:
            local_path.write_bytes(self.connection.get_bytes(path))

        return copy_run_files(prepared, local_dir, list_files=self.connection.list_files, copy_file=download)

    def accounting(self, job_id: str, *, wait_s: float = 0.0) -> dict[str, str]:
        """sacct fields of the job; `wait_s` polls until sacct has its terminal state (sacct lags)."""
        deadline = time.monotonic() + wait_s
        while True:
            self.scheduler_calls += 1
            result = self.connection.run(slurm.sacct_accounting_argv(job_id))
            fields = slurm.accounting_from_sacct(result.stdout, job_id)
            state = slurm.parse_state(fields.get("State", ""))[0] if fields else JobState.UNKNOWN
            if state.is_terminal or time.monotonic() >= deadline:
                return fields
            self._sleep(0.5)

    def read_text(self, path: str) -> str:
        return self.connection.get_bytes(path).decode("utf-8", "replace")

    def close(self) -> None:
        self.connection.close()
