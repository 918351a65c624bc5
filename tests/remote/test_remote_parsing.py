"""Pure Slurm parsers and builders, fed output recorded from the real Slurm 22.05 minicluster."""

from __future__ import annotations

import pytest

from remote import slurm
from remote.cluster import FailureSummary, JobState

SQUEUE = """JOBID|STATE|REASON|TIME|NODELIST
5|PENDING|Resources|0:00|
6|PENDING|Priority|0:00|
2|RUNNING|None|1-02:03:04|node[1-2]
9|COMPLETING|None|0:01|node[1-2]
"""

SACCT = """JobID|State|ExitCode|Elapsed|NodeList|Reason
3|FAILED|3:0|00:00:00|node1|NonZeroExitCode
3.batch|FAILED|3:0|00:00:00|node1|
9|CANCELLED by 0|0:0|00:00:01|node[1-2]|None
2|TIMEOUT|0:0|00:01:05|node1|TimeLimit
19|OUT_OF_MEMORY|0:125|00:00:00|node1|OutOfMemory
10|NODE_FAIL|0:0|00:00:00|node[1-2]|NodeDown
8|DEADLINE|1:0|00:00:00|None assigned|DeadLine
"""

ACCOUNTING = """JobID|State|ExitCode|Elapsed|NodeList|AllocTRES|MaxRSS|TotalCPU
2|COMPLETED|0:0|00:00:12|node[1-2]|billing=2,cpu=2,gres/gpu=2,node=2||00:01.023
2.batch|COMPLETED|0:0|00:00:12|node1|cpu=1,gres/gpu=1,mem=0,node=1|10796K|00:00.015
2.0|COMPLETED|0:0|00:00:12|node[1-2]|cpu=2,gres/gpu=2,mem=0,node=2|38784K|00:01.007
"""


@pytest.mark.parametrize(
    ("text", "state", "detail"),
    [
        ("PENDING", JobState.PENDING, None),
        ("CANCELLED by 0", JobState.CANCELLED, "by 0"),
        ("CANCELLED by 1001", JobState.CANCELLED, "by 1001"),
        ("PD", JobState.PENDING, None),
        ("CG", JobState.COMPLETING, None),
        ("OOM", JobState.OUT_OF_MEMORY, None),
        ("REQUEUE_HOLD", JobState.REQUEUED, None),
        ("COMPLETED+", JobState.COMPLETED, None),
        ("PREEMPTED", JobState.PREEMPTED, None),
        ("BOOT_FAIL", JobState.BOOT_FAIL, None),
        ("SOMETHING_NEW", JobState.UNKNOWN, "SOMETHING_NEW"),
        ("", JobState.UNKNOWN, None),
    ],
)
def test_state_strings_map_onto_job_states(text, state, detail):
    assert slurm.parse_state(text) == (state, detail)


@pytest.mark.parametrize(("text", "expected"), [("3:0", (3, 0)), ("0:15", (0, 15)), ("0:125", (0, 125)), ("", (None, None))])
def test_exit_code_is_code_colon_signal(text, expected):
    assert slurm.parse_exit_code(text) == expected


def test_unreadable_exit_code_is_a_clear_error():
    with pytest.raises(slurm.SlurmOutputError, match="exit code 'x:y'"):
        slurm.parse_exit_code("x:y")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:01:05", 65), ("1:05", 65), ("0:07", 7), ("1-02:03:04", 93784), ("00:01.023", 1.023), ("", None), ("INVALID", None)],
)
def test_durations(text, seconds):
    assert slurm.parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_squeue_rows_are_read_by_header_with_pending_reasons():
    statuses = slurm.statuses_from_squeue(SQUEUE)
    assert statuses["5"].state == JobState.PENDING and statuses["5"].reason == "Resources"
    assert statuses["6"].reason == "Priority"
    assert statuses["2"].state == JobState.RUNNING and statuses["2"].reason is None
    assert statuses["2"].elapsed_s == 93784 and statuses["2"].nodelist == "node[1-2]"
    assert statuses["9"].state == JobState.COMPLETING


