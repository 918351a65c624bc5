"""A strong-scaling experiment run for real and charted: the local backend, then the Slurm minicluster.

Real worker ranks (gloo, tiny synthetic model on CPU), submitted through the service, polled to
the end, ingested, then reported and compared from the database. Numbers on CPU are not asserted
(no timed asserts); what is asserted is that every cell finished and that the report and charts
carry a row, a point and a verdict for every mode at every rank count.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remote.cluster import Resources
from storage import repo
from storage.db import read_session
from tui.core import experiment_runs
from tui.core.service import Dinf
from tui.studies import charts, report, validity
from tui.studies.comparison import compare_runs, format_comparison
from tui.studies.catalog import plan
from tui.studies.presets import ClusterShape, StudyConfig
from tui.studies.results import load_experiment
from worker.contract import ModelSource


def tiny_study(name: str, shape: ClusterShape, resources: Resources) -> StudyConfig:
    return StudyConfig.of(
        name=name, model=ModelSource(config="tiny"), dtype="float32", device="cpu", modes=("pp", "dp"),
        shape=shape, resources=resources, batch_size=2, num_requests=4, max_new_tokens=4, warmup=0,
        repeats=2, rank_counts=(1, 2),
    )


def wait_until_finished(dinf: Dinf, experiment: str, timeout_s: float = 400):
    deadline = time.monotonic() + timeout_s
    while True:
        dinf.refresh()
        exp = experiment_runs.load(dinf, experiment)
        if all(c.run is not None and c.run.state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "DRAFT")
               for c in exp.cells):
            return exp
        assert time.monotonic() < deadline, [(c.cell.key, c.state) for c in exp.cells]
        time.sleep(1.0)


def check_strong_scaling_results(dinf: Dinf, name: str, tmp_path: Path, unit: str) -> None:
    exp = wait_until_finished(dinf, name)
    failed = [(c.cell.key, c.state, c.run.error) for c in exp.cells if not c.done]
    assert not failed, failed
    assert [c.cell.key for c in exp.cells] == ["single/r1", "pp/r2", "dp/r2"]
    for c in exp.cells:
        (point,) = c.run.points
        assert point.output_tokens == 4 * 4 and point.repeats == 2 and point.wall_s > 0
        assert point.num_gpus == c.cell.num_ranks
        assert len(point.ranks) == c.cell.num_ranks

    out = tmp_path / f"{name}.md"
    report.write_report([exp], out)
    text = out.read_text()
    for mode in ("pp", "dp"):
        assert f"| {mode} | 2 | " in text                  # its table row
        # its verdict, in the findings (on Slurm the two ranks sit on two nodes)
        assert re.search(rf"^- {mode} on 2 {unit}( \(2 nodes\))?: ", text, re.M), text
    assert f"Strong scaling: output tokens/s vs {unit}" in text and "key: o dp   x pp   . ideal" in text
    # the report reads only the database: the same file again
    with read_session(dinf.engine) as session:
        again = report.build_report([load_experiment(session, name)])
    assert again == text

    comparison = compare_runs([c.run for c in exp.cells])
    assert [round(d.speedup, 6) for d in comparison.derived][0] == 1.0
    chart = next(c for c in comparison.charts if c.title.startswith("Output tokens/s vs"))
    drawn = charts.render(chart)
    assert "key: o dp   x pp   . ideal (N x 1-GPU rate)" in drawn and f"Output tokens/s vs {unit}" in drawn
    # greedy ids on CPU in fp32 are token-exact across modes
    assert all(result.exact_matches == result.n == 4 for _, _, result in comparison.correctness)
    assert "4/4 exact (100%)" in format_comparison(comparison, with_charts=False)


@pytest.mark.dist
@pytest.mark.slow
def test_strong_scaling_on_the_local_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with Dinf(data_dir=tmp_path / "home", config_path=tmp_path / "config.toml") as dinf:
        cfg = tiny_study("local-ss", ClusterShape(nodes=1, ranks_per_node=2, gpus=False),
                         dinf.config.cluster("local").defaults)
        experiment_id = experiment_runs.record_plan(dinf, plan("strong_scaling", cfg))
        launches = experiment_runs.launch(dinf, experiment_id, cluster="local")
        assert [l.run.state for l in launches] != [] and all(l.run.job_id for l in launches)
        check_strong_scaling_results(dinf, "local-ss", tmp_path, unit="ranks")
        # submitted together, the cells ran one at a time: no two timed windows (load included) overlap
        exp = experiment_runs.load(dinf, "local-ss")
        windows = sorted(validity.run_window(c.run) for c in exp.cells)
        assert all(w is not None for w in windows) and len(windows) == 3
        for earlier, later in zip(windows, windows[1:]):
            assert earlier[1] <= later[0], windows
        assert validity.overlap_flags([c.run for c in exp.cells]) == []
        # and the worker's per-GPU rate of a CPU run is per rank (it once divided a 2-rank run by 1)
        with read_session(dinf.engine) as session:
            for c in exp.cells:
                (m,) = repo.measurements_for_runs(session=session, run_ids=[c.run.id])
                assert m.per_gpu_output_tok_s == pytest.approx(m.output_throughput_tok_s / c.cell.num_ranks)


@pytest.mark.dist
@pytest.mark.slow
def test_failed_cell_is_resubmitted_as_a_new_attempt(tmp_path, monkeypatch):
    """A cell whose worker refuses its input fails for real; resubmit makes a second attempt for it only."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with Dinf(data_dir=tmp_path / "home", config_path=tmp_path / "config.toml") as dinf:
        cfg = tiny_study("resub", ClusterShape(nodes=1, ranks_per_node=2, gpus=False),
                         dinf.config.cluster("local").defaults)
        # a checkpoint directory that does not exist on the cluster: the worker's preflight refuses it
        cfg.spec.model = ModelSource(source="checkpoint", path=str(tmp_path / "no-such-model"))
        cfg.modes = ("dp",)
        experiment_id = experiment_runs.record_plan(dinf, plan("strong_scaling", cfg))
        experiment_runs.launch(dinf, experiment_id, cluster="local")
        exp = wait_until_finished(dinf, "resub")
        assert {c.state for c in exp.cells} == {"FAILED"}
        first_runs = {c.cell.key: c.run.id for c in exp.cells}
        launches = experiment_runs.resubmit_failed(dinf, "resub")
        assert sorted(l.cell for l in launches) == ["dp/r2", "single/r1"]
        exp = wait_until_finished(dinf, "resub")
        for c in exp.cells:
            assert c.attempts == 2 and c.run.id != first_runs[c.cell.key]
        # still failing: a third attempt, on the cluster named explicitly
        assert experiment_runs.resubmit_failed(dinf, "resub", cluster="local")
        exp = wait_until_finished(dinf, "resub")
        assert {c.attempts for c in exp.cells} == {3}


