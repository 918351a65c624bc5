"""The real app against the real Slurm minicluster over real SSH: fill the form, submit a 2-node
pipeline run, watch both ranks' logs stream, see it complete with measurements.

Needs `bash tests/cluster/minicluster up` (the suite-wide `minicluster` fixture skips without it,
or fails under DINF_REQUIRE_SLURM=1).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from pilot_wait import wait_for
from textual.widgets import DataTable, Input, Select

from tui.display.runs import printable
from tui.ui.app import DinfApp
from tui.ui.screens.new_run import NewRunScreen
from tui.ui.screens.run import RunScreen
from tui.ui.screens.runs import RunsScreen

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
        from tui.core.service import Dinf, make_cluster

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
        assert app.connections["mini"].state == "connected"
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


async def test_unknown_host_key_is_a_dialog_and_trusting_it_connects(minicluster, tmp_path: Path):
    """First contact with the cluster's sshd through an EMPTY known_hosts: refused with the
    fingerprint in a dialog, nothing recorded; trusting it writes known_hosts, connects and submits."""
    from remote.slurm_cluster import SlurmCluster
    from remote.ssh import SshConnection, SshOptions
    from tui.ui.screens.dialogs import HostKeyDialog

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(f'[clusters.mini]\nhost = "mini"\n[clusters.mini.slurm]\npartition = "{minicluster.partition}"\n')

    def open_service():
        from tui.core.service import Dinf, make_cluster

        def clusters(cluster_config):
            if cluster_config.name != "mini":
                return make_cluster(cluster_config)
            connection = SshConnection(minicluster.target(known_hosts=str(known_hosts)),
                                       SshOptions(allow_agent=False, look_for_keys=False, reconnect_attempts=1))
            return SlurmCluster(connection, name="mini", workdir=f"{minicluster.home}/tui-hostkey",
                                python=minicluster.python_environment())

        return Dinf(data_dir=tmp_path / "data", config_path=config, cluster_factory=clusters)

    app = DinfApp(service_factory=open_service, live_poll_s=1.0, idle_poll_s=2.0, max_backoff_s=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, timeout=30, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#cluster", Select).value = "mini"
        for field, value in {"nodes": "1", "ranks_per_node": "1", "mode": None}.items():
            if value is not None:
                form.query_one(f"#{field}", Input).value = value
        form.query_one("#mode", Select).value = "single"
        await pilot.pause()
        assert not form.checked.problems, form.checked.problems
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), timeout=60, what="the host key dialog")
        dialog = app.screen
        assert dialog.fingerprint.startswith("SHA256:")
        assert dialog.fingerprint in str(dialog.query_one("#fingerprint").render())
        assert app.service.runs() == []  # nothing recorded, nothing submitted
        assert known_hosts.read_text() == ""
        await pilot.click("#trust")
        await wait_for(pilot, lambda: known_hosts.read_text().strip() != "", timeout=30, what="known_hosts written")
        # The submit the dialog interrupted goes on by itself: no second ctrl+s.
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), timeout=60, what="submitted after trusting")
        assert app.connections["mini"].state == "connected"
        run_id = app.screen.run_id
        await wait_for(pilot, lambda: app.runs.get(run_id) and app.runs[run_id].state not in ("DRAFT",),
                       timeout=30)
        app.service.cancel(run_id)  # don't leave the job behind


async def test_preview_after_refusing_the_host_key_asks_again_and_renders_once_trusted(minicluster, tmp_path: Path):
    """The issue's preview: after a refusal it showed no dialog, leaked `SshConnection.trust_host_key(...)`
    and stayed on 'rendering the script…'. Now it meets the same dialog each time, and renders once trusted."""
    from remote.slurm_cluster import SlurmCluster
    from remote.ssh import SshConnection, SshOptions
    from tui.ui.screens.dialogs import HostKeyDialog

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(f'[clusters.mini]\nhost = "mini"\n[clusters.mini.slurm]\npartition = "{minicluster.partition}"\n')

    def open_service():
        from tui.core.service import Dinf, make_cluster

        def clusters(cluster_config):
            if cluster_config.name != "mini":
                return make_cluster(cluster_config)
            connection = SshConnection(minicluster.target(known_hosts=str(known_hosts)),
                                       SshOptions(allow_agent=False, look_for_keys=False, reconnect_attempts=1))
            return SlurmCluster(connection, name="mini", workdir=f"{minicluster.home}/tui-preview",
                                python=minicluster.python_environment())

        return Dinf(data_dir=tmp_path / "data", config_path=config, cluster_factory=clusters)

    app = DinfApp(service_factory=open_service, live_poll_s=1.0, idle_poll_s=2.0, max_backoff_s=2.0)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: app.service is not None, timeout=30, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#cluster", Select).value = "mini"
        form.query_one("#mode", Select).value = "single"
        form.query_one("#ranks_per_node", Input).value = "1"
        await pilot.pause()
        for answer in ("#refuse", "#refuse", "#trust"):
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, HostKeyDialog), timeout=60, what="the host key dialog")
            await pilot.click(answer)
            await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), timeout=10)
            if answer == "#refuse":
                await wait_for(pilot, lambda: "was refused" in str(form.query_one("#preview-text").render()),
                               timeout=10, what="the refusal in the preview pane")
                assert known_hosts.read_text() == ""
        await wait_for(pilot, lambda: form.preview_script is not None, timeout=30, what="the script once trusted")
        assert "#SBATCH" in form.preview_script and known_hosts.read_text().strip()
        toasts = " ".join(str(toast.render()) for toast in app.screen.query("Toast"))
        assert "trust_host_key" not in toasts, toasts
        assert app.connections["mini"].state == "connected"


async def test_failed_login_is_a_dialog_saying_why(minicluster, tmp_path: Path):
    """A key the cluster doesn't accept: the submit stops with a dialog naming the failure."""
    import subprocess

    from remote.slurm_cluster import SlurmCluster
    from remote.ssh import SshConnection, SshOptions
    from tui.ui.screens.dialogs import ProblemDialog

    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    config = tmp_path / "config.toml"
    config.write_text(f'[clusters.mini]\nhost = "mini"\n[clusters.mini.slurm]\npartition = "{minicluster.partition}"\n')

    def open_service():
        from tui.core.service import Dinf, make_cluster

        def clusters(cluster_config):
            if cluster_config.name != "mini":
                return make_cluster(cluster_config)
            connection = SshConnection(minicluster.target(key_files=(str(wrong_key),)),
                                       SshOptions(allow_agent=False, look_for_keys=False, reconnect_attempts=1))
            return SlurmCluster(connection, name="mini", workdir=f"{minicluster.home}/tui-auth",
                                python=minicluster.python_environment())

        return Dinf(data_dir=tmp_path / "data", config_path=config, cluster_factory=clusters)

    app = DinfApp(service_factory=open_service, live_poll_s=1.0, idle_poll_s=2.0, max_backoff_s=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, timeout=30, what="service")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        form = app.screen
        form.query_one("#cluster", Select).value = "mini"
        form.query_one("#mode", Select).value = "single"
        form.query_one("#ranks_per_node", Input).value = "1"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemDialog), timeout=60, what="the login dialog")
        detail = str(app.screen.query_one("#problem-detail").render())
        assert minicluster.user in detail or "auth" in detail.lower()
        assert app.connections["mini"].state == "failed"
        assert app.service.runs() == []
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and not app.screen.busy)