def test_column_order_is_not_trusted():
    reordered = "NODELIST|TIME|JOBID|REASON|STATE\nnode1|0:03|7|None|RUNNING\n"
    status = slurm.statuses_from_squeue(reordered)["7"]
    assert (status.state, status.nodelist, status.elapsed_s) == (JobState.RUNNING, "node1", 3)


def test_sacct_allocations_only_with_exit_codes_and_cancel_detail():
    statuses = slurm.statuses_from_sacct(SACCT)
    assert "3.batch" not in statuses
    assert (statuses["3"].state, statuses["3"].exit_code, statuses["3"].signal) == (JobState.FAILED, 3, 0)
    assert statuses["9"].state == JobState.CANCELLED and statuses["9"].reason == "by 0"
    assert statuses["2"].state == JobState.TIMEOUT and statuses["2"].elapsed_s == 65
    assert statuses["19"].state == JobState.OUT_OF_MEMORY and statuses["19"].signal == 125
    assert statuses["10"].state == JobState.NODE_FAIL
    assert statuses["8"].state == JobState.DEADLINE and statuses["8"].nodelist is None


def test_task_exit_code_survives_kill_on_bad_exit():
    # Recorded: rank 1 exits 3, srun kills rank 0; the allocation says 15:0, DerivedExitCode 3:0.
    text = "JobID|State|ExitCode|DerivedExitCode|Elapsed|NodeList|Reason\n195|FAILED|15:0|3:0|00:00:01|node[1-2]|NonZeroExitCode\n"
    status = slurm.statuses_from_sacct(text)["195"]
    assert (status.state, status.exit_code) == (JobState.FAILED, 3)


def test_merge_prefers_sacct_for_finished_jobs_and_squeue_for_live_ones():
    live = slurm.statuses_from_squeue("JOBID|STATE|REASON|TIME|NODELIST\n3|FAILED|NonZeroExitCode|0:00|\n5|PENDING|Resources|0:00|\n")
    accounted = slurm.statuses_from_sacct(SACCT + "5|PENDING|0:0|00:00:00|None assigned|None\n")
    merged = slurm.merge_statuses(["3", "5", "404"], live, accounted)
    assert merged["3"].exit_code == 3
    assert merged["5"].reason == "Resources"
    assert merged["404"].state == JobState.UNKNOWN


def test_row_with_wrong_field_count_names_the_row():
    with pytest.raises(slurm.SlurmOutputError, match="has 2 fields"):
        slurm.parse_table("A|B|C\n1|2\n")


def test_accounting_takes_max_rss_from_the_steps():
    fields = slurm.accounting_from_sacct(ACCOUNTING, "2")
    assert fields == {
        "JobID": "2", "State": "COMPLETED", "ExitCode": "0:0", "Elapsed": "00:00:12", "NodeList": "node[1-2]",
        "AllocTRES": "billing=2,cpu=2,gres/gpu=2,node=2", "MaxRSS": "38784K", "TotalCPU": "00:01.023",
        slurm.STEPS_KEY: slurm.parse_table(ACCOUNTING)[1:],
    }


@pytest.mark.parametrize(("stdout", "job_id"), [("42\n", "42"), ("42;mini\n", "42")])
def test_sbatch_parsable_output(stdout, job_id):
    assert slurm.parse_sbatch_job_id(stdout) == job_id


def test_sbatch_output_without_job_id_is_an_error():
    with pytest.raises(slurm.SlurmOutputError, match="could not read a job id"):
        slurm.parse_sbatch_job_id("sbatch: error: nope\n")


