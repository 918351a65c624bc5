"""The service layer's bookkeeping, against a scripted fake cluster (fast; the real local backend
is exercised by test_cli_local.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remote.cluster import JobState, Resources
from tests.cli.fake_cluster import FakeCluster
from tui.core.service import Dinf, RunNotFound, ServiceError
from worker.contract import RunSpec, SpecError

FIXTURE_BUNDLE = Path(__file__).resolve().parents[1] / "storage" / "fixtures" / "pp2_bundle"


@pytest.fixture
def fake() -> FakeCluster:
    return FakeCluster("local", bundle=FIXTURE_BUNDLE)


@pytest.fixture
def dinf(tmp_path, fake):
    service = Dinf(data_dir=tmp_path, config_path=tmp_path / "config.toml", cluster_factory=lambda cfg: fake)
    yield service
    service.close()


def pp2_spec() -> RunSpec:
    return RunSpec(run_name="svc", mode="pp", pp_size=2, batch_sizes=[1, 2], max_new_tokens=4)


def test_submit_poll_finish_ingest(dinf, fake, tmp_path):
    draft = dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(tasks_per_node=2))
    assert (draft.state, draft.num_ranks, draft.job_id) == ("DRAFT", 2, None)
    assert "--ntasks-per-node=2" in dinf.preview(draft.id)
    record = dinf.submit(draft.id)
    assert (record.state, record.job_id, record.run_dir) == ("PENDING", "101", f"/remote/{draft.uid}")
    assert json.loads(fake.submitted[0].spec_json)["mode"] == "pp"
    states = [dinf.refresh()[0].state for _ in range(3)]
    assert states == ["PENDING", "RUNNING", "COMPLETED"]
    assert dinf.refresh() == []  # nothing unfinished is polled again
    done = dinf.run(draft.id)
    assert [h.state for h in done.history] == ["DRAFT", "PENDING", "RUNNING", "COMPLETED"]
    assert done.has_results and done.error is None and done.exit_code == 0
    assert [m["batch_size"] for m in dinf.measurements(done.id)] == [1, 2]
    assert len(dinf.measurements(done.id)[0]["rank_stats"]) == 2
    assert dinf.accounting(done.id)[0]["elapsed"] == "00:00:05"
    assert dinf.correctness(done.id)[1]["first_divergences"] == [None, 3]
    assert Path(done.local_results_dir) == tmp_path / "results" / done.uid
    # reconcile after the fact (as a restarted app would) ingests nothing twice
    dinf.reconcile()
    assert len(dinf.export_rows()) == 2


def test_a_failed_run_names_the_rank_that_died_first_then_its_peers(dinf, tmp_path):
    fake = FakeCluster("local")  # no result bundle: the job died
    dinf._cluster_factory = lambda cfg: fake
    run = dinf.submit(dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(nodes=2)).id)
    fake.states[run.job_id] = [JobState.RUNNING, JobState.FAILED]
    fake.batch_logs[run.job_id] = ("srun: error: node2: task 1: Killed\n"
                                   "srun: launch/slurm: _step_signal: Terminating StepId=101.0\n"
                                   "srun: error: node1: task 0: Terminated\n")
    fake.sacct_steps[run.job_id] = [{"JobID": "101.0", "State": "CANCELLED", "ExitCode": "0:15", "NodeList": "node[1-2]"}]
    while not dinf.run(run.id).finished:
        dinf.refresh()
    failed = dinf.run(run.id)
    assert (failed.failure.rank, failed.failure.node, failed.failure.signal) == (1, "node2", 9)
    assert failed.error.startswith("rank 1 on node2 died first: killed by signal 9 (SIGKILL); then rank 0 on node1")
    assert failed.to_dict()["failure"]["rank"] == 1
    assert dinf.runs()[0].failure == failed.failure  # the list's snapshots carry it too


def test_lagging_sacct_is_completed_by_reconcile(dinf, fake):
    run = dinf.submit(dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources()).id)
    fake.sacct_lag["101"] = ["RUNNING"]
    while not dinf.run(run.id).finished:
        dinf.refresh()
    assert [a["state"] for a in dinf.accounting(run.id)] == ["RUNNING"]
    dinf.reconcile()
    assert [a["state"] for a in dinf.accounting(run.id)] == ["COMPLETED"]


def test_one_status_call_per_cluster(dinf, fake):
    for _ in range(3):
        dinf.submit(dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources()).id)
    dinf.refresh()
    assert fake.status_calls == [["101", "102", "103"]]


def test_submit_failure_leaves_submit_failed(dinf, fake):
    fake.fail_submit = "sbatch: error: invalid partition specified: nope"
    record = dinf.submit(dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources()).id)
    assert record.state == "SUBMIT_FAILED" and "invalid partition" in record.error and record.job_id is None
    with pytest.raises(ServiceError, match="only a DRAFT run can be submitted"):
        dinf.submit(record.id)
    assert dinf.refresh() == []


def test_unreachable_cluster_is_noted_not_raised(dinf, fake):
    run = dinf.submit(dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources()).id)
    fake.unreachable = True
    assert dinf.refresh()[0].state == "PENDING"
    assert "connection refused" in dinf.cluster_errors["local"]
    fake.unreachable = False
    dinf.refresh()
    assert "local" not in dinf.cluster_errors and dinf.run(run.id).state == "PENDING"


def test_cancel(dinf, fake):
    run = dinf.submit(dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources()).id)
    cancelled = dinf.cancel(run.id)
    assert cancelled.state == "CANCELLED" and fake.cancelled == ["101"]
    assert dinf.cancel(run.id).state == "CANCELLED" and fake.cancelled == ["101"]  # idempotent
    draft = dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources())
    assert dinf.cancel(draft.id).state == "CANCELLED"


def test_new_run_validation_names_fields(dinf):
    with pytest.raises(SpecError, match="pp_size"):
        dinf.new_run(cluster="local", spec=RunSpec(mode="pp", pp_size=3), resources=Resources(tasks_per_node=2))
    with pytest.raises(SpecError, match="mode: single runs on exactly one rank"):
        dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources(tasks_per_node=2))
    with pytest.raises(ValueError, match="resources.nodes: must be an integer >= 1"):
        dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources(nodes=0))
    with pytest.raises(ValueError, match="no cluster named 'gpu'"):
        dinf.new_run(cluster="gpu", spec=RunSpec(), resources=Resources())
    assert dinf.runs() == []  # nothing half-recorded


def test_log_sources_and_stream(dinf):
    run = dinf.submit(dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(tasks_per_node=2)).id)
    sources = dinf.log_sources(run.id)
    assert [(s.rank, s.kind) for s in sources] == [
        (0, "worker"), (0, "events"), (0, "launcher"), (1, "worker"), (1, "events"), (1, "launcher")]
    assert sources[2].path == f"{run.logs_dir}/101-rank0.out"
    batch = next(dinf.stream_logs(run.id, ranks=[1], kinds=["worker"]))
    assert [c.path for c in batch] == [f"{run.output_dir}/rank1.log"]
    with pytest.raises(ValueError, match="rank: run .* has ranks 0..1, not \\[5\\]"):
        dinf.stream_logs(run.id, ranks=[5])


def test_experiments_and_lookup(dinf):
    exp = dinf.create_experiment(name="sweep", kind="batch_sweep", parameters={"batch_sizes": [1, 2]})
    run = dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources(), experiment_id=exp)
    dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources())
    assert [r.id for r in dinf.runs(experiment_id=exp)] == [run.id]
    assert dinf.run(run.uid).id == run.id
    with pytest.raises(RunNotFound):
        dinf.run(999)
    with pytest.raises(ValueError, match="experiment_id: no experiment 42"):
        dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources(), experiment_id=42)


def test_close_closes_clusters(dinf, fake):
    dinf.cluster("local")
    dinf.close()
    assert fake.closed


def test_poller_and_ui_threads_share_one_service(dinf, fake):
    """The app's shape: a poller thread refreshing while the UI thread records and submits runs."""
    import threading

    errors: list[BaseException] = []
    stop = threading.Event()

    def poller():
        try:
            while not stop.is_set():
                dinf.refresh()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=poller)
    thread.start()
    try:
        for _ in range(15):
            dinf.submit(dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(tasks_per_node=2)).id)
            dinf.runs()
    finally:
        stop.set()
        thread.join(60)
    assert errors == []
    while any(not r.finished for r in dinf.runs()):
        dinf.refresh()
    runs = dinf.runs()
    assert len(runs) == 15 and {r.state for r in runs} == {"COMPLETED"}
    assert all(r.has_results for r in runs) and len(dinf.export_rows()) == 30


