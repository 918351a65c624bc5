"""What `dinf` loads to start each command, and that `dinf runs`'s light read lists what the service lists.

Each case runs the real console script under `python -X importtime`, which reports every module the
process imported, so nothing in dinf is instrumented. No time is asserted here (a loaded CI machine
would make that flaky): tests/benchmarks/bench_cli.py measures. What is asserted is the cause of
the time: `--help` and argument errors load neither the service nor SQLModel, `dinf runs` over
finished runs reads with sqlite3 alone, and no command on the local backend loads paramiko or plotext.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from remote.cluster import FailureSummary
from storage import repo
from storage.db import write_session
from tests.cli.conftest import DINF, FIXTURE_BUNDLE, REPO_ROOT, DinfCommand, Result
from tests.storage.conftest import write_schema1_file
from tui.cli import main as cli
from tui.core.service import Dinf

SERVICE = {"tui.core.service", "storage.db", "storage.repo", "sqlmodel", "sqlalchemy", "pydantic"}
"""The service layer and what it brings: most of a second of start-up."""
NOT_ON_THE_LOCAL_BACKEND = {"paramiko", "cryptography", "plotext", "textual"}


def traced(dinf: DinfCommand, *args: str) -> tuple[Result, set[str]]:
    """Run `dinf ARGS` under -X importtime: its result (stderr without the import lines) and modules."""
    done = subprocess.run([sys.executable, "-X", "importtime", str(DINF), *args], cwd=REPO_ROOT, env=dinf.env,
                          capture_output=True, text=True, timeout=120, check=False)
    modules, err = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[1].strip())
        else:
            err.append(line)
    assert "tui.cli.main" in modules, "no import was traced; the probe is broken"
    return Result(done.returncode, done.stdout, "\n".join(err)), modules


def among(modules: set[str], names: set[str]) -> set[str]:
    """The modules that are, or are inside, one of `names`."""
    return {m for m in modules if m in names or m.split(".")[0] in names}


@pytest.mark.parametrize("args", [
    ("--help",), ("runs", "--help"), ("runs", "--bogus"), (), ("submit", "--nodes", "two"),
    ("experiment", "plan", "no-such-preset"),
], ids=["help", "runs-help", "unknown-flag", "no-command", "bad-int", "bad-choice"])
def test_help_and_argument_errors_load_no_service(dinf, args):
    result, modules = traced(dinf, *args)
    assert result.code == (cli.EXIT_OK if "--help" in args else cli.EXIT_BAD_INPUT), result.err
    assert among(modules, SERVICE | NOT_ON_THE_LOCAL_BACKEND) == set()
    assert not dinf.home.exists()  # nothing was created either


def test_runs_and_clusters_read_without_the_service(dinf):
    result, modules = traced(dinf, "runs")
    assert result.code == cli.EXIT_OK and result.out.split()[:2] == ["ID", "NAME"]
    assert among(modules, SERVICE | NOT_ON_THE_LOCAL_BACKEND) == set()
    assert not (dinf.home / "dinf.db").exists()  # listing no runs creates no database

    assert dinf("ingest", str(FIXTURE_BUNDLE)).code == cli.EXIT_OK  # through the service: the file now exists
    result, modules = traced(dinf, "runs", "--json")
    assert result.code == cli.EXIT_OK and [r["state"] for r in json.loads(result.out)] == ["IMPORTED"]
    assert among(modules, SERVICE | NOT_ON_THE_LOCAL_BACKEND) == set()

    result, modules = traced(dinf, "clusters")
    assert result.code == cli.EXIT_OK and result.out.split()[4] == "local"
    assert among(modules, SERVICE | NOT_ON_THE_LOCAL_BACKEND) == set()


def test_runs_with_a_run_to_poll_asks_the_local_backend_without_ssh_or_charts(dinf):
    """A submitted, unfinished run must be polled first: that takes the service, not paramiko."""
    with Dinf(db_path=dinf.home / "dinf.db", data_dir=dinf.home) as service, write_session(service.engine) as session:
        cluster = repo.get_or_create_cluster(session=session, name="local", backend="local")
        run = repo.create_run(session=session, uid="waiting-1", name="waiting", mode="pp", spec={}, cluster_id=cluster.id)
        repo.record_state(session=session, run=run, state="PENDING")
        repo.update_run(session=session, run=run, job_id="4242", job_ids_json='["4242"]')
        session.commit()

    result, modules = traced(dinf, "runs", "--json")
    assert result.code == cli.EXIT_OK, result.err
    assert "tui.core.service" in modules and "remote.local" in modules  # it polled, on the local backend
    # The local backend's answer for a job it never ran, recorded by the poll.
    assert [r["state"] for r in json.loads(result.out)] == ["UNKNOWN"]
    assert among(modules, NOT_ON_THE_LOCAL_BACKEND) == set()

    result, modules = traced(dinf, "runs", "--no-refresh")  # nothing to poll: the light read again
    assert result.code == cli.EXIT_OK and "UNKNOWN" in result.out
    assert among(modules, SERVICE) == set()


def test_runs_migrates_an_older_database_through_the_service(dinf):
    dinf.home.mkdir(parents=True)
    write_schema1_file(dinf.home / "dinf.db")
    result, modules = traced(dinf, "runs", "--no-refresh", "--json")
    assert result.code == cli.EXIT_OK, result.err
    assert "storage.migrations" in modules and "tui.core.service" in modules
    assert [r["uid"] for r in json.loads(result.out)] == ["pp2-v1-0001", "draft-v1-0002", "fail-v1-0003"]
    result, modules = traced(dinf, "runs", "--no-refresh")  # migrated now: the light read can answer
    assert result.code == cli.EXIT_OK and among(modules, SERVICE) == set()


def test_runs_refuses_a_file_that_is_not_a_dinf_database(dinf):
    dinf.home.mkdir(parents=True)
    other = dinf.home / "dinf.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text)")
    conn.close()
    result, modules = traced(dinf, "runs")
    assert result.code == cli.EXIT_DATABASE and "database of something else" in result.err
    assert among(modules, SERVICE) == set()


def _varied_history(dinf: DinfCommand) -> int:
    """Runs that fill every column the listing shows: two clusters, an experiment, a compiled
    engine, an accuracy, a failure summary, reasons, several job ids, markup in a name, a draft,
    a refused submission, an imported bundle. None is polled (finished, or never submitted)."""
    assert dinf("ingest", str(FIXTURE_BUNDLE)).code == cli.EXIT_OK
    failure = FailureSummary(rank=1, node="node2", signal=9, exit_code=None, cause="rank 1 on node2 died first",
                             consequences=("srun ended rank 0",))
    with Dinf(db_path=dinf.home / "dinf.db", data_dir=dinf.home) as service, write_session(service.engine) as session:
        local = repo.get_or_create_cluster(session=session, name="local", backend="local")
        gpu = repo.get_or_create_cluster(session=session, name="gpu", backend="slurm", host="login",
                                         config={"partition": "gpu"})
        experiment = repo.create_experiment(session=session, name="sweep", kind="batch_sweep")
        fast = repo.create_run(session=session, uid="fast-1", name="fast [bold]x[/bold]", mode="tp",
                               spec={"impl": "fast", "device": "cuda", "quant": "int8"},
                               resources={"nodes": 1, "tasks_per_node": 2}, num_ranks=2, num_gpus=2,
                               cluster_id=gpu.id, experiment_id=experiment.id, at=1_700_000_000.5)
        for state, reason in (("PENDING", "Priority"), ("PENDING", "Resources"), ("RUNNING", None), ("COMPLETED", None)):
            repo.record_state(session=session, run=fast, state=state, reason=reason, at=1_700_000_010.25)
        repo.update_run(session=session, run=fast, job_id="77", job_ids_json='["76", "77"]', submitted_at=1_700_000_001.0,
                        started_at=1_700_000_020.0, finished_at=1_700_003_700.0, engine_capture_s=12.5, exit_code=0,
                        accuracy_json='{"kl": 0.001, "exact": 0.9}')
        failed = repo.create_run(session=session, uid="failed-2", name="failed", mode="pp", spec={"mode": "pp"},
                                 cluster_id=local.id, experiment_id=experiment.id, at=1_700_000_100.0)
        repo.record_state(session=session, run=failed, state="FAILED", reason="NonZeroExitCode", at=1_700_000_200.0)
        repo.update_run(session=session, run=failed, job_id="5", job_ids_json='["5"]', error=failure.text(),
                        failure_json=json.dumps(failure.to_dict()), exit_code=137, started_at=1_700_000_150.0,
                        finished_at=1_700_000_200.0)
        repo.create_run(session=session, uid="draft-3", name="draft", mode="single", spec={}, cluster_id=local.id)
        refused = repo.create_run(session=session, uid="refused-4", name="refused", mode="dp", spec={},
                                  cluster_id=gpu.id)
        repo.record_state(session=session, run=refused, state="SUBMIT_FAILED")
        repo.update_run(session=session, run=refused, error="sbatch: error: invalid partition")
        session.commit()
        return experiment.id


def test_light_runs_list_what_the_service_lists(dinf, capsys):
    """The light read and the service give the same bytes, for every filter and sort, both formats."""
    experiment_id = _varied_history(dinf)
    for args in (
        ("runs", "--json"), ("runs",), ("runs", "--state", "FAILED", "--state", "SUBMIT_FAILED", "--json"),
        ("runs", "--experiment", str(experiment_id)), ("runs", "--match", "gpu|imported", "--sort", "name"),
        ("runs", "--sort", "finished_at", "--json"), ("runs", "--state", "RUNNING"),
    ):
        light, modules = traced(dinf, *args)
        assert light.code == cli.EXIT_OK, (args, light.err)
        assert among(modules, SERVICE) == set(), args

        parsed = cli.build_parser().parse_args(list(args))
        with Dinf(db_path=dinf.home / "dinf.db", data_dir=dinf.home) as service:
            assert cli.cmd_runs(service, parsed) == cli.EXIT_OK
        assert light.out == capsys.readouterr().out, args
    listed = json.loads(traced(dinf, "runs", "--json")[0].out)
    assert len(listed) == 5 and {r["engine_compiled"] for r in listed} == {True, False}  # the test covers bools
