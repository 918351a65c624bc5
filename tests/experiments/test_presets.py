"""Presets expand into the runs their study needs; impossible cells are named, bad input refused."""

from __future__ import annotations

import json

import pytest

from remote.cluster import Resources
from tui.studies import catalog
from tui.studies import presets as ex
from worker.contract import ModelSource, RunSpec


def config(**changes) -> ex.StudyConfig:
    values = dict(name="study", model=ModelSource(config="tiny"), dtype="float32",
                  shape=ex.ClusterShape(nodes=2, ranks_per_node=2, gpus=True),
                  resources=Resources(partition="gpu", time_limit="00:30:00"))
    values.update(changes)
    return ex.StudyConfig.of(**values)


def test_correctness_has_baseline_modes_and_shared_noise_floors():
    plan = catalog.plan("correctness", config(micro_batches=4))
    keys = [c.key for c in plan.cells]
    assert keys == ["baseline", "pp/r2", "tp/r2", "dp/r2", "noise_floor/b5", "noise_floor/b10"]
    by_key = {c.key: c for c in plan.cells}
    # pp splits 20 into 4 micro-batches of 5; dp gives each of 2 replicas 10; tp uses the 2-way split
    assert by_key["pp/r2"].params["noise_floor"] == "noise_floor/b5"
    assert by_key["dp/r2"].params["noise_floor"] == "noise_floor/b10"
    assert by_key["tp/r2"].params["noise_floor"] == "noise_floor/b10"
    floor = by_key["noise_floor/b10"]
    assert floor.spec.mode == "single" and floor.spec.batch_sizes == [10] and floor.num_ranks == 1
    assert by_key["baseline"].spec.batch_sizes == [20]
    pp = by_key["pp/r2"]
    assert pp.spec.pp_size == 2 and pp.spec.micro_batches == 4
    assert (pp.resources.nodes, pp.resources.tasks_per_node, pp.resources.gpus_per_node) == (1, 2, 2)
    assert pp.resources.partition == "gpu" and pp.resources.time_limit == "00:30:00"
    assert pp.spec.run_name == "study:pp/r2"


def test_noise_floor_batch_per_mode():
    assert ex.noise_floor_batch("dp", 20, 4, 1) == 5
    assert ex.noise_floor_batch("pp", 20, 2, 1) == 20      # one micro-batch: the same batch re-run
    assert ex.noise_floor_batch("tp", 20, 4, 1) == 10
    assert ex.noise_floor_batch("dp", 3, 2, 1) == 2        # ceil


def test_strong_scaling_counts_and_skips_what_the_model_cannot_do():
    plan = catalog.plan("strong_scaling", config(shape=ex.ClusterShape(nodes=2, ranks_per_node=4)))
    assert ex.rank_counts(config(shape=ex.ClusterShape(nodes=2, ranks_per_node=4))) == [1, 2, 4, 8]
    keys = [c.key for c in plan.cells]
    assert keys[0] == "single/r1"
    assert "dp/r8" in keys and "pp/r4" in keys
    skipped = dict(plan.skipped)
    assert skipped["pp/r8"] == "8 pipeline stages but the model has 4 layers"
    assert "divisible by 8" in skipped["tp/r8"]
    eight = plan.cell("dp/r8")
    assert (eight.resources.nodes, eight.resources.tasks_per_node) == (2, 4)
    # fixed workload everywhere, sized so that even at 8 GPUs each runs 8 batches of 20
    assert {c.spec.num_requests for c in plan.cells} == {20 * 8 * 8}
    assert {c.spec.num_requests for c in catalog.plan("strong_scaling", config(num_requests=20)).cells} == {20}


