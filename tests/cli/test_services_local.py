"""The service layer with the real local backend: quitting never touches a running job, and a new
service (a restarted app) reattaches to it and ingests its results exactly once."""

from __future__ import annotations

import time

import pytest

from tui.core.service import Dinf

pytestmark = pytest.mark.dist


def test_demo_run_survives_restart_and_is_ingested_once(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    first = Dinf(data_dir=tmp_path, config_path=tmp_path / "config.toml")
    record = first.demo_run()
    assert (record.state, record.cluster, record.mode, record.num_ranks) == ("PENDING", "local", "pp", 2)
    assert [s.kind for s in first.log_sources(record.id)] == ["worker", "events", "launcher"] * 2
    first.close()  # quit while the job runs

    second = Dinf(data_dir=tmp_path, config_path=tmp_path / "config.toml")
    try:
        deadline = time.monotonic() + 300
        while not second.run(record.id).finished:
            assert time.monotonic() < deadline, "the demo run never finished"
            second.reconcile()
            time.sleep(0.5)
        done = second.run(record.id)
        assert done.state == "COMPLETED", done.error
        assert done.has_results and done.error is None
        states = [h.state for h in done.history]
        assert states[0] == "DRAFT" and states[-1] == "COMPLETED" and "PENDING" in states
        measurements = second.measurements(record.id)
        assert [m["batch_size"] for m in measurements] == [1, 2]
        assert all(m["num_requests"] == 4 and m["output_tokens"] == 4 * 16 for m in measurements)
        assert len(second.completions(record.id)) == 8
        second.reconcile()
        assert len(second.export_rows()) == 2  # nothing ingested twice
    finally:
        second.close()
