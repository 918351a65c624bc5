"""Repository functions over a real SQLite file."""

from __future__ import annotations

import json

import pytest

from storage import repo
from storage.db import read_session, write_session


def test_state_history_and_timestamps(engine):
    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="u1", name="n", mode="pp", spec={"mode": "pp"}, at=100.0)
        assert repo.record_state(session=session, run=run, state="PENDING", reason="Priority", at=101.0)
        assert not repo.record_state(session=session, run=run, state="PENDING", reason="Priority", at=102.0)
        assert repo.record_state(session=session, run=run, state="RUNNING", at=103.0)
        assert repo.record_state(session=session, run=run, state="COMPLETED", at=110.0)
        # a stale poll arriving late cannot revive a finished run
        assert not repo.record_state(session=session, run=run, state="RUNNING", at=111.0)
        session.commit()
        run_id = run.id
    with read_session(engine) as session:
        run = repo.get_run(session=session, run_id=run_id)
        assert (run.state, run.started_at, run.finished_at) == ("COMPLETED", 103.0, 110.0)
        history = repo.state_history(session=session, run_id=run_id)
        assert [(h.state, h.reason, h.at) for h in history] == [
            ("DRAFT", None, 100.0), ("PENDING", "Priority", 101.0), ("RUNNING", None, 103.0),
            ("COMPLETED", None, 110.0)]


def test_list_runs_filters(engine):
    with write_session(engine) as session:
        exp = repo.create_experiment(session=session, name="sweep", kind="batch_sweep", parameters={"b": [1, 2]})
        local = repo.get_or_create_cluster(session=session, name="local", backend="local")
        assert repo.get_or_create_cluster(session=session, name="local", backend="local").id == local.id
        a = repo.create_run(session=session, uid="a", name="a", mode="pp", spec={}, experiment_id=exp.id,
                            cluster_id=local.id)
        b = repo.create_run(session=session, uid="b", name="b", mode="tp", spec={})
        repo.record_state(session=session, run=b, state="FAILED")
        session.commit()
        ids = (a.id, b.id, exp.id, local.id)
    with read_session(engine) as session:
        a_id, b_id, exp_id, local_id = ids
        assert [r.id for r in repo.list_runs(session=session)] == [a_id, b_id]
        assert [r.id for r in repo.list_runs(session=session, experiment_id=exp_id)] == [a_id]
        assert [r.id for r in repo.list_runs(session=session, cluster_id=local_id)] == [a_id]
        assert [r.id for r in repo.list_runs(session=session, unfinished=True)] == [a_id]
        assert [r.id for r in repo.list_runs(session=session, states=["FAILED"])] == [b_id]
        assert [r.id for r in repo.list_runs(session=session, run_ids=[b_id])] == [b_id]
        assert json.loads(repo.get_experiment(session=session, experiment_id=exp_id).parameters_json) == {"b": [1, 2]}


def test_find_run_by_id_uid_prefix_and_name(engine):
    with write_session(engine) as session:
        one = repo.create_run(session=session, uid="demo-abc123", name="alpha", mode="pp", spec={})
        repo.create_run(session=session, uid="demo-abd999", name="beta", mode="pp", spec={})
        session.commit()
    with read_session(engine) as session:
        assert repo.find_run(session=session, ref=str(one.id)).uid == "demo-abc123"
        assert repo.find_run(session=session, ref="demo-abc123").id == one.id
        assert repo.find_run(session=session, ref="demo-abc").id == one.id
        assert repo.find_run(session=session, ref="alpha").id == one.id
        with pytest.raises(repo.RunNotFound, match="several runs"):
            repo.find_run(session=session, ref="demo-ab")
        with pytest.raises(repo.RunNotFound, match="no run 'nope'"):
            repo.find_run(session=session, ref="nope")
        # LIKE wildcards in the reference are literal
        with pytest.raises(repo.RunNotFound):
            repo.find_run(session=session, ref="demo-%")


def test_update_run_rejects_unknown_column(engine):
    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="x", name="x", mode="pp", spec={})
        with pytest.raises(AttributeError, match="no column 'jobid'"):
            repo.update_run(session=session, run=run, jobid="1")


