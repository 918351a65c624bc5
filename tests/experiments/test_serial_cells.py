"""`--serial`: an experiment's cells chained on Slurm, each job waiting for the one before (afterany).

Against the real service and database with a scripted cluster standing in for Slurm (fast); that
Slurm itself takes the chain is checked on the minicluster in tests/cli/test_cli_slurm.py.
"""

from __future__ import annotations

import pytest

from remote.cluster import Resources
from tests.cli.fake_cluster import FakeCluster
from tui.core import experiment_runs
from tui.studies.catalog import plan
from tui.studies.presets import ClusterShape, ExperimentError, StudyConfig
from tui.core.service import Dinf
from worker.contract import ModelSource


def study(name: str, resources: Resources) -> StudyConfig:
    return StudyConfig.of(name=name, model=ModelSource(config="tiny"), dtype="float32", device="cpu", modes=("pp", "dp"),
                          shape=ClusterShape(nodes=1, ranks_per_node=2, gpus=False), resources=resources, batch_size=2,
                          num_requests=4, max_new_tokens=4, warmup=0, repeats=1, rank_counts=(1, 2))


@pytest.fixture
def service(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[clusters.gpu]\nhost = "gpu-login"\n')
    clusters: dict[str, FakeCluster] = {}
    with Dinf(data_dir=tmp_path / "home", config_path=config,
              cluster_factory=lambda cfg: clusters.setdefault(cfg.name, FakeCluster(cfg.name))) as dinf:
        yield dinf, clusters


def dependencies(fake: FakeCluster) -> list[str | None]:
    return [bundle.resources.dependency for bundle in fake.submitted]


def test_serial_cells_each_wait_for_the_job_before_them(service):
    dinf, clusters = service
    experiment = experiment_runs.record_plan(dinf, plan("strong_scaling", study("chain", Resources())))
    launches = experiment_runs.launch(dinf, experiment, cluster="gpu", serial=True)
    assert [l.cell for l in launches] == ["single/r1", "pp/r2", "dp/r2"]
    assert [l.run.job_id for l in launches] == ["101", "102", "103"]
    assert dependencies(clusters["gpu"]) == [None, "afterany:101", "afterany:102"]
    # recorded with the run, so `dinf show` and a resubmitted copy say what the job waited for
    assert dinf.run(launches[2].run.id).resources["dependency"] == "afterany:102"


def test_serial_adds_to_a_dependency_of_the_study_and_chains_drafts_submitted_later(service):
    dinf, clusters = service
    experiment = experiment_runs.record_plan(dinf, plan("strong_scaling", study("drafts", Resources(dependency="afterok:7"))))
    drafts = experiment_runs.launch(dinf, experiment, cluster="gpu", submit=False)
    assert {l.run.state for l in drafts} == {"DRAFT"} and clusters["gpu"].submitted == []
    experiment_runs.launch(dinf, experiment, cluster="gpu", serial=True)
    assert dependencies(clusters["gpu"]) == ["afterok:7", "afterok:7,afterany:101", "afterok:7,afterany:102"]


def test_without_serial_cells_do_not_wait_and_local_cells_need_no_chain(service):
    dinf, clusters = service
    experiment_runs.launch(dinf, experiment_runs.record_plan(dinf, plan("strong_scaling", study("free", Resources()))),
                           cluster="gpu")
    assert dependencies(clusters["gpu"]) == [None, None, None]
    # the local backend runs an experiment's cells one at a time by itself (one lane)
    experiment_runs.launch(dinf, experiment_runs.record_plan(dinf, plan("strong_scaling", study("lane", Resources()))),
                           cluster="local", serial=True)
    assert dependencies(clusters["local"]) == [None, None, None]
    (lane,) = {bundle.lane for bundle in clusters["local"].submitted}
    assert lane is not None


def test_serial_refuses_an_any_of_dependency_it_cannot_add_to(service):
    dinf, clusters = service
    experiment = experiment_runs.record_plan(
        dinf, plan("strong_scaling", study("anyof", Resources(dependency="afterok:1?afterok:2"))))
    with pytest.raises(ExperimentError, match=r"cell single/r1: resources.dependency: 'afterok:1\?afterok:2' is met "
                                              r"by any one .*; nothing was launched"):
        experiment_runs.launch(dinf, experiment, cluster="gpu", serial=True)
    assert "gpu" not in clusters or clusters["gpu"].submitted == []
    assert dinf.runs() == []
