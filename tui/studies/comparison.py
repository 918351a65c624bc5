"""Compare runs: the fields that differ, metrics derived against a chosen baseline, and the charts.

`compare_runs` takes `RunResult`s (from `tui.studies.results`) and returns a `Comparison` that both
`dinf compare` and the compare screen show: a diff-only field table, one derived row per run and
batch size (tok/s, S = X/X_baseline, E = S/N, memory ratio, TTFT, TPOT), and the charts that
apply to the runs given (batch curves, scaling with its ideal line, time split, correctness).
`format_comparison` renders it as plain text for the terminal. Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tui.display.tables import text_table
from tui.studies import analysis, charts, validity
from tui.studies.analysis import Correctness, Point
from tui.studies.charts import Chart
from tui.studies.results import RunResult


@dataclass(frozen=True)
class DerivedRow:
    run: RunResult
    point: Point
    speedup: float | None
    """X / X_baseline at the same batch size (equal to T_baseline / T for the same workload)."""
    efficiency: float | None
    memory_ratio: float | None


@dataclass(frozen=True)
class Comparison:
    runs: tuple[RunResult, ...]
    baseline: RunResult
    diff: tuple[tuple[str, tuple[object, ...]], ...]
    derived: tuple[DerivedRow, ...]
    correctness: tuple[tuple[RunResult, int, Correctness], ...]
    charts: tuple[Chart, ...]
    warnings: tuple[str, ...] = ()
    """In words: every efficiency above 1, every pair of runs that overlapped on shared hosts, every
    timed part under `validity.MIN_TIMED_S` (tui/studies/validity.py)."""


def run_label(run: RunResult) -> str:
    return f"#{run.id} {run.mode} x{run.devices}"


def _shared_batch(runs: Sequence[RunResult], wanted: int | None) -> int | None:
    sizes = [set(p.batch_size for p in r.points) for r in runs if r.points]
    if not sizes:
        return None
    common = set.intersection(*sizes)
    if wanted is not None:
        return wanted if wanted in common else None
    return max(common) if common else None


def compare_runs(runs: Sequence[RunResult], *, baseline: RunResult | None = None,
                 batch_size: int | None = None) -> Comparison:
    """Everything the compare views show. The baseline defaults to the first single-rank run given
    (the 1-GPU reference that speed-up and efficiency are defined against), else the first run."""
    if not runs:
        raise ValueError("runs: pick at least one run to compare")
    runs = tuple(runs)
    base = baseline or next((r for r in runs if r.num_ranks == 1), runs[0])
    if base.id not in {r.id for r in runs}:
        runs = (base, *runs)
    diff = tuple((name, tuple(values)) for name, values in analysis.diff_fields([r.comparable_fields() for r in runs]))

    derived = []
    for run in runs:
        for point in run.points:
            if batch_size is not None and point.batch_size != batch_size:
                continue
            ref = base.point(point.batch_size)
            s = None if ref is None else analysis.ratio(point.output_tok_s, ref.output_tok_s)
            n = point.num_gpus / ref.num_gpus if ref is not None and ref.num_gpus else 1
            derived.append(DerivedRow(run, point, s, analysis.efficiency(s, n),
                                      None if ref is None else analysis.memory_ratio(ref, point)))

    correctness = []
    for run in runs:
        if run.id == base.id:
            continue
        shared = sorted(set(run.completions) & set(base.completions))
        if batch_size is not None:
            shared = [b for b in shared if b == batch_size]
        if shared:
            b = shared[-1]
            correctness.append((run, b, analysis.compare_completions(base.completions[b], run.completions[b])))

    flags = [f for d in derived if d.run.id != base.id
             for f in [validity.efficiency_flag(f"{run_label(d.run)} at batch {d.point.batch_size} vs "
                                                f"#{base.id}", d.efficiency)] if f is not None]
    flags += validity.overlap_flags([r for r in runs if r.points])
    flags += validity.short_flags(runs)
    return Comparison(runs, base, diff, tuple(derived), tuple(correctness),
                      tuple(_charts(runs, base, batch_size, correctness)), tuple(f.text for f in flags))


QUANT_LABELS = {"none": "unquantized", "int8": "int8", "int4": "int4 (g128)"}


def quant_label(run: RunResult) -> str:
    """'int8', 'int4 (g128)', or the unquantized run's dtype ('fp16', 'fp32', 'bf16')."""
    if run.quant_scheme != "none":
        return QUANT_LABELS.get(run.quant_scheme, run.quant_scheme)
    dtype = str(run.spec.get("dtype") or "")
    return {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}.get(dtype, QUANT_LABELS["none"])