def test_scaling_workloads_default_to_batches_per_gpu():
    weak = catalog.plan("weak_scaling", config(modes=("dp",), batch_size=16, batches_per_gpu=4))
    assert [(c.key, c.spec.num_requests) for c in weak.cells] == [("single/r1", 64), ("dp/r2", 128), ("dp/r4", 256)]
    strong = catalog.plan("strong_scaling", config(modes=("dp",), batch_size=16, batches_per_gpu=4))
    assert {c.spec.num_requests for c in strong.cells} == {16 * 4 * 4}
    with pytest.raises(ex.ExperimentError, match="batches_per_gpu: must be an integer >= 1, got 0"):
        catalog.plan("strong_scaling", config(batches_per_gpu=0))


def test_weak_scaling_grows_requests_with_ranks():
    plan = catalog.plan("weak_scaling", config(num_requests=8, modes=("dp",)))
    assert [(c.key, c.spec.num_requests) for c in plan.cells] == [("single/r1", 8), ("dp/r2", 16), ("dp/r4", 32)]


def test_scale_by_nodes_uses_whole_nodes():
    cfg = config(scale_by="nodes", shape=ex.ClusterShape(nodes=3, ranks_per_node=2), modes=("dp",))
    assert ex.rank_counts(cfg) == [2, 4, 6]
    plan = catalog.plan("strong_scaling", cfg)
    assert [(c.resources.nodes, c.resources.tasks_per_node) for c in plan.cells] == [(1, 2), (2, 2), (3, 2)]


def test_batch_sweep_one_job_per_configuration_all_sizes():
    plan = catalog.plan("batch_sweep", config(batch_sizes=(8, 1, 4), micro_batches=2))
    assert [c.key for c in plan.cells] == ["single/r1", "pp/r2", "tp/r2", "dp/r2"]
    assert plan.cell("single/r1").spec.batch_sizes == [1, 4, 8]
    # batch 1 runs as one micro-batch of 1 row (the worker records it), so pp measures batch-1 latency too
    assert plan.cell("pp/r2").spec.batch_sizes == [1, 4, 8] and plan.cell("pp/r2").spec.micro_batches == 2
    assert plan.cell("dp/r2").spec.batch_sizes == [1, 4, 8]
    assert all(not c.spec.profile for c in plan.cells)
    # one request count per job: the largest size, so every size runs full batches (dp: per replica)
    assert [c.spec.num_requests for c in plan.cells] == [8, 8, 8, 16]


def test_profile_sets_profile_flag():
    plan = catalog.plan("profile", config(batch_sizes=(1, 8)))
    assert all(c.spec.profile for c in plan.cells)


def test_cpu_shape_asks_for_no_gpus():
    plan = catalog.plan("batch_sweep", config(shape=ex.ClusterShape(nodes=1, ranks_per_node=2, gpus=False)))
    assert all(c.resources.gpus_per_node == 0 for c in plan.cells)


def test_quantization_runs_each_scheme_and_batch_size_as_a_scored_single_rank_job():
    p = catalog.plan("quantization", config())
    assert [c.key for c in p.cells] == ["none/b1", "none/b64", "int8/b1", "int8/b64", "int4/b1", "int4/b64"]
    for c in p.cells:
        assert c.spec.mode == "single" and c.num_ranks == 1 and c.spec.score
        assert c.spec.quant == c.params["quant"] and c.spec.batch_sizes == [c.params["batch_size"]]
        assert c.spec.num_requests >= 4 * c.params["batch_size"]  # several batches per timed pass
    assert [c.role for c in p.cells][:2] == ["baseline", "baseline"]


def test_quantization_on_cpu_skips_int4_with_the_reason_and_refuses_unknown_schemes():
    p = catalog.plan("quantization", config(shape=ex.ClusterShape(nodes=1, ranks_per_node=1, gpus=False),
                                       quant_batch_sizes=(4,)))
    assert [c.key for c in p.cells] == ["none/b4", "int8/b4"]
    assert p.skipped == (("int4/b4", "int4 runs through a CUDA kernel; CPU runs compare the others"),)
    with pytest.raises(ex.ExperimentError, match="quant_schemes: .*int3"):
        catalog.plan("quantization", config(quant_schemes=("none", "int3")))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modes": ("xp",)}, "modes: .*xp"),
        ({"shape": ex.ClusterShape(nodes=1, ranks_per_node=1)}, "shape: parallel modes need at least 2 ranks"),
        ({"name": " "}, "name: an experiment needs a name"),
        ({"scale_by": "racks"}, "scale_by"),
        ({"max_new_tokens": 0}, "cell baseline: max_new_tokens: must be >= 1"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ex.ExperimentError, match=message):
        catalog.plan("correctness", config(**changes))


