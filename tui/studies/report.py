"""`dinf report`: the short paper of one or more experiments, written from the database alone.

Sections: findings (the verdict of each study, with its numbers), setup (hardware, software,
model, workload, cluster), method, metric definitions, one section per study (tables, text
charts inline, the verdict and why), and limitations found in the data itself (cells without
results, combinations not run, repeat spread, CPU runs, unavailable studies).

Deterministic: everything is ordered by id or key and numbers are formatted at fixed precision;
no clock is read, so re-running on the same database writes the same bytes. With `png_dir`,
each chart is also saved as a PNG there and linked from the text.

It reads through `tui.studies.results` and derives through `tui.studies.analysis`; it submits nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tui.studies import analysis, charts, timeline, validity
from tui.studies.analysis import Correctness, Point
from tui.studies.catalog import report_section_of
from tui.studies.charts import Chart
from tui.studies.comparison import quant_label, speed_accuracy_points
from tui.studies.results import CellState, ExperimentResult, RunResult, describe_engine
from worker.contract import MODEL_CONFIGS

Profiles = dict[tuple[str, int], Point]
"""The profile studies' points by (mode, batch size): a section may cite them (the batch sweep does)."""

SCALES_WELL = 0.8
"""Efficiency from which a mode is said to scale (80% of linear)."""
PAYS_FOR_ITS_GPUS = 0.9
"""Batch sweep: a mode pays for its N GPUs when it delivers at least 90% of N times the 1-GPU rate."""


# --- formatting ------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.2f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.1f}%"


