"""What a comparison reads: the runs and experiments to pick from, and the runs compared.

Blocking, one read session per call (call from a thread in the app). The compare screen and
`dinf compare` both come here, so they pick the same runs and the same baseline: named runs, the
done cells of named experiments, and as baseline the one named, else the first experiment's
baseline cell, else (`compare_runs`) the first single-rank run, else the first run. Computing the comparison is `tui.studies.comparison`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage import repo
from storage.db import read_session
from tui.core.records import RunRecord
from tui.core.service import Dinf
from tui.studies.comparison import Comparison, compare_runs
from tui.studies.presets import ExperimentError
from tui.studies.results import RunResult, load_experiment, load_runs


@dataclass(frozen=True)
class ExperimentRow:
    id: int
    name: str
    kind: str
    runs: int


def choices(dinf: Dinf) -> tuple[list[RunRecord], list[ExperimentRow]]:
    """The runs with results, and every experiment with its number of runs."""
    runs = [record for record in dinf.runs() if record.done]
    with read_session(dinf.engine) as session:
        experiments = [
            ExperimentRow(e.id, e.name, e.kind, len(repo.list_runs(session=session, experiment_id=e.id)))
            for e in repo.list_experiments(session=session)
        ]
    return runs, experiments


def compare(
    dinf: Dinf,
    runs: Sequence[str | int] = (),
    *,
    experiments: Sequence[str | int] = (),
    baseline: str | int | None = None,
    batch_size: int | None = None,
) -> Comparison:
    """Compare `runs` and the done cells of `experiments` against the baseline rule above."""
    with read_session(dinf.engine) as session:
        picked: list[RunResult] = load_runs(session, list(runs))
        baseline_run = load_runs(session, [baseline])[0] if baseline is not None else None
        for ref in experiments:
            exp = load_experiment(session, ref)
            picked += [c.run for c in exp.cells if c.done and c.run is not None] or [r for r in exp.runs if r.points]
            if baseline_run is None:
                cells = exp.completed("baseline")
                baseline_run = cells[0].run if cells else None
    if not picked:
        raise ExperimentError("compare: name runs (RUN...) or experiments (--experiment EXP) to compare")
    unique = list({r.id: r for r in picked}.values())
    return compare_runs(unique, baseline=baseline_run, batch_size=batch_size)