def test_runs_of_a_cluster_removed_from_the_config_keep_their_state(tmp_path, fake):
    config = tmp_path / "config.toml"
    config.write_text("[clusters.gone]\nhost = 'login'\n")
    first = Dinf(data_dir=tmp_path, config_path=config, cluster_factory=lambda cfg: fake)
    run = first.submit(first.new_run(cluster="gone", spec=RunSpec(), resources=Resources()).id)
    first.close()
    config.write_text("")
    second = Dinf(data_dir=tmp_path, config_path=config, cluster_factory=lambda cfg: fake)
    try:
        assert [r.state for r in second.reconcile()] == ["PENDING"]
        assert "no cluster named 'gone'" in second.cluster_errors["gone"]
        assert second.run(run.id).cluster == "gone"
    finally:
        second.close()


def test_logs_of_a_finished_run_come_from_the_fetched_copies(dinf, fake):
    run = dinf.submit(dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(tasks_per_node=2)).id)
    while not dinf.run(run.id).finished:
        dinf.refresh()
    fake.unreachable = True  # no cluster needed any more
    stream = dinf.stream_logs(run.id, ranks=[1], kinds=["worker"])
    batch = next(stream)
    run = dinf.run(run.id)
    assert [(c.path, c.lines) for c in batch] == [
        (f"{run.output_dir}/rank1.log", ["rank 1 fetched line 1", "rank 1 fetched line 2"])]
    assert next(stream) == []  # then quiet, like a live tail of a file that stopped growing
    offsets = {batch[0].path: batch[0].end_offset}
    assert next(dinf.stream_logs(run.id, offsets, ranks=[1], kinds=["worker"])) == []
    # launcher logs were not fetched by this fake: those come from the cluster
    fake.unreachable = False
    assert next(dinf.stream_logs(run.id, kinds=["launcher"]))[0].lines[0].startswith("line of ")