def speed_accuracy_points(runs: Sequence[RunResult]) -> dict[str, list[tuple[float, float]]]:
    """Per scheme, (top-1 agreement %, output tok/s) of every scored run at each of its batch sizes."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        top1 = (run.accuracy or {}).get("top1_agreement")
        if top1 is None:
            continue
        for p in run.points:
            if p.output_tok_s is not None:
                out.setdefault(quant_label(run), []).append((top1 * 100, p.output_tok_s))
    return out


def _charts(runs: Sequence[RunResult], base: RunResult, batch_size: int | None,
            correctness: Sequence[tuple[RunResult, int, Correctness]]) -> list[Chart]:
    out: list[Chart] = []
    by_label = {run_label(r): list(r.points) for r in runs if r.points}
    if any(len(points) > 1 for points in by_label.values()):
        out += [charts.throughput_vs_batch(by_label), charts.memory_vs_batch(by_label),
                charts.ttft_vs_batch(by_label), charts.tpot_vs_batch(by_label)]
    shared = _shared_batch(runs, batch_size)
    if shared is not None and len({r.devices for r in runs if r.points}) > 1:
        ref = base.point(shared)
        if ref is not None:
            series: dict[str, list[Point]] = {}
            for run in runs:
                point = run.point(shared)
                if point is not None and run.id != base.id:
                    series.setdefault(run.mode, []).append(point)
            scaling = {mode: analysis.strong_scaling(ref, points) for mode, points in sorted(series.items())}
            unit = "GPUs" if any(r.environment.get("gpu_model") for r in runs) else "ranks"
            out += [charts.throughput_vs_gpus(scaling, title=f"Output tokens/s vs {unit} at batch {shared}",
                                              unit=unit),
                    charts.efficiency_vs_gpus(scaling, title=f"Efficiency vs {unit} at batch {shared} "
                                                             f"(baseline #{base.id})", unit=unit)]
    for run in runs:
        for point in run.points:
            if (batch_size is None or point.batch_size == batch_size) and analysis.time_split(point):
                out.append(charts.time_split_chart(
                    point, title=f"Time split per rank: {run_label(run)}, batch {point.batch_size}"))
                break
    scored = speed_accuracy_points(runs)
    if scored:
        out.append(charts.speed_vs_accuracy(scored))
    for run, b, result in correctness:
        max_new = int(run.spec.get("max_new_tokens") or max((len(c.get("output_ids", [])) for c in
                                                            run.completions.get(b, ())), default=1))
        out.append(charts.correctness_chart(
            result, max_new_tokens=max_new,
            title=f"Matching tokens per prompt: {run_label(run)} vs #{base.id}, batch {b}"))
    return out


# --- text ------------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def diff_rows(comparison: Comparison) -> list[list[str]]:
    return [[name, *(_text(v) for v in values)] for name, values in comparison.diff]


def derived_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [run_label(d.run), str(d.point.batch_size), _f(d.point.output_tok_s, 1), _f(d.speedup), _f(d.efficiency),
         _f(d.memory_ratio), _f(None if d.point.ttft_s is None else d.point.ttft_s * 1e3),
         _f(None if d.point.tpot_s is None else d.point.tpot_s * 1e3), _f(d.point.wall_s, 3)]
        for d in comparison.derived
    ]


DERIVED_HEADERS = ("run", "batch", "tok/s", "S", "E", "mem ratio", "TTFT ms", "TPOT ms", "T s")
DERIVED_LEGEND = ("S = X/X_baseline, the speed-up at the same batch size · E = S/N, the efficiency over N GPUs · "
                  "mem ratio = peak memory / the baseline's · T s = median wall time of the whole workload, in seconds")
"""What the derived columns mean; shown under the table (text and screen alike)."""


def format_comparison(comparison: Comparison, *, with_charts: bool = True, width: int = charts.DEFAULT_WIDTH,
                      color: bool = False) -> str:
    parts = [f"baseline: {run_label(comparison.baseline)} ({comparison.baseline.name})", ""]
    if comparison.diff:
        headers = ["field", *(run_label(r) for r in comparison.runs)]
        parts += ["fields that differ:", text_table(headers, diff_rows(comparison)), ""]
    else:
        parts += ["no field differs between these runs", ""]
    if comparison.derived:
        parts += ["derived against the baseline:", text_table(DERIVED_HEADERS, derived_rows(comparison)),
                  DERIVED_LEGEND, ""]
    else:
        parts += ["no measurements to derive from (runs without results)", ""]
    if comparison.warnings:
        parts += ["warnings:", *(f"  ! {w}" for w in comparison.warnings), ""]
    for run, b, result in comparison.correctness:
        verdict = analysis.correctness_verdict(result, None)
        parts.append(f"correctness of {run_label(run)} vs {run_label(comparison.baseline)} at batch {b}: "
                     f"{verdict.reason}")
        for c in result.divergences:
            parts.append(f"  prompt {c.index}: first divergence at token {c.first_divergence}: "
                         f"baseline {c.baseline_token} vs {c.candidate_token} "
                         f"({'within' if c.topk_agree else 'outside'} top-k)")
            parts.append(f"    ids from there: baseline {' '.join(map(str, c.baseline_tail))} | "
                         f"{run_label(run)} {' '.join(map(str, c.candidate_tail))}")
    if with_charts:
        for chart in comparison.charts:
            parts += ["", charts.render(chart, width=width, color=color)]
    return "\n".join(parts).rstrip() + "\n"