def test_job_ids_and_accounting_upsert(engine):
    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="x", name="x", mode="pp", spec={})
        repo.add_job_id(session=session, run=run, job_id="41")
        repo.add_job_id(session=session, run=run, job_id="42")
        repo.add_job_id(session=session, run=run, job_id="42")
        repo.record_accounting(session=session, run_id=run.id, job_id="42", fields={"State": "RUNNING"})
        repo.record_accounting(session=session, run_id=run.id, job_id="42",
                               fields={"State": "COMPLETED", "Elapsed": "00:00:07", "MaxRSS": "300M"})
        session.commit()
        run_id = run.id
    with read_session(engine) as session:
        run = repo.get_run(session=session, run_id=run_id)
        assert (run.job_id, json.loads(run.job_ids_json)) == ("42", ["41", "42"])
        rows = repo.accounting_for_run(session=session, run_id=run_id)
        assert [(r.job_id, r.state, r.elapsed, r.max_rss) for r in rows] == [("42", "COMPLETED", "00:00:07", "300M")]


def test_state_histories_of_many_runs(engine):
    with write_session(engine) as session:
        a = repo.create_run(session=session, uid="a", name="a", mode="pp", spec={}, at=1.0)
        b = repo.create_run(session=session, uid="b", name="b", mode="pp", spec={}, at=2.0)
        repo.record_state(session=session, run=a, state="PENDING", at=3.0)
        repo.record_state(session=session, run=b, state="FAILED", reason="NonZeroExitCode", at=4.0)
        session.commit()
    with read_session(engine) as session:
        changes = repo.state_histories(session=session, run_ids=[b.id, a.id])
        assert [(c.run_id, c.state, c.at) for c in changes] == [
            (a.id, "DRAFT", 1.0), (a.id, "PENDING", 3.0), (b.id, "DRAFT", 2.0), (b.id, "FAILED", 4.0)]
        assert repo.state_histories(session=session, run_ids=[]) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"mode": "single"}, ("reference", False, False)),  # a spec from before the fast path
        ({"mode": "single", "impl": "fast", "compile": True, "cuda_graphs": True}, ("fast", True, True)),
        ({"mode": "dp", "impl": "fast", "compile": False, "cuda_graphs": True}, ("fast", False, True)),
        ({"mode": "pp", "impl": "reference", "compile": True, "cuda_graphs": True}, ("reference", False, False)),
        ({"mode": "tp", "impl": "reference", "compile": True, "cuda_graphs": True}, ("deepspeed", False, False)),
        ({"mode": "tp", "impl": "fast"}, ("fast", True, True)),  # RunSpec's defaults
        ({"mode": "single", "impl": "fast", "compile": True, "cuda_graphs": True, "device": "cpu"},
         ("fast", False, False)),  # the fast path runs eagerly on CPU
    ],
    ids=["no-impl", "fast", "fast-eager", "reference", "tp-reference-is-deepspeed", "fast-defaults", "fast-on-cpu"],
)
def test_new_run_records_the_engine_its_spec_asks_for(engine, spec, expected):
    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="r", name="r", mode=spec["mode"], spec=spec)
        session.commit()
    with read_session(engine) as session:
        stored = repo.get_run(session=session, run_id=run.id)
        assert (stored.engine_impl, stored.engine_compiled, stored.engine_cuda_graphs) == expected
        assert stored.engine_capture_s is None


def test_elapsed_follows_slurm_not_when_dinf_noticed(engine):
    # dinf saw RUNNING at 100 and COMPLETED at 157 (polls late); Slurm says the job ran 29 s.
    from tui.display.runs import elapsed_s

    with write_session(engine) as session:
        run = repo.create_run(session=session, uid="e", name="e", mode="pp", spec={}, at=90.0)
        repo.record_state(session=session, run=run, state="RUNNING", at=100.0)
        assert repo.record_slurm_elapsed(session=session, run=run, elapsed_s=12.0, now=113.0)  # squeue %M
        assert run.started_at == 101.0
        assert not repo.record_slurm_elapsed(session=session, run=run, elapsed_s=13.0, now=114.2)  # same start
        repo.record_state(session=session, run=run, state="COMPLETED", at=157.0)
        assert repo.record_slurm_elapsed(session=session, run=run, elapsed_s=29.0)  # sacct Elapsed
        assert elapsed_s(run) == 29.0