def test_unknown_preset_lists_presets():
    with pytest.raises(ex.ExperimentError, match="unknown preset 'nope'; presets: correctness"):
        catalog.plan("nope", config())


def test_cartesian_and_paired_sweeps():
    base = RunSpec(run_name="x", model=ModelSource(config="tiny"), mode="pp", batch_sizes=[4])
    cart = ex.plan_sweep("sw", base, Resources(tasks_per_node=2),
                         {"micro_batches": [1, 2], "max_new_tokens": [8, 16, 32]})
    assert len(cart.cells) == 6 and cart.kind == "sweep"
    assert cart.cells[0].key == "micro_batches=1,max_new_tokens=8"
    assert cart.cells[0].spec.pp_size == 2
    paired = ex.plan_sweep("sw", base, Resources(tasks_per_node=2),
                           {"resources.tasks_per_node": [2, 4], "micro_batches": [1, 2]}, paired=True)
    assert [(c.num_ranks, c.spec.pp_size, c.spec.micro_batches) for c in paired.cells] == [(2, 2, 1), (4, 4, 2)]
    assert paired.kind == "paired_sweep"


def test_sweep_errors_name_the_axis_or_cell():
    base = RunSpec(model=ModelSource(config="tiny"))
    with pytest.raises(ex.ExperimentError, match="same number of values"):
        ex.plan_sweep("sw", base, Resources(), {"max_new_tokens": [1, 2], "warmup": [0]}, paired=True)
    with pytest.raises(ex.ExperimentError, match="RunSpec has no field 'nope'"):
        ex.plan_sweep("sw", base, Resources(), {"nope": [1]})
    with pytest.raises(ex.ExperimentError, match="Resources has no field 'gpu'"):
        ex.plan_sweep("sw", base, Resources(), {"resources.gpu": [1]})
    with pytest.raises(ex.ExperimentError, match=r"cell repeats=0: .*repeats: must be >= 1"):
        ex.plan_sweep("sw", base, Resources(), {"repeats": [1, 0]})


def test_parse_axis():
    assert ex.parse_axis("max_new_tokens=8,16") == ("max_new_tokens", [8, 16])
    assert ex.parse_axis("batch_sizes=[1,8];[2]") == ("batch_sizes", [[1, 8], [2]])
    assert ex.parse_axis("mode=pp,dp") == ("mode", ["pp", "dp"])
    with pytest.raises(ex.ExperimentError, match="FIELD=V1,V2"):
        ex.parse_axis("mode")


def test_plan_round_trips_through_stored_parameters():
    plan = catalog.plan("correctness", config())
    stored = json.loads(json.dumps(plan.parameters()))
    again = ex.plan_from_parameters(plan.kind, plan.name, stored)
    assert again.cells == plan.cells
    assert ex.StudyConfig.from_dict(stored["config"]) == config()


def test_study_config_rejects_unknown_settings():
    with pytest.raises(ex.ExperimentError, match="unknown study setting"):
        ex.StudyConfig.from_dict({"nmae": "x"})


def test_every_preset_is_complete_in_the_catalog():
    """A preset is one catalog entry: it plans, is described, and the report has its section."""
    from tui.studies import report

    for name, preset in catalog.PRESETS.items():
        assert preset.name == name and preset.description
        assert callable(getattr(report, preset.report_section, None)), f"{name}: report has no {preset.report_section}"
        assert preset.plan(config()).kind == name
    assert callable(getattr(report, catalog.report_section_of("paired_sweep")))
    with pytest.raises(ex.ExperimentError, match="unknown preset 'nope'; presets: correctness"):
        catalog.plan("nope", config())