def test_status_commands_batch_every_job_and_name_their_fields():
    assert slurm.squeue_argv(["1", "2", "3"]) == ["squeue", "-t", "all", "-j", "1,2,3", "-o", "%i|%T|%r|%M|%N"]
    argv = slurm.sacct_status_argv(["1", "2"])
    assert "--parsable2" in argv and "-j" in argv and "1,2" in argv and "--json" not in argv
    assert "--format=JobID,State,ExitCode,Elapsed,NodeList,AllocTRES,MaxRSS,TotalCPU" in slurm.sacct_accounting_argv("7")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("nodes", 0, "nodes: must be a positive integer"),
        ("partition", "debug\n#SBATCH --uid=0", "partition"),
        ("time_limit", "ten minutes", "time_limit"),
        ("account", "a'b", "account"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(field, value, message):
    from remote.cluster import Resources

    with pytest.raises(ValueError, match=message):
        slurm.resource_flags(Resources(**{field: value}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reservation": "maint 1"}, r"reservation: 'maint 1' is not a reservation name"),
        ({"gpu_type": "h100:4"}, r"gpu_type: 'h100:4' is not a GRES type"),
        ({"gpu_type": "h100\n#SBATCH --uid=0"}, r"gpu_type: .* is not a GRES type"),
        ({"exclusive": "yes"}, r"exclusive: must be true or false, got 'yes'"),
        ({"dependency": "afterok"}, r"dependency: 'afterok' is not a Slurm dependency"),
        ({"dependency": "afterok:1;touch x"}, r"dependency: 'afterok:1;touch x' is not a Slurm dependency"),
        ({"dependency": "afterok:1,afterany:2?singleton"}, r"dependency: .* mixes ',' \(all of\) and '\?' \(any of\)"),
        ({"dependency": "afterany:1+5"}, r"dependency: 'afterany:1\+5' is not"),  # +time is after's alone
        ({"extra_sbatch": "--hold"}, r"extra_sbatch: must be a list"),
        ({"extra_sbatch": ["-N 3"]}, r"extra_sbatch: '-N 3' is not a long option"),
        ({"extra_sbatch": ["--comment=a\nb"]}, r"extra_sbatch: .* holds a control character"),
        ({"extra_sbatch": ["--comment=a\tb"]}, r"extra_sbatch: .* holds a control character"),
        ({"extra_sbatch": ["--nodes=3"]}, r"extra_sbatch: '--nodes=3' gives --nodes, which dinf sets itself; set nodes"),
        ({"extra_sbatch": ["--tasks-per-node=8"]}, r"gives --tasks-per-node, which dinf sets itself; set tasks_per_node"),
        ({"extra_sbatch": ["--nod=3"]}, r"'--nod=3' abbreviates --nodes, which dinf sets itself"),
        ({"extra_sbatch": ["--part=debug"]}, r"abbreviates --partition, which dinf sets itself; set partition"),
        ({"extra_sbatch": ["--exclusive=user"]}, r"gives --exclusive, which dinf sets itself; set exclusive"),
        ({"extra_sbatch": ["--output=/tmp/x"]}, r"gives --output, which dinf sets itself or needs unset \(the batch log"),
        ({"extra_sbatch": ["--job-name=x"]}, r"gives --job-name, which dinf sets itself"),
        ({"extra_sbatch": ["--array=0-3"]}, r"gives --array, .*one job per run"),
        ({"extra_sbatch": ["--wait"]}, r"gives --wait, .*without waiting"),
        ({"extra_sbatch": ["--gres=gpu:a100:2"]}, r"asks for GPUs; set gpus_per_node and gpu_type"),
        ({"extra_sbatch": ["--gpus-per-task=1"]}, r"asks for GPUs"),
        ({"extra_sbatch": ["--mem-per-cpu=2G"], "mem": "8G"}, r"one of --mem, --mem-per-cpu, --mem-per-gpu"),
        ({"extra_sbatch": ["--comment=a", "--comment=b"]}, r"'--comment=b' gives --comment again"),
        ({"container_runtime": "docker"}, r"container_runtime: must be one of apptainer, pyxis"),
        ({"container_mounts": ["data:/data"]}, r"container_mounts: 'data:/data' is not SRC:DST\[:ro\|rw\]"),
        ({"container_mounts": ["/a,b:/c"]}, r"container_mounts: '/a,b:/c' is not"),
        ({"container_mounts": ["/a:/b:rx"]}, r"container_mounts: '/a:/b:rx' is not"),
        ({"container_mounts": "/a:/b"}, r"container_mounts: must be a list"),
        ({"container_image": "img\n#SBATCH --uid=0"}, r"container_image: .* holds a control character"),
    ],
)
def test_bad_site_options_are_refused_naming_the_field(values, message):
    from remote.cluster import Resources

    with pytest.raises(ValueError, match=message):
        slurm.resource_flags(Resources(**values))


def test_site_options_slurm_takes_are_accepted_as_given():
    from remote.cluster import Resources

    fine = Resources(
        gpus_per_node=2, gpu_type="a100_80gb", reservation="maint.a,maint-b", exclusive=True,
        dependency="after:1+10:2_3?afternotok:4", mem="8G",
        extra_sbatch=["--hold", "--time-min=10", "--nodelist=node1", "--exclude=node2", "--gres=nvme:1",
                      "--wait-all-nodes=1", "--mail-type=END", "--comment=two words # and more"],
        container_mounts=["/scratch:/scratch", "/ro:/ro:ro", "/rw:/x:rw"],
    )
    flags = slurm.resource_flags(fine)
    assert flags["gpus-per-node"] == "a100_80gb:2" and flags["exclusive"] is None
    assert (flags["reservation"], flags["dependency"]) == ("maint.a,maint-b", "after:1+10:2_3?afternotok:4")
    for dependency in ("singleton", "afterok:1:2:3", "afterany:7,afterok:8", "aftercorr:5", "afterburstbuffer:6"):
        assert slurm.dependency_problem(dependency) is None, dependency
    # A GPU type without GPUs asks for nothing (a cluster's default type, on a CPU run).
    assert "gpus-per-node" not in slurm.resource_flags(Resources(gpu_type="h100"))
    assert slurm.resource_problems(Resources()) == {}


def test_a_dependency_is_added_to_as_all_of_never_to_an_any_of():
    assert slurm.add_dependency(None, "afterany:5") == "afterany:5"
    assert slurm.add_dependency("afterok:1:2", "afterany:5") == "afterok:1:2,afterany:5"
    with pytest.raises(ValueError, match=r"resources.dependency: 'afterok:1\?afterok:2' is met by any one"):
        slurm.add_dependency("afterok:1?afterok:2", "afterany:5")


@pytest.mark.parametrize(
    ("text", "seconds"), [("1", 60), ("0:02", 2), ("01:00:00", 3600), ("1-2", 93600), ("1-02:03:04", 93784), (None, None)]
)
def test_time_limits(text, seconds):
    assert slurm.parse_time_limit(text) == seconds


def test_percent_in_paths_is_escaped_for_slurm_filename_patterns():
    assert slurm.escape_filename_pattern("/a/100%/b") == "/a/100%%/b"


# --- why a job failed (batch logs and sacct steps recorded on the minicluster) -------------------

KILLED_LOG = """srun: error: node2: task 1: Killed
srun: launch/slurm: _step_signal: Terminating StepId=1.0
srun: error: node1: task 0: Terminated
srun: Force Terminated StepId=1.0
"""
KILLED_SACCT = """JobID|State|ExitCode|Elapsed|NodeList|AllocTRES|MaxRSS|TotalCPU
1|FAILED|15:0|00:00:03|node[1-2]|billing=2,cpu=2,node=2||00:00.020
1.batch|FAILED|15:0|00:00:03|node1|cpu=1,mem=0,node=1|3104K|00:00.010
1.0|CANCELLED|0:15|00:00:03|node[1-2]|cpu=2,mem=0,node=2|2008K|00:00.010
"""
EXIT3_LOG = """srun: error: node2: tasks 2-3: Exited with exit code 3
srun: launch/slurm: _step_signal: Terminating StepId=4.0
srun: error: node1: tasks 0-1: Terminated
srun: Force Terminated StepId=4.0
"""
EXIT3_SACCT = """JobID|State|ExitCode|Elapsed|NodeList|AllocTRES|MaxRSS|TotalCPU
4|FAILED|15:0|00:00:03|node[1-2]|cpu=4,node=2||
4.batch|FAILED|15:0|00:00:03|node1|cpu=2,node=1||
4.0|FAILED|3:0|00:00:03|node[1-2]|cpu=4,node=2||
"""


def test_srun_task_lines_name_ranks_nodes_and_signals_in_order():
    ends = slurm.parse_srun_task_ends(KILLED_LOG + "srun: error: node1: task 3: Segmentation fault (core dumped)\n")
    assert [(e.ranks, e.node, e.signal, e.exit_code) for e in ends] == [
        ((1,), "node2", 9, None), ((0,), "node1", 15, None), ((3,), "node1", 11, None)]
    assert ends[2].cause == "killed by signal 11 (SIGSEGV) (core dumped)"
    assert [(e.ranks, e.exit_code) for e in slurm.parse_srun_task_ends(EXIT3_LOG)] == [((2, 3), 3), ((0, 1), None)]
    assert slurm.parse_task_ranges("0,2-4") == (0, 2, 3, 4)


def test_a_killed_rank_is_named_first_with_its_node_and_signal_then_its_peers():
    summary = slurm.summarize_failure(job_id="1", sacct_rows=slurm.parse_table(KILLED_SACCT), batch_log=KILLED_LOG)
    assert (summary.rank, summary.node, summary.signal, summary.exit_code) == (1, "node2", 9, None)
    assert summary.text() == ("rank 1 on node2 died first: killed by signal 9 (SIGKILL); "
                              "then rank 0 on node1: killed by signal 15 (SIGTERM) when srun ended the step")
    assert FailureSummary.from_dict(summary.to_dict()) == summary


def test_an_exit_code_is_named_and_sacct_steps_with_codes_follow():
    summary = slurm.summarize_failure(job_id="4", sacct_rows=slurm.parse_table(EXIT3_SACCT), batch_log=EXIT3_LOG)
    assert (summary.rank, summary.node, summary.exit_code) == (2, "node2", 3)
    assert summary.cause == "ranks 2, 3 on node2 died first: exited with code 3"
    assert "step 4.0 FAILED with exit code 3 on node[1-2]" in summary.consequences


def test_without_the_batch_log_sacct_steps_still_tell_something():
    summary = slurm.summarize_failure(job_id="1", sacct_rows=slurm.parse_table(KILLED_SACCT))
    assert summary.rank is None and summary.source == "sacct" and summary.signal == 15
    assert summary.text() == "step 1.0 CANCELLED by signal 15 (SIGTERM) on node[1-2]"


def test_slurm_job_notes_time_limit_node_failure_and_oom():
    log = ("slurmstepd-node1: error: *** JOB 2 ON node1 CANCELLED AT 2026-11-26T19:08:12 DUE TO TIME LIMIT ***\n"
           "srun: error: Node failure on node2\n"
           "slurmstepd-node1: error: Detected 1 oom-kill event(s) in StepId=3.batch. Some of your processes may have been killed\n")
    assert slurm.job_end_notes(log) == [
        "Slurm cancelled the job on node1 due to time limit", "node node2 failed",
        "the kernel killed a process of step 3.batch for memory (oom-kill)"]
    summary = slurm.summarize_failure(job_id="2", batch_log=log)
    assert summary.cause == "Slurm cancelled the job on node1 due to time limit" and summary.rank is None


def test_a_completed_job_has_no_failure():
    assert slurm.summarize_failure(job_id="2", sacct_rows=slurm.parse_table(ACCOUNTING), batch_log="") is None


def test_partitions_from_sinfo_drop_the_default_mark():
    assert slurm.partitions_from_sinfo("debug*\ngpu\ngpu\n") == ["debug", "gpu"]
    assert slurm.sinfo_partitions_argv() == ["sinfo", "-h", "-o", "%P"]


@pytest.mark.parametrize("workdir", ["/scratch/%j_%t_%x", "/scratch/it's", '/scratch/"q"', "/scratch/a\\b", "/a\nb"])
def test_workdirs_slurm_rewrites_are_refused_naming_the_field(workdir):
    from remote.cluster import ClusterError
    from remote.slurm_cluster import SlurmCluster

    with pytest.raises(ClusterError, match=r"^workdir .* holds a .*; choose a directory without"):
        SlurmCluster(connection=object(), workdir=workdir)


def test_a_time_limit_is_the_cause_and_the_terminated_tasks_its_consequence():
    log = ("slurmstepd-node1: error: *** JOB 2 ON node1 CANCELLED AT 2026-11-26T19:08:12 DUE TO TIME LIMIT ***\n"
           "srun: error: node1: task 0: Terminated\n")
    summary = slurm.summarize_failure(job_id="2", batch_log=log)
    assert summary.text() == ("Slurm cancelled the job on node1 due to time limit; "
                              "then rank 0 on node1: killed by signal 15 (SIGTERM)")