def worker_pid(job_id: str, rank: int) -> int | None:
    """The pid of a rank's worker process (the minicluster's nodes share this machine's pid namespace)."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted <= environ and b"worker" in cmdline:
            return int(proc.name)
    return None


def submit_long_pp_run(service, partition: str):
    """A 2-node pp run long enough to be killed mid-measurement (it would take minutes)."""
    from remote.cluster import Resources
    from worker.contract import RunSpec

    spec = RunSpec.from_dict({"run_name": "killed-rank", "mode": "pp", "pp_size": 2, "device": "cpu",
                              "batch_sizes": [1, 2], "max_new_tokens": 512, "repeats": 50, "warmup": 0,
                              "num_requests": 2})
    resources = Resources(nodes=2, tasks_per_node=1, partition=partition, time_limit="10:00")
    record = service.new_run(cluster="mini", spec=spec, resources=resources, name="killed-rank")
    return service.submit(record.id)


async def test_a_rank_killed_with_sigkill_leaves_the_app_up_and_names_the_cause(slurm_app, minicluster):
    """The issue's crash: rank 1 of a pp run on 2 nodes killed with -9 mid-run. The app stays up,
    shows the failure summary (first rank to die, its node, its signal) and the error as written
    (the peers' gloo errors hold '[/__w/pytorch/...]'), and the run can be reopened."""
    app = slurm_app
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, timeout=30, what="service")
        record = await asyncio.to_thread(submit_long_pp_run, app.service, minicluster.partition)
        assert record.job_id, record.error
        run_id = record.id
        app.action_refresh_runs()
        await wait_for(pilot, lambda: run_id in app.runs, timeout=30, what="the run in the list")
        app.open_run(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run screen")
        logs = app.run_logs[run_id]
        await wait_for(pilot, lambda: logs.rank_state(1).phase in ("warmup", "measure"), timeout=RUN_TIMEOUT_S,
                       what="rank 1 generating")
        pid = worker_pid(record.job_id, 1)
        assert pid is not None, "rank 1's worker process is not on this machine"
        os.kill(pid, signal.SIGKILL)

        await wait_for(pilot, lambda: app.runs[run_id].state == "FAILED", timeout=RUN_TIMEOUT_S, what="FAILED")
        await wait_for(pilot, lambda: app.runs[run_id].failure is not None and app.runs[run_id].error,
                       timeout=60, what="the failure summary")
        failed = app.runs[run_id]
        assert (failed.failure.rank, failed.failure.node, failed.failure.signal) == (1, "node2", 9), failed.failure
        await pilot.pause(1.5)  # the header redraws and the tail drains the ranks' last lines
        assert app.is_running

        for reopened in (False, True):  # reopening a run that failed this way crashed the app too
            header = str(app.screen.query_one("#run-summary").render())
            assert "FAILED" in header
            assert "✖ rank 1 on node2 died first: killed by signal 9 (SIGKILL)" in header, header
            rest = failed.error.removeprefix(failed.failure.cause).lstrip("; ")
            assert printable(rest) in header, header  # the rest of the error as written, brackets and all
            if not reopened:
                await pilot.press("escape")
                await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
                app.open_run(run_id)
                await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="the run reopened")
                await pilot.pause(1.0)
        assert app.is_running

