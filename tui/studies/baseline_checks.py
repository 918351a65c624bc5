"""The correctness of an experiment's runs against its single-rank baseline: which baseline, which
noise floor, and which verdict.

The one place that pairs a run with its experiment's baseline. The report's correctness section
and a single run's results (the run screen, `dinf show`) both ask here, so they judge alike: greedy
ids compared by `analysis.compare_completions` (worker/correctness.py's rule), judged by
`analysis.correctness_verdict` against the run's noise floor where its experiment measured one
(the correctness study), and against identical ids where it did not.

A run is compared only with a baseline that ran the same model, dtype, weights and generation
length: ids of another model differ by design, not by a bug. Pure functions over the snapshots of
`tui.studies.results`; nothing here reads the database or formats more than a sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tui.studies import analysis
from tui.studies.analysis import Correctness, CorrectnessVerdict
from tui.studies.results import CellState, ExperimentResult, RunResult, cell_key_of

SAME_FOR_IDS = ("model", "dtype", "quant", "max_new_tokens", "ignore_eos", "prompts_file")
"""Spec fields a run must share with the baseline for their greedy ids to be comparable."""


@dataclass(frozen=True)
class BaselineCheck:
    """One run's greedy ids at one batch size against the baseline's."""

    batch_size: int
    baseline_batch: int
    """The baseline's batch size compared with (a noise floor splits the baseline's batch)."""
    result: Correctness
    floor_key: str | None = None
    floor: Correctness | None = None
    verdict: CorrectnessVerdict | None = None
    """None for a noise-floor run: it sets the bar the parallel runs are held to."""


@dataclass(frozen=True)
class RunCorrectness:
    """What a run's experiment says about its correctness: checks, or a note why there are none."""

    experiment: str
    baseline: RunResult | None
    checks: tuple[BaselineCheck, ...] = ()
    note: str = ""


def is_single_rank_baseline(state: CellState) -> bool:
    return state.cell.role == "baseline" and state.cell.num_ranks == 1


def baseline_batch(baseline: CellState) -> int:
    """The batch size the correctness study compares at (its baseline cell's)."""
    return int(baseline.cell.params.get("batch_size") or baseline.cell.spec.batch_sizes[0])


def noise_floors(exp: ExperimentResult, base_lines: Sequence[Mapping[str, Any]]) -> dict[str, Correctness]:
    """Each finished noise-floor run (the baseline re-run with a split batch) against the baseline."""
    floors: dict[str, Correctness] = {}
    for state in exp.cells:
        if state.cell.role == "noise_floor" and state.done and state.run is not None:
            floor_batch = state.cell.spec.batch_sizes[0]
            floors[state.cell.key] = analysis.compare_completions(base_lines, state.run.completions.get(floor_batch, ()))
    return floors


def judge(base_lines: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
          floor: Correctness | None) -> tuple[Correctness, CorrectnessVerdict]:
    """A run's completions against the baseline's, and the verdict with its noise floor (if any)."""
    result = analysis.compare_completions(base_lines, lines)
    return result, analysis.correctness_verdict(result, floor)


def _differences(run: RunResult, baseline: RunResult) -> list[str]:
    return [name for name in SAME_FOR_IDS if run.spec.get(name) != baseline.spec.get(name)]


def check_run(exp: ExperimentResult, run_id: int) -> RunCorrectness | None:
    """The run's correctness against its experiment's single-rank baseline; None when the experiment
    has no such baseline (or does not hold the run)."""
    run = next((r for r in exp.runs if r.id == run_id), None)
    baselines = [state for state in exp.cells if is_single_rank_baseline(state)]
    if run is None or not baselines:
        return None
    key = cell_key_of(run.name, exp.name)
    cell = exp.cell(key) if key is not None else None
    if cell is not None and is_single_rank_baseline(cell):
        return RunCorrectness(exp.name, run, note="this run is its experiment's single-rank baseline: "
                                                  "the other runs are compared with it")
    done = [s for s in baselines if s.done and s.run is not None]
    finished = [s for s in done if s.run.completions]
    if not done:
        states = ", ".join(sorted({s.state for s in baselines}))
        return RunCorrectness(exp.name, None, note=f"its experiment's single-rank baseline has not finished "
                                                   f"({states})")
    if not finished:
        return RunCorrectness(exp.name, done[0].run, note="its experiment's single-rank baseline recorded no "
                                                          "completions to compare with")
    comparable = [s for s in finished if not _differences(run, s.run)]
    if not comparable:
        differ = ", ".join(_differences(run, finished[0].run))
        return RunCorrectness(exp.name, finished[0].run, note=f"the single-rank baseline ran another {differ}: "
                                                              "greedy ids are not comparable")
    if not run.completions:
        return RunCorrectness(exp.name, comparable[0].run, note="this run has no completions to compare")
    if cell is not None and cell.cell.role == "noise_floor":
        return _floor_check(exp, run, cell, comparable)
    checks, baseline = [], None
    for batch, lines in run.completions.items():
        state = next((s for s in comparable if batch in s.run.completions), None)
        if state is None:
            continue
        baseline = baseline or state.run
        base_lines = state.run.completions[batch]
        floor_key = cell.cell.params.get("noise_floor") if cell is not None else None
        floor = noise_floors(exp, base_lines).get(floor_key) if floor_key else None
        result, verdict = judge(base_lines, lines, floor)
        checks.append(BaselineCheck(batch, batch, result, floor_key if floor else None, floor, verdict))
    if not checks:
        sizes = ", ".join(str(b) for b in run.completions)
        return RunCorrectness(exp.name, comparable[0].run,
                              note=f"the single-rank baseline has no completions at batch size {sizes}")
    return RunCorrectness(exp.name, baseline, tuple(checks))


def _floor_check(exp: ExperimentResult, run: RunResult, cell: CellState,
                 baselines: Sequence[CellState]) -> RunCorrectness:
    """A noise floor: its split batch against the baseline's whole one (no verdict: it is the bar)."""
    split_of = cell.cell.params.get("split_of")
    state = next((s for s in baselines if split_of in s.run.completions), None)
    if state is None:
        return RunCorrectness(exp.name, baselines[0].run,
                              note=f"the single-rank baseline has no completions at batch size {split_of}")
    batch = cell.cell.spec.batch_sizes[0]
    result = analysis.compare_completions(state.run.completions[split_of], run.completions.get(batch, ()))
    return RunCorrectness(exp.name, state.run, (BaselineCheck(batch, split_of, result),))