def _cell_text(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[_cell_text(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "chart"


def _range(values: Sequence[int]) -> str:
    """1, 2, 4, 8 -> '1–8' when contiguous in the sweep's order; else the list."""
    values = sorted(values)
    return ", ".join(str(v) for v in values)


# --- study sections -------------------------------------------------------------------------------


@dataclass
class Section:
    title: str
    blocks: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    flags: list[validity.Flag] = field(default_factory=list)
    """Efficiencies above 1 found in this section's tables (overlaps and short timings are whole-report)."""

    def chart(self, chart: Chart) -> None:
        """Append a chart at this point of the text (rendered later, so PNG links can go beside)."""
        self.charts.append(chart)
        self.blocks.append(_ChartRef(len(self.charts) - 1))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _ChartRef:
    index: int


def _series_label(run: RunResult) -> str:
    return f"{run.mode} x{run.devices}"


def _done(cells: Iterable[CellState], role: str | None = None) -> list[CellState]:
    return [c for c in cells if c.done and c.run is not None and (role is None or c.cell.role == role)]


def _missing_cells_note(exp: ExperimentResult) -> str | None:
    missing = [c for c in exp.cells if not c.done]
    if not missing:
        return None
    detail = ", ".join(f"{c.cell.key} {c.state}" for c in missing)
    return f"{exp.name}: {len(missing)} of {len(exp.cells)} cells have no results ({detail}); they are absent from its tables."


def _failure_notes(exp: ExperimentResult) -> list[str]:
    """Why each failed cell failed: the first line of its run's error, which begins with the failure
    summary (the first rank to die, its node, its signal or exit code) when the cluster gave one."""
    notes = []
    for cell in exp.cells:
        if cell.failed and cell.run is not None and cell.run.error:
            first = cell.run.error.strip().splitlines()[0] if cell.run.error.strip() else ""
            if first:
                notes.append(f"{exp.name}: {cell.cell.key} {cell.state}: {_cell_text(first)}")
    return notes


def _single_point(cell: CellState | None) -> Point | None:
    if cell is None or not cell.done or cell.run is None or not cell.run.points:
        return None
    return cell.run.points[0]


def correctness_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    section = Section(f"Correctness: {exp.name}")
    baseline = exp.cell("baseline")
    if baseline is None or not baseline.done or baseline.run is None:
        state = baseline.state if baseline else "absent"
        section.verdicts.append(f"{exp.name}: no verdict; the 1-GPU baseline has no results ({state}).")
        section.blocks.append("The 1-GPU baseline has no results, so nothing can be compared.")
        return section
    batch = int(baseline.cell.params.get("batch_size") or baseline.cell.spec.batch_sizes[0])
    base_lines = baseline.run.completions.get(batch, ())
    max_new = baseline.cell.spec.max_new_tokens
    top_k = baseline.cell.spec.top_k
    section.blocks.append(
        f"Greedy ids of each parallel mode against the 1-GPU baseline on the same {len(base_lines)} prompts "
        f"(batch {batch}, {max_new} new tokens, top-k with k = {top_k}). Each mode's noise floor is the "
        "baseline re-run with the batch split the way that mode splits it, compared with the baseline."
    )
    floors: dict[str, Correctness] = {}
    for cell in exp.cells:
        if cell.cell.role != "noise_floor":
            continue
        if cell.done and cell.run is not None:
            floor_batch = cell.cell.spec.batch_sizes[0]
            floors[cell.cell.key] = analysis.compare_completions(base_lines, cell.run.completions.get(floor_batch, ()))
    rows, detail_blocks = [], []
    floor_rows = [
        (key, f"{exp.cell(key).cell.spec.batch_sizes[0]} of {batch}", f"{c.exact_matches}/{c.n}", _pct(c.exact_match_rate),
         "yes" if c.all_divergences_topk else "no")
        for key, c in sorted(floors.items())
    ]
    for cell in exp.cells:
        if cell.cell.role != "parallel":
            continue
        mode = cell.cell.params.get("mode", cell.cell.spec.mode)
        ranks = cell.cell.num_ranks
        if not cell.done or cell.run is None:
            rows.append((mode, ranks, "–", "–", "–", "–", f"no result ({cell.state})"))
            section.verdicts.append(f"{mode} on {ranks} ranks: no verdict; the run ended {cell.state}.")
            continue
        result = analysis.compare_completions(base_lines, cell.run.completions.get(batch, ()))
        floor_key = cell.cell.params.get("noise_floor")
        floor = floors.get(floor_key) if floor_key else None
        verdict = analysis.correctness_verdict(result, floor)
        divergences = result.divergences
        agree = sum(1 for c in divergences if c.topk_agree)
        rows.append((
            mode, ranks, f"{result.exact_matches}/{result.n}", _pct(result.exact_match_rate),
            f"{agree}/{len(divergences)}" if divergences else "–",
            f"{floor.exact_matches}/{floor.n} ({floor_key})" if floor else "not measured",
            "PASS" if verdict.passed else "FAIL",
        ))
        section.verdicts.append(f"{mode} on {ranks} ranks: {'passes' if verdict.passed else 'fails'}: {verdict.reason}.")
        detail_blocks.append((mode, ranks, result))
    section.blocks.append(md_table(
        ("mode", "ranks", "exact", "exact rate", "top-k kept at divergence", "noise floor", "verdict"), rows))
    if floor_rows:
        section.blocks.append("Noise floors (1-GPU baseline re-run with a split batch, against the baseline):")
        section.blocks.append(md_table(("floor", "batch", "exact", "exact rate", "all divergences within top-k"),
                                       floor_rows))
    for mode, ranks, result in detail_blocks:
        section.chart(charts.correctness_chart(result, max_new_tokens=max_new,
                                               title=f"Matching tokens per prompt: {mode} x{ranks} vs 1 GPU"))
        if result.divergences:
            section.blocks.append(f"Divergent tokens, {mode} x{ranks} beside the baseline (ids from the first divergence):")
            section.blocks.append(md_table(
                ("prompt", "first divergence", "baseline id", f"{mode} id", "within top-k",
                 "baseline ids from there", f"{mode} ids from there"),
                [(c.index, c.first_divergence, c.baseline_token, c.candidate_token,
                  {True: "yes", False: "no", None: "–"}[c.topk_agree],
                  " ".join(map(str, c.baseline_tail)), " ".join(map(str, c.candidate_tail)))
                 for c in result.divergences],
            ))
    if any(c.cell.params.get("mode") == "tp" for c in exp.cells):
        section.limitations.append(
            f"{exp.name}: tensor parallelism splits no batch; its noise floor is the two-way batch split, "
            "the nearest 1-GPU perturbation of the same kind (reduction order), not an exact match of it."
        )
    return section


def _scaling_series(exp: ExperimentResult, baseline: Point) -> dict[str, list[Point]]:
    series: dict[str, list[Point]] = {}
    for cell in _done(exp.cells):
        if cell.cell.role not in ("scaling",) or not cell.run.points:
            continue
        series.setdefault(cell.run.mode, []).append(cell.run.points[0])
    return {mode: sorted(points, key=lambda p: p.num_gpus) for mode, points in sorted(series.items())}


def scaling_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    weak = exp.kind == "weak_scaling"
    study = "Weak scaling" if weak else "Strong scaling"
    section = Section(f"{study}: {exp.name}")
    base_cell = exp.cell("single/r1")
    baseline = _single_point(base_cell)
    if baseline is None:
        state = base_cell.state if base_cell else "absent"
        section.verdicts.append(f"{exp.name}: no verdict; the 1-GPU baseline has no results ({state}).")
        section.blocks.append("The 1-GPU baseline has no results; speedups cannot be computed.")
        return section
    if weak:
        section.blocks.append(
            f"Work grows with the GPU count: {baseline.num_requests} requests per GPU at batch {baseline.batch_size}, "
            f"{baseline.output_tokens // max(1, baseline.num_requests)} new tokens each. E_w(N) = T(1)/T(N); ideal 1."
        )
    else:
        section.blocks.append(
            f"Fixed workload: {baseline.num_requests} requests at batch {baseline.batch_size}, "
            f"{baseline.output_tokens // max(1, baseline.num_requests)} new tokens each, on 1 to N GPUs. "
            "S(N) = T(1)/T(N), E = S/N."
        )
    # CPU ranks are not GPUs: say "ranks" when no run of the experiment saw a GPU.
    unit = "GPUs" if any(r.environment.get("gpu_model") for r in exp.runs) else "ranks"
    derive = analysis.weak_scaling if weak else analysis.strong_scaling
    series = {mode: derive(baseline, points) for mode, points in _scaling_series(exp, baseline).items()}
    rows = []
    for mode, scaling_rows in series.items():
        for r in scaling_rows:
            p = r.point
            if rows and p is baseline:
                continue  # the 1-GPU row heads every series; print it once
            derived = (_f(r.efficiency),) if weak else (_f(r.speedup), _f(r.efficiency))
            rows.append((p.mode, p.num_gpus, p.num_nodes, p.num_requests, f"{_f(p.wall_s, 3)} (n={p.repeats})",
                         validity.spread_text(p.wall_samples), _f(p.output_tok_s, 1), *derived,
                         _f(r.throughput_scaling), _f(r.memory_ratio)))
            flag = validity.efficiency_flag(f"{exp.name}: {p.mode} on {p.num_gpus} {unit}", r.efficiency,
                                            name="E_w" if weak else "E")
            if flag is not None:
                section.flags.append(flag)
    headers = ("mode", unit, "nodes", "requests", "T median s", "T min–max s, ±95% (t)", "tok/s",
               *(("E_w",) if weak else ("S", "E")), "X(N)/(N·X(1))", "memory ratio")
    section.blocks.append(md_table(headers, rows))
    section.chart(charts.throughput_vs_gpus(series, title=f"{study}: output tokens/s vs {unit}", unit=unit))
    section.chart(charts.efficiency_vs_gpus(
        series, title=f"{study}: {'E_w' if weak else 'efficiency S/N'} vs {unit}", unit=unit))
    for mode, scaling_rows in series.items():
        last = scaling_rows[-1]
        if last.point.num_gpus == baseline.num_gpus:
            continue
        section.verdicts.append(_scaling_verdict(mode, last, baseline, weak=weak, unit=unit))
    for mode in exp.parameters.get("config", {}).get("modes", ()):
        if mode not in series:
            cells = [c for c in exp.cells if c.cell.params.get("mode") == mode]
            states = ", ".join(f"{c.cell.key} {c.state}" for c in cells) or "no cell could be planned"
            section.verdicts.append(f"{mode}: no verdict; none of its runs has results ({states}).")
    return section


def _scaling_verdict(mode: str, row: analysis.ScalingRow, baseline: Point, *, weak: bool, unit: str = "GPUs") -> str:
    p = row.point
    one = "1 GPU" if unit == "GPUs" else "1 rank"
    one_adj = one.replace(" ", "-")
    where = f"{mode} on {p.num_gpus} {unit}" + (f" ({p.num_nodes} nodes)" if p.num_nodes > 1 else "")
    times = f"T = {_f(p.wall_s, 3)} s vs {_f(baseline.wall_s, 3)} s on {one}"
    memory = f"; the largest rank needs {_f(row.memory_ratio)}x the {one_adj} peak memory" if row.memory_ratio else ""
    if weak:
        if row.efficiency is not None and row.efficiency >= SCALES_WELL:
            return f"{where}: weak scaling holds, E_w = {_f(row.efficiency)} ({times}){memory}."
        return f"{where}: weak scaling breaks down, E_w = {_f(row.efficiency)} ({times}){memory}."
    s, e = _f(row.speedup), _f(row.efficiency)
    if row.efficiency is not None and row.efficiency > validity.EFFICIENCY_LIMIT:
        return (f"{where}: no verdict; S = {s}, E = {e} ({times}){memory}. More GPUs alone cannot give E > 1, "
                "so this ratio is not a measurement of scaling (see the measurement warnings).")
    if row.efficiency is not None and row.efficiency >= SCALES_WELL:
        return f"{where}: scales, S = {s}, E = {e} ({times}){memory}."
    if row.speedup is not None and row.speedup > 1:
        return f"{where}: faster than {one} but far from linear, S = {s}, E = {e} ({times}){memory}."
    reason = ""
    if mode == "pp":
        reason = (" Every token still passes through all layers in sequence, so the stages add a hand-off per token"
                  " and can at best keep the 1-GPU rate for a model that fits one GPU.")
    return f"{where}: no faster than {one}, S = {s}, E = {e} ({times}){memory}.{reason}"


def _profile_index(experiments: Sequence[ExperimentResult]) -> dict[tuple[str, int], Point]:
    """(mode, batch size) -> a profiled point, for explaining batch-sweep results."""
    index: dict[tuple[str, int], Point] = {}
    for exp in experiments:
        for cell in _done(exp.cells):
            for p in cell.run.points:
                if analysis.time_split(p):
                    index.setdefault((p.mode, p.batch_size), p)
    return index


def _mean_split(point: Point) -> tuple[float, float, float] | None:
    splits = analysis.time_split(point)
    if not splits:
        return None
    n = len(splits)
    return (sum(s.compute for s in splits) / n, sum(s.comm for s in splits) / n, sum(s.idle for s in splits) / n)


def batch_sweep_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    profiles = profiles or {}
    section = Section(f"Batch sweep: {exp.name}")
    base_cell = exp.cell("single/r1")
    if base_cell is None or not base_cell.done or base_cell.run is None:
        state = base_cell.state if base_cell else "absent"
        section.verdicts.append(f"{exp.name}: no verdict; the 1-GPU baseline has no results ({state}).")
        return section
    baseline = list(base_cell.run.points)
    section.blocks.append(
        f"Each configuration measured every batch size ({_range([p.batch_size for p in baseline])}) in one job, "
        "without reloading the model. A mode is faster than 1 GPU at a batch size when S = X/X(1) > 1, and pays "
        f"for its N GPUs when E = S/N >= {PAYS_FOR_ITS_GPUS}. For dp the batch size is per replica."
    )
    by_label = {_series_label(base_cell.run): baseline}
    for cell in _done(exp.cells, "sweep"):
        rows = analysis.compare_by_batch(baseline, cell.run.points)
        by_label[_series_label(cell.run)] = list(cell.run.points)
        mode, gpus = cell.run.mode, cell.run.devices
        section.blocks.append(f"{mode} on {gpus} GPUs against 1 GPU:")
        section.blocks.append(md_table(
            ("batch", "1-GPU tok/s", f"{mode} tok/s", "S", "E", "TTFT ms 1-GPU / mode", "TPOT ms 1-GPU / mode",
             "peak 1-GPU / largest rank", "memory ratio"),
            [(r.batch_size, _f(r.baseline.output_tok_s, 1), _f(r.point.output_tok_s, 1), _f(r.speedup),
              _f(r.efficiency), f"{_ms(r.baseline.ttft_s)} / {_ms(r.point.ttft_s)}",
              f"{_ms(r.baseline.tpot_s)} / {_ms(r.point.tpot_s)}",
              f"{_bytes(r.baseline.peak_bytes)} / {_bytes(r.point.peak_bytes)}", _f(r.memory_ratio))
             for r in rows],
        ))
        section.verdicts.extend(_batch_verdicts(mode, gpus, rows, profiles))
        for r in rows:
            flag = validity.efficiency_flag(f"{exp.name}: {mode} on {gpus} GPUs at batch {r.batch_size}", r.efficiency)
            if flag is not None:
                section.flags.append(flag)
    section.chart(charts.throughput_vs_batch(by_label))
    section.chart(charts.memory_vs_batch(by_label))
    section.chart(charts.ttft_vs_batch(by_label))
    section.chart(charts.tpot_vs_batch(by_label))
    return section


def _batch_verdicts(mode: str, gpus: int, rows: Sequence[analysis.BatchComparison],
                    profiles: dict[tuple[str, int], Point]) -> list[str]:
    if not rows:
        return [f"{mode} on {gpus} GPUs: no batch size in common with the 1-GPU baseline; no verdict."]
    faster = [r.batch_size for r in rows if r.speedup is not None and r.speedup > 1]
    paying = [r.batch_size for r in rows if r.efficiency is not None and r.efficiency >= PAYS_FOR_ITS_GPUS]
    summary = (f"{mode} on {gpus} GPUs: faster than 1 GPU at "
               + (f"batch sizes {_range(faster)}" if faster else "no batch size")
               + f"; paid for its {gpus} GPUs (E >= {PAYS_FOR_ITS_GPUS}) at "
               + (f"batch sizes {_range(paying)}" if paying else "no batch size") + ".")
    lines = [summary]
    for r in rows:
        outcome = ("paid for itself" if r.batch_size in paying else
                   "faster but did not pay for its GPUs" if r.batch_size in faster else "did not pay for itself")
        why = []
        if r.point.tpot_s is not None and r.baseline.tpot_s is not None:
            why.append(f"TPOT {_ms(r.point.tpot_s)} ms vs {_ms(r.baseline.tpot_s)} ms on 1 GPU")
        split = _mean_split(profiles[(mode, r.batch_size)]) if (mode, r.batch_size) in profiles else None
        if split is not None:
            why.append(f"profiled ranks spend {_pct(split[0])} computing, {_pct(split[1])} communicating, "
                       f"{_pct(split[2])} idle")
        if r.memory_ratio is not None:
            why.append(f"largest rank at {_f(r.memory_ratio)}x the 1-GPU peak memory")
        lines.append(f"  - batch {r.batch_size}: {outcome}: S = {_f(r.speedup)}, E = {_f(r.efficiency)}"
                     + (f" ({'; '.join(why)})" if why else "") + ".")
    return ["\n".join(lines)]


def profile_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    section = Section(f"Profile: {exp.name}")
    section.blocks.append(
        "Per rank, the measured time split into stage compute, time waiting in send/recv or collectives "
        "(communication) and the rest (idle: the pipeline bubble for pp). Shares of each rank's total."
    )
    rows, any_profile = [], False
    for cell in _done(exp.cells):
        for p in cell.run.points:
            for s in analysis.time_split(p):
                any_profile = True
                rows.append((cell.run.mode, cell.run.devices, p.batch_size, s.rank, _pct(s.compute), _pct(s.comm),
                             _pct(s.idle), _f(s.bubble_pct, 1), _f(s.exposed_comm_pct, 1)))
    if not any_profile:
        section.blocks.append("No run of this experiment recorded a time split (profile=True).")
        section.verdicts.append(f"{exp.name}: no verdict; no profiled measurement.")
        return section
    if any(c.cell.spec.mode == "pp" and c.cell.spec.micro_batches == 1 for c in exp.cells):
        section.blocks.append(
            "With one micro-batch a pp stage waits in recv while the other stage computes; that wait counts "
            "as communication, so for pp the communication share includes the pipeline bubble."
        )
    section.blocks.append(md_table(("mode", "GPUs", "batch", "rank", "compute", "communication", "idle",
                                    "bubble %", "exposed comm %"), rows))
    for cell in _done(exp.cells):
        profiled = [p for p in cell.run.points if analysis.time_split(p)]
        if not profiled or cell.run.devices < 2:
            continue
        ends = [profiled[0]] if len(profiled) == 1 else [profiled[0], profiled[-1]]
        for p in ends:
            section.chart(charts.time_split_chart(
                p, title=f"Time split per rank: {cell.run.mode} x{cell.run.devices}, batch {p.batch_size}"))
        parts = []
        for p in ends:
            compute, comm, idle = _mean_split(p)
            parts.append(f"at batch {p.batch_size} ranks compute {_pct(compute)}, communicate {_pct(comm)} "
                         f"and sit idle {_pct(idle)} of the time (mean over ranks)")
        section.verdicts.append(f"{cell.run.mode} on {cell.run.devices} GPUs: " + "; ".join(parts) + ".")
    timelines = [(cell, p) for cell in _done(exp.cells) for p in cell.run.points if p.timeline is not None]
    if timelines:
        section.blocks.append(
            "Timelines: the first few decode steps of each profiled measurement's first timed batch, every rank "
            "cut at the same instants (one character is a slice of time, drawn as what filled most of it). A "
            "rank's bubble is the share of those steps' wall time it spent not computing: waiting in a receive "
            "or a send, or idle between calls.")
    for cell, p in timelines:
        title = f"{cell.run.mode} x{cell.run.devices}, batch {p.batch_size}"
        section.blocks.append("```text\n" + timeline.render(p.timeline, 80, title=title) + "\n```")
        bubbles = ", ".join(f"rank {r.rank} {timeline.bubble_fraction(r, p.timeline.window_s) * 100:.0f}%"
                            for r in sorted(p.timeline.ranks, key=lambda r: r.rank))
        section.verdicts.append(f"{title}: bubble over {p.timeline.steps} decode steps: {bubbles}.")
    return section


def sweep_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    section = Section(f"Sweep: {exp.name}")
    axes = exp.parameters.get("config", {}).get("axes", {})
    section.blocks.append(
        f"{'Paired' if exp.kind == 'paired_sweep' else 'Cartesian'} sweep over "
        + (", ".join(f"{k} = {v}" for k, v in axes.items()) or "its cells") + "."
    )
    rows, best = [], {}
    for cell in exp.cells:
        if not cell.done or cell.run is None:
            rows.append((cell.cell.key, cell.state, "–", "–", "–", "–", "–"))
            continue
        for p in cell.run.points:
            rows.append((cell.cell.key, cell.state, p.batch_size, _f(p.output_tok_s, 1), _ms(p.ttft_s), _ms(p.tpot_s),
                         _bytes(p.peak_bytes)))
            if p.output_tok_s is not None and (p.batch_size not in best or p.output_tok_s > best[p.batch_size][1]):
                best[p.batch_size] = (cell.cell.key, p.output_tok_s)
    section.blocks.append(md_table(("cell", "state", "batch", "tok/s", "TTFT ms", "TPOT ms", "peak memory"), rows))
    for batch, (key, value) in sorted(best.items()):
        section.verdicts.append(f"{exp.name}, batch {batch}: highest output rate {_f(value, 1)} tok/s with {key}.")
    return section


def quantization_section(exp: ExperimentResult, profiles: Profiles | None = None) -> Section:
    section = Section(f"Quantization: {exp.name}")
    section.blocks.append(
        "Weight-only quantization of every matmul weight (embeddings stay in the run's dtype), one job per scheme "
        "and batch size. Accuracy is judged in each job against the unquantized model loaded beside it: greedy ids "
        "of both on the prompts (exact matches), and teacher-forced on the unquantized model's greedy "
        "continuations: mean KL(p_ref || p_quant) per token, how often both models rank the same token first "
        "(top-1), and the ratio of their NLLs of the reference's tokens. The noise floor is the unquantized model "
        "against itself at another batch split: a change smaller than it is batching noise, not quantization."
    )
    done = _done(exp.cells)
    if not done:
        section.verdicts.append(f"{exp.name}: no verdict; no cell has completed.")
        return section
    base = {p.batch_size: p for c in done if c.run.quant_scheme == "none" for p in c.run.points}
    rows = []
    for cell in sorted(done, key=lambda c: (c.run.quant_scheme != "none", c.run.quant_scheme, c.cell.key)):
        run, acc = cell.run, cell.run.accuracy or {}
        floor = acc.get("noise_floor") or {}
        for p in run.points:
            ref = base.get(p.batch_size)
            speed = analysis.ratio(p.output_tok_s, ref.output_tok_s) if ref else None
            rows.append((
                quant_label(run), p.batch_size, _f(p.output_tok_s, 1), _ms(p.tpot_s),
                "–" if speed is None else f"{speed:.2f}x", _bytes(run.weight_bytes),
                "–" if not acc else f"{acc['exact_match']}/{acc['prompts']}",
                _sci(acc.get("kl_mean")), _pct(acc.get("top1_agreement")), _f(acc.get("nll_ratio"), 4),
                "–" if not floor else f"{floor['exact_match']}/{floor['prompts']}",
                _sci(floor.get("kl_mean")), _pct(floor.get("top1_agreement")),
            ))
    section.blocks.append(md_table(
        ("scheme", "batch", "tok/s", "TPOT ms", "x unquantized", "weights per rank", "exact ids", "KL mean", "top-1",
         "NLL ratio", "floor: exact", "floor: KL", "floor: top-1"), rows))
    section.chart(charts.speed_vs_accuracy(speed_accuracy_points([c.run for c in done])))
    for cell in done:
        run, acc = cell.run, cell.run.accuracy
        if run.quant_scheme == "none":
            continue
        for p in run.points:
            ref = base.get(p.batch_size)
            speed = analysis.ratio(p.output_tok_s, ref.output_tok_s) if ref else None
            parts = [f"{quant_label(run)} at batch {p.batch_size}:"]
            parts.append("no unquantized run at this batch size to compare speed with" if speed is None else
                         f"{speed:.2f}x the unquantized model's output rate" + (" (slower)" if speed < 1 else ""))
            if acc:
                floor = acc.get("noise_floor") or {}
                above = (acc.get("kl_mean") or 0) > (floor.get("kl_mean") or 0)
                parts.append(f"top-1 agreement {_pct(acc.get('top1_agreement'))} and KL {_sci(acc.get('kl_mean'))} "
                             f"against a noise floor of {_pct(floor.get('top1_agreement'))} and "
                             f"{_sci(floor.get('kl_mean'))}: quantization moves the outputs "
                             + ("more than batching does" if above else "no more than batching does"))
            section.verdicts.append(f"{exp.name}, " + " ".join(parts[:1]) + " " + "; ".join(parts[1:]) + ".")
    if any(c.run.spec.get("model", {}).get("source") == "synthetic" for c in done):
        section.limitations.append(
            f"{exp.name}: the model's weights are random (synthetic). Random weights have no outlier channels, so "
            "per-channel and per-group scales fit them well, while a random model's next-token distribution is "
            "nearly flat, so small changes flip its top-1 often. A real checkpoint has outlier channels that "
            "cost int8/int4 more accuracy per channel, and peaked distributions that flip less; run the study on "
            "a local checkpoint (--checkpoint DIR) before drawing accuracy conclusions."
        )
    return section


def _sci(value: float | None) -> str:
    return "–" if value is None else f"{value:.2e}"


# --- setup, method, definitions ------------------------------------------------------------------


def _all_runs(experiments: Sequence[ExperimentResult]) -> list[RunResult]:
    seen, runs = set(), []
    for exp in experiments:
        for cell in exp.cells:
            if cell.run is not None and cell.run.id not in seen:
                seen.add(cell.run.id)
                runs.append(cell.run)
        for run in exp.runs:
            if run.id not in seen and not exp.cells:
                seen.add(run.id)
                runs.append(run)
    return sorted(runs, key=lambda r: r.id)


def setup_blocks(experiments: Sequence[ExperimentResult]) -> list[str]:
    runs = [r for r in _all_runs(experiments) if r.points]
    blocks = []
    env_rows: dict[tuple, list] = {}
    for run in runs:
        e = run.environment
        key = (e.get("gpu_model") or "CPU (no GPU)", e.get("backend") or "–", e.get("torch") or "–",
               e.get("transformers") or "–", e.get("deepspeed") or "–", e.get("nccl") or "–", e.get("python") or "–")
        entry = env_rows.setdefault(key, [set(), 0])
        entry[0].update(run.hosts)
        entry[1] += 1
    blocks.append("### Hardware and software\n\n" + (md_table(
        ("device", "backend", "torch", "transformers", "deepspeed", "nccl", "python", "hosts", "runs"),
        [(*key, ", ".join(sorted(hosts)) or "–", count) for key, (hosts, count) in sorted(env_rows.items())],
    ) if env_rows else "No run has results yet."))

    models = {}
    for run in runs:
        m = run.spec.get("model") or {}
        key = (m.get("source"), m.get("config"), m.get("path"), m.get("seed"), run.spec.get("dtype"))
        models[key] = models.get(key, 0) + 1
    lines = []
    for (source, config, path, seed, dtype), count in sorted(models.items(), key=lambda kv: str(kv[0])):
        if source == "synthetic" and config in MODEL_CONFIGS:
            c = MODEL_CONFIGS[config]
            lines.append(
                f"- {config} (LLaMA shape: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                f"{c.num_attention_heads} heads, vocabulary {c.vocab_size}; "
                f"{c.parameter_count() / 1e6:.1f} M parameters), random weights from seed {seed}, {dtype}; {count} runs"
            )
        else:
            lines.append(f"- checkpoint {path}, {dtype}; {count} runs")
    blocks.append("### Model\n\n" + ("\n".join(lines) or "–"))

    workloads: dict[tuple, set[str]] = {}
    for exp in experiments:
        for cell in exp.cells:
            spec = cell.cell.spec
            key = (spec.prompts_file or "the 20 prompts shipped with the worker", spec.max_new_tokens,
                   spec.warmup, spec.repeats, bool(spec.ignore_eos))
            workloads.setdefault(key, set()).add(exp.name)
    blocks.append("### Workload\n\n" + ("\n".join(
        f"- {', '.join(sorted(names))}: prompts: {prompts}; greedy decoding, {tokens} new tokens per request"
        + (" (EOS ignored, so every request generates exactly that many)" if ignore_eos else "")
        + f"; {warmup} warm-up and {repeats} timed repeat{'s' if repeats != 1 else ''} per batch size"
        for (prompts, tokens, warmup, repeats, ignore_eos), names in sorted(workloads.items(), key=str))
        or "–"))

    cluster_rows = []
    for exp in experiments:
        for cell in exp.cells:
            r = cell.cell.resources
            cluster = cell.run.cluster if cell.run else "–"
            engine = describe_engine(cell.run) if cell.run else "–"
            cluster_rows.append((exp.name, cell.cell.key, cluster or "–", r.nodes, r.tasks_per_node,
                                 r.gpus_per_node, r.partition or "–", engine))
    if cluster_rows:
        blocks.append("### Cluster, resources and engine\n\n" + md_table(
            ("experiment", "cell", "cluster", "nodes", "ranks per node", "GPUs per node", "partition", "engine"),
            cluster_rows))
    return blocks


METHOD_BY_KIND = {
    "correctness": "Correctness: greedy ids of every parallel mode vs the 1-GPU baseline on the same prompts and "
                   "weights; per prompt the first divergence and whether each side's token is in the other's top-k "
                   "there. A mode passes when every divergence keeps top-k agreement and its exact-match rate is not "
                   "below the noise floor measured in the same experiment.",
    "strong_scaling": "Strong scaling: the same workload on 1, 2, 4, ... GPUs per mode; speedup and efficiency "
                      "against the 1-GPU run of the same experiment.",
    "weak_scaling": "Weak scaling: the number of requests grows with the GPU count; weak-scaling efficiency "
                    "against the 1-GPU run.",
    "batch_sweep": "Batch sweep: every batch size in one job per configuration (one model load); throughput, "
                   "TTFT, TPOT and peak memory per rank, each mode compared with 1 GPU at the same batch size.",
    "profile": "Profile: with profile=True the worker times compute, communication and idle per rank "
               "(adding device synchronisations, so its absolute times are not used elsewhere).",
    "quantization": "Quantization: each scheme and batch size in its own single-GPU job; throughput and TPOT as "
                    "in the batch sweep, weights per rank as the worker holds them, accuracy scored in the same job "
                    "against the unquantized model (see the section).",
}


def method_block(experiments: Sequence[ExperimentResult]) -> str:
    lines = [
        "Every measurement loads the model, runs the warm-up iterations (excluded), then times the repeats over the "
        "prompt set at each batch size, synchronising the device on the last stage and all ranks before every clock "
        "read. Tables give the median over repeats with its n; derived ratios use those medians and compare runs of "
        "the same experiment, measured on the same machines.",
        "",
    ]
    for kind in sorted({e.kind for e in experiments}):
        if kind in METHOD_BY_KIND:
            lines.append(f"- {METHOD_BY_KIND[kind]}")
        else:
            lines.append(f"- {kind}: one run per cell of the sweep, reported side by side.")
    return "\n".join(lines)


DEFINITIONS = (
    ("TTFT", "first token of a request available on the last stage minus batch start (median over requests)"),
    ("TPOT", "(E2E - TTFT) / (output tokens - 1) per request, request-weighted median"),
    ("output throughput X", "generated tokens (counted from ids) / measured wall time; median over repeats"),
    ("peak memory", "per rank, torch.cuda.max_memory_allocated (peak RSS on CPU); tables show the largest rank"),
    ("speedup S(N)", "T(1) / T(N), fixed total work; N = GPUs relative to the baseline's"),
    ("efficiency E", "S / N"),
    ("weak-scaling efficiency E_w(N)", "T(1) / T(N) with work proportional to N"),
    ("throughput scaling", "X(N) / (N * X(1))"),
    ("memory ratio", "peak memory of the largest rank / the 1-GPU run's"),
    ("exact-match rate", "share of prompts whose greedy ids equal the 1-GPU baseline's"),
    ("top-k agreement", "at the first divergence each side's token is in the other's top-k (k = 5)"),
    ("compute / comm / idle", "per rank: stage compute, waiting in send/recv or collectives, the rest"),
)


# --- limitations ---------------------------------------------------------------------------------


def limitations(experiments: Sequence[ExperimentResult], sections: Sequence[Section]) -> list[str]:
    notes: list[str] = []
    for exp in experiments:
        missing = _missing_cells_note(exp)
        if missing:
            notes.append(missing)
        notes.extend(_failure_notes(exp))
        if exp.plan is not None and exp.plan.skipped:
            notes.append(f"{exp.name}: not run, as the model or cluster cannot: "
                         + "; ".join(f"{key} ({why})" for key, why in exp.plan.skipped) + ".")
    for section in sections:
        notes.extend(section.limitations)
    points = [p for run in _all_runs(experiments) for p in run.points]
    if points:
        repeats = sorted({p.repeats for p in points})
        spreads = sorted(((p.wall_spread, p.label, p.batch_size) for p in points if p.wall_spread is not None),
                         key=lambda t: (-t[0], t[1], t[2]))
        text = f"Timings are medians of n = {', '.join(str(r) for r in repeats)} repeats"
        if spreads:
            spread, label, batch = spreads[0]
            text += (f"; the wall time moved by up to {spread * 100:.1f}% between repeats of one measurement "
                     f"(max - min over median; {label} at batch {batch}), so smaller differences are within noise")
        notes.append(text + ".")
    runs = _all_runs(experiments)
    if any(r.points and not r.environment.get("gpu_model") for r in runs):
        notes.append("Some runs ran on CPU (gloo): their absolute times and memory say nothing about GPUs; only "
                     "the comparisons within the same experiment carry over, and only in direction.")
    if any(r.points and r.environment.get("gpu_model") for r in runs):
        notes.append("Absolute GPU figures move by up to 1.5x between machines of the same model; the ratios "
                     "here compare runs of one experiment on the same machines.")
    single_micro = sorted({e.name for e in experiments for c in e.cells
                           if c.cell.spec.mode == "pp" and c.cell.spec.micro_batches == 1})
    if single_micro:
        notes.append(f"pp ran with one micro-batch in {', '.join(single_micro)}: its stages take turns on "
                     "each batch, so at most one GPU computes at a time; micro-batched pipelines were not "
                     "measured there.")
    notes.append("Offline batch generation only: no request arrival process, so no serving latency under load.")
    return notes


def measurement_warnings(experiments: Sequence[ExperimentResult], sections: Sequence[Section]) -> list[str]:
    """Every efficiency above 1, every pair of runs that overlapped on shared hosts, every timed part
    shorter than `validity.MIN_TIMED_S` (correctness and profile cells are left out of the last: their
    times are not compared, and a profile's device syncs make them longer than the work anyway)."""
    flags = [f for section in sections for f in section.flags]
    runs = _all_runs(experiments)
    flags += validity.overlap_flags([r for r in runs if r.points])
    untimed = ("correctness", "profile")
    timed_ids = {c.run.id for e in experiments if e.kind not in untimed for c in e.cells if c.run is not None}
    timed_ids |= {r.id for e in experiments if e.kind not in untimed and not e.cells for r in e.runs}
    flags += validity.short_flags([r for r in runs if r.id in timed_ids])
    return [f.text for f in flags]


# --- assembly ------------------------------------------------------------------------------------


def build_report(experiments: Sequence[ExperimentResult], *, png_dir: Path | None = None,
                 png_link_dir: str | None = None) -> str:
    """The report as Markdown; with `png_dir`, charts are also written there as PNG and linked.

    `png_link_dir` is how the Markdown refers to that folder (relative to the report file).
    """
    if not experiments:
        raise ValueError("experiments: name at least one experiment to report on")
    profiles = _profile_index(experiments)
    sections = [globals()[report_section_of(exp.kind)](exp, profiles) for exp in experiments]
    names = ", ".join(e.name for e in experiments)
    out: list[str] = [f"# dinf report: {names}", ""]
    out.append(md_table(
        ("id", "experiment", "study", "cells with results", "runs"),
        [(e.id, e.name, e.kind, f"{len(_done(e.cells))}/{len(e.cells)}" if e.cells else "–", len(e.runs))
         for e in experiments],
    ))
    out += ["", "## Findings", ""]
    for section in sections:
        for verdict in section.verdicts:
            out.append(f"- {verdict}")
    out += ["", "## Measurement warnings", ""]
    warnings = measurement_warnings(experiments, sections)
    out += [f"- {w}" for w in warnings] or [
        f"None: no efficiency above {validity.EFFICIENCY_LIMIT:g}, no two runs at the same time on the same "
        f"host, no timed part under {validity.MIN_TIMED_S:g} s."]
    out += ["", "## Setup", ""]
    for block in setup_blocks(experiments):
        out += [block, ""]
    out += ["## Method", "", method_block(experiments), ""]
    out += ["## Metric definitions", "", md_table(("metric", "definition"), DEFINITIONS), ""]
    chart_number = 0
    for number, section in enumerate(sections, start=1):
        out += [f"## {number}. {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, _ChartRef):
                chart_number += 1
                chart = section.charts[block.index]
                out += ["```text", charts.render(chart), "```"]
                if png_dir is not None:
                    name = f"chart-{chart_number:02d}-{_slug(chart.title)}.png"
                    charts.save_png(chart, Path(png_dir) / name)
                    link = f"{png_link_dir.rstrip('/')}/{name}" if png_link_dir else name
                    out.append(f"![{chart.title}]({link})")
                out.append("")
            else:
                out += [block, ""]
        if section.verdicts:
            out += ["Verdict:", ""]
            out += [f"- {v}" for v in section.verdicts]
            out.append("")
    out += ["## Limitations", ""]
    out += [f"- {note}" for note in limitations(experiments, sections)]
    return "\n".join(out).rstrip() + "\n"


def write_report(experiments: Sequence[ExperimentResult], output: Path, *, png: bool = False) -> list[Path]:
    """Write the report (and its PNG charts beside it, in OUTPUT_STEM-charts/); returns the files written."""
    output = Path(output)
    png_dir = output.parent / f"{output.stem}-charts" if png else None
    text = build_report(experiments, png_dir=png_dir, png_link_dir=png_dir.name if png_dir else None)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    written = [output]
    if png_dir is not None:
        written += sorted(png_dir.glob("chart-*.png"))
    return written