def test_concurrent_submits_of_one_draft_make_one_job(dinf, fake):
    import threading

    draft = dinf.new_run(cluster="local", spec=RunSpec(), resources=Resources())
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def click():
        barrier.wait()
        try:
            outcomes.append(dinf.submit(draft.id).state)
        except ServiceError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.submitted) == 1
    assert outcomes.count("PENDING") == 1 and len(outcomes) == 4


def test_clone_run_for_resubmission(dinf, fake):
    exp = dinf.create_experiment(name="e", kind="manual")
    failed = dinf.submit(dinf.new_run(cluster="local", spec=pp2_spec(), resources=Resources(tasks_per_node=2),
                                      experiment_id=exp).id)
    dinf.cancel(failed.id)
    copy = dinf.clone_run(failed.id)
    assert (copy.state, copy.name, copy.spec, copy.resources, copy.experiment_id) == (
        "DRAFT", failed.name, failed.spec, failed.resources, exp)
    assert copy.uid != failed.uid and dinf.submit(copy.id).job_id == "102"
    imported = dinf.ingest_dir(FIXTURE_BUNDLE)
    with pytest.raises(ServiceError, match="imported, not submitted"):
        dinf.clone_run(imported.run_id)


def test_a_slurm_cluster_is_asked_only_when_its_poll_is_due(tmp_path):
    (tmp_path / "config.toml").write_text('[clusters.mini]\nhost = "mini"\n')
    fake = FakeCluster("mini", bundle=FIXTURE_BUNDLE)
    with Dinf(data_dir=tmp_path, config_path=tmp_path / "config.toml", cluster_factory=lambda cfg: fake) as dinf:
        run = dinf.submit(dinf.new_run(cluster="mini", spec=RunSpec(), resources=Resources()).id)
        fake.states[run.job_id] = [JobState.RUNNING]
        for _ in range(5):  # the app's loop calls refresh every couple of seconds; the poller decides
            dinf.refresh()
        assert len(fake.status_calls) == 1
        dinf.poll_soon()  # the user asked
        dinf.refresh()
        assert len(fake.status_calls) == 2
        dinf.watch_run(run.id, every_s=0)  # bounded: at most once a second
        dinf.refresh()
        assert len(fake.status_calls) == 2
        dinf.refresh(force=True)
        assert len(fake.status_calls) == 3


def test_waiting_on_a_run_watches_it(tmp_path):
    from tui.cli.main import wait_for

    (tmp_path / "config.toml").write_text('[clusters.mini]\nhost = "mini"\n')
    fake = FakeCluster("mini", bundle=FIXTURE_BUNDLE)
    with Dinf(data_dir=tmp_path, config_path=tmp_path / "config.toml", cluster_factory=lambda cfg: fake) as dinf:
        run = dinf.submit(dinf.new_run(cluster="mini", spec=RunSpec(), resources=Resources()).id)
        fake.states[run.job_id] = [JobState.RUNNING, JobState.COMPLETED]
        assert wait_for(dinf, run.id, poll_s=1.0).state == "COMPLETED"
        assert dinf._pollers["mini"]._watchers == {("run", run.id): 1.0}
