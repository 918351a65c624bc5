"""Every preset in one place: its name, what it measures, how it plans its cells, and which report
section reads its results. A new preset is one `Preset` here (its planner beside the others in
`tui.studies.presets`, its section beside the others in `tui.studies.report`); the CLI's choices,
`dinf experiment presets` and the report all read this table.

The report section is named, not imported: the report loads plotext and the analysis, which the
CLI's start-up and the planners never need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tui.studies import presets
from tui.studies.presets import ExperimentError, ExperimentPlan, StudyConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    plan: Callable[[StudyConfig], ExperimentPlan]
    report_section: str
    """The function of `tui.studies.report` that writes this kind's section, called (experiment, profiles)."""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("correctness",
           "1-GPU baseline, each parallel mode, and the batch-split noise floor on the 20 prompts",
           presets.plan_correctness, "correctness_section"),
    Preset("strong_scaling", "fixed workload on 1, 2, 4, ... GPUs per mode",
           presets.plan_strong_scaling, "scaling_section"),
    Preset("weak_scaling", "num_requests proportional to the GPU count",
           presets.plan_weak_scaling, "scaling_section"),
    Preset("batch_sweep", "every batch size in one job per configuration",
           presets.plan_batch_sweep, "batch_sweep_section"),
    Preset("profile", "compute / communication / idle per rank (profile=True)",
           presets.plan_profile, "profile_section"),
    Preset("quantization",
           "fp16 against int8 and int4 weight-only: speed, weight memory and accuracy (KL, top-1, exact ids) "
           "judged against fp16 in the same job",
           presets.plan_quantization, "quantization_section"),
)}

SWEEP_SECTION = "sweep_section"
"""The section of an experiment made by `dinf experiment sweep` (no preset)."""


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ExperimentError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def plan(name: str, cfg: StudyConfig) -> ExperimentPlan:
    """Expand preset `name` for `cfg`."""
    return preset(name).plan(cfg)


def report_section_of(kind: str) -> str:
    found = PRESETS.get(kind)
    return found.report_section if found is not None else SWEEP_SECTION
