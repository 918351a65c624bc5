"""The real app against the real Slurm minicluster over real SSH: fill the form, submit a 2-node
pipeline run, watch both ranks' logs stream, see it complete with measurements.

Needs `bash tests/cluster/minicluster up` (the suite-wide `minicluster` fixture skips without it,
or fails under DINF_REQUIRE_SLURM=1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pilot_wait import wait_for
from textual.widgets import DataTable, Input, Select

from tui.app import DinfApp
from tui.screens.new_run import NewRunScreen
from tui.screens.run import RunScreen

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SIZE = (140, 44)
RUN_TIMEOUT_S = 300


@pytest.fixture
def slurm_app(minicluster, tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[clusters.mini]\nhost = "mini"\n'
        f'[clusters.mini.slurm]\npartition = "{minicluster.partition}"\ntime_limit = "10:00"\n'
    )

    def open_service():
        from tui.services import Dinf, make_cluster

        def clusters(cluster_config):
            # The minicluster's own key, known_hosts and this checkout's Python; `local` as usual.
            return minicluster.cluster() if cluster_config.name == "mini" else make_cluster(cluster_config)

        return Dinf(data_dir=tmp_path / "data", config_path=config, cluster_factory=clusters)

    return DinfApp(service_factory=open_service, live_poll_s=1.0, idle_poll_s=2.0, max_backoff_s=2.0)


async def test_submit_two_node_pipeline_streams_and_completes(slurm_app):
    app = slurm_app
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, timeout=30, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#cluster", Select).value = "mini"
        await pilot.pause()
        for field, value in {"name": "tui-slurm-pp", "nodes": "2", "ranks_per_node": "1", "gpus_per_node": "0",
                             "batch_sizes": "1,2", "max_new_tokens": "8"}.items():
            form.query_one(f"#{field}", Input).value = value
        await pilot.pause()
        assert form.query_one("#partition", Input).value  # the cluster's Slurm defaults filled in
        assert not form.checked.problems, form.checked.problems
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: form.preview_script is not None, timeout=30, what="the sbatch preview")
        assert "#SBATCH" in form.preview_script and "--nodes" in form.preview_script
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), timeout=60, what="submitted")
        screen = app.screen
        run_id = screen.run_id
        assert app.connections["mini"][0] == "connected"
        assert app.service.run(run_id).job_id

        logs = app.run_logs[run_id]
        await wait_for(pilot, lambda: {0, 1} <= set(logs.ranks) and all(b.received for b in logs.ranks.values()),
                       timeout=RUN_TIMEOUT_S, what="both ranks' lines over SSH")
        await wait_for(pilot, lambda: app.runs[run_id].state == "COMPLETED", timeout=RUN_TIMEOUT_S,
                       what="COMPLETED")
        await wait_for(pilot, lambda: screen.results_shown, timeout=60, what="results")
        assert screen.query_one("#measurements", DataTable).row_count == 2
        timeline = [entry.state for entry in app.service.run(run_id).history]
        assert timeline[0] == "DRAFT" and "PENDING" in timeline and timeline[-1] == "COMPLETED"