@pytest.mark.slurm
@pytest.mark.slow
def test_strong_scaling_on_the_slurm_minicluster(minicluster, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[clusters.mini]\nhost = "{minicluster.host}"\n'
        f'[clusters.mini.slurm]\npartition = "{minicluster.partition}"\ntime_limit = "00:10:00"\n'
    )
    clusters = {}

    def factory(cluster_config):
        if cluster_config.name == "mini":
            return clusters.setdefault("mini", minicluster.cluster())
        from tui.core.service import make_cluster

        return make_cluster(cluster_config)

    with Dinf(data_dir=tmp_path / "home", config_path=config, cluster_factory=factory) as dinf:
        # one rank per node: the 2-rank cells span both slurmd nodes
        cfg = tiny_study("slurm-ss", ClusterShape(nodes=minicluster.nodes, ranks_per_node=1, gpus=False),
                         dinf.config.cluster("mini").defaults)
        experiment_id = experiment_runs.record_plan(dinf, plan("strong_scaling", cfg))
        launches = experiment_runs.launch(dinf, experiment_id, cluster="mini")
        assert all(l.run.job_id for l in launches), [(l.cell, l.note) for l in launches]
        exp = wait_until_finished(dinf, "slurm-ss")
        assert exp.cell("pp/r2").cell.resources.nodes == 2
        check_strong_scaling_results(dinf, "slurm-ss", tmp_path, unit="ranks")


@pytest.mark.dist
@pytest.mark.slow
def test_quantization_study_on_the_local_backend(tmp_path, monkeypatch):
    """fp32 and int8 of the tiny model, each job scored against the unquantized model in the same job."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with Dinf(data_dir=tmp_path / "home", config_path=tmp_path / "config.toml") as dinf:
        cfg = tiny_study("local-q", ClusterShape(nodes=1, ranks_per_node=1, gpus=False),
                         dinf.config.cluster("local").defaults)
        cfg.quant_batch_sizes = (2,)
        study = plan("quantization", cfg)
        assert [c.key for c in study.cells] == ["none/b2", "int8/b2"]
        assert study.skipped == (("int4/b2", "int4 runs through a CUDA kernel; CPU runs compare the others"),)
        experiment_id = experiment_runs.record_plan(dinf, study)
        experiment_runs.launch(dinf, experiment_id, cluster="local")
        exp = wait_until_finished(dinf, "local-q")
        failed = [(c.cell.key, c.state, c.run.error) for c in exp.cells if not c.done]
        assert not failed, failed
        runs = {c.run.quant_scheme: c.run for c in exp.cells}
        assert runs["none"].accuracy["kl_mean"] == 0 and runs["none"].accuracy["top1_agreement"] == 1
        assert runs["int8"].accuracy["kl_mean"] > 0 and runs["int8"].accuracy["prompts"] == 20
        assert runs["int8"].weight_bytes < runs["none"].weight_bytes / 2  # fp32 -> int8 matmul weights

        out = tmp_path / "q.md"
        report.write_report([exp], out)
        text = out.read_text()
        assert "Quantization: local-q" in text
        assert re.search(r"^\| fp32 \| 2 \| .* \| 1\.00x \| ", text, re.M), text
        assert re.search(r"^\| int8 \| 2 \| .* \| 1\.\d MiB \| \d+/20 \| .* \| 20/20 \| ", text, re.M), text  # with the floor
        assert "Output tok/s vs top-1 agreement with the unquantized model" in text and "key: o fp32   x int8" in text
        assert re.search(r"^- local-q, int8 at batch 2: \d\.\d\dx the unquantized model's output rate", text, re.M), text
        assert "Random weights have no outlier channels" in text
        assert "int4/b2 (int4 runs through a CUDA kernel" in text

        comparison = compare_runs(list(runs.values()))  # what `dinf compare` and the compare screen draw
        chart = next(c for c in comparison.charts if c.title.startswith("Output tok/s vs top-1"))
        assert [(s.label, len(s.x)) for s in chart.series] == [("fp32", 1), ("int8", 1)]

        shown = subprocess.run([str(Path(sys.executable).parent / "dinf"), "--db", str(dinf.db_path), "show",
                                str(runs["int8"].id), "--no-refresh"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"engine +impl fast \(eager\), int8 weights", shown.stdout), shown.stdout
        assert re.search(r"accuracy +top-1 \d+\.\d%, KL .*, exact \d+/20 at batch 2 \(noise floor: top-1 ", shown.stdout)
