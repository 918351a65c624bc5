"""The studies' charts: built once as data (`Chart`), drawn as text with plotext or as PNG.

Each builder takes derived data from `tui.studies.analysis` and returns a `Chart`; `render` draws it as
text: colourless by default (the Markdown report embeds it verbatim and must be byte-for-byte
reproducible), or with ANSI colours for the TUI (`color=True`, shown with `Text.from_ansi`).
`save_png` draws the same chart with matplotlib (the optional `png` extra) for `dinf report --png`.

Series are told apart by their marker character as well as by colour, and the key is written as a
line under the plot rather than as plotext's in-canvas legend, which would cover data points.
plotext draws on one module-level figure, so drawing is serialised by a lock (the TUI draws from
worker threads). Nothing here reads the database or computes a metric.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotext

from tui.studies.analysis import Correctness, Point, ScalingRow, time_split

DEFAULT_WIDTH = 76
DEFAULT_HEIGHT = 18
SERIES_MARKERS = ("o", "x", "+", "*", "#", "@", "%", "&")
IDEAL_MARKER = "."
STACK_MARKERS = ("█", "▒", "░")

_figure_lock = threading.Lock()


@dataclass(frozen=True)
class Series:
    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    marker: str = ""
    connected: bool = True
    ideal: bool = False
    """A reference line (drawn dotted in PNGs)."""


@dataclass(frozen=True)
class Chart:
    """What to draw, independent of how: lines over numeric x, or (stacked) bars over categories."""

    title: str
    kind: str
    """'lines' | 'bars' | 'stacked_bars'"""
    xlabel: str = ""
    ylabel: str = ""
    series: tuple[Series, ...] = ()
    xticks: tuple[float, ...] = ()
    log_x: bool = False
    y_from_zero: bool = True
    y_max: float | None = None
    categories: tuple[str, ...] = ()
    stacks: tuple[tuple[float, ...], ...] = ()
    """bars: one tuple of values; stacked_bars: one tuple per layer (bottom first)."""
    stack_labels: tuple[str, ...] = ()
    note: str = ""
    """A line printed under the chart (what a full bar means, and the like)."""
    empty_reason: str = ""
    """Set when there is nothing to draw; `render` then says so instead of drawing."""

    @property
    def empty(self) -> bool:
        return bool(self.empty_reason)


def _empty(title: str, why: str) -> Chart:
    return Chart(title=title, kind="lines", empty_reason=why)


def _nice(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _key_line(entries: Sequence[tuple[str, str]]) -> str:
    return "  key: " + "   ".join(f"{marker} {label}" for marker, label in entries)


# --- text rendering ------------------------------------------------------------------------------


def render(chart: Chart, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT, color: bool = False) -> str:
    """The chart as text; deterministic for the same chart, size and colour setting."""
    if chart.empty:
        return f"{chart.title}\n  (no data: {chart.empty_reason})"
    with _figure_lock:
        figure = plotext.figure
        figure.clear()
        # the size asked for is the size drawn: a TUI pane is not the process's terminal (plotext
        # would cap the width at the terminal's, 80 columns under a test or a pipe)
        plotext.terminal.limit(False, False)
        figure.plot_size(width, height)
        try:
            key = _draw_text(figure, chart)
            text = figure.build().string(colorless=not color)
        finally:
            figure.clear()
    lines = [text.rstrip()]
    if key:
        lines.append(_key_line(key))
    if chart.note:
        lines.append(f"  {chart.note}")
    return "\n".join(lines)


def _draw_text(figure, chart: Chart) -> list[tuple[str, str]]:
    key: list[tuple[str, str]] = []
    if chart.kind == "lines":
        for s in chart.series:
            xs = [math.log2(x) for x in s.x] if chart.log_x else list(s.x)
            signal = figure.signal(xs, list(s.y), marker=s.marker)
            if s.connected and len(xs) > 1:
                signal.lines()
            figure.draw(signal)
            key.append((s.marker, s.label))
        if chart.xticks:
            positions = [math.log2(t) for t in chart.xticks] if chart.log_x else list(chart.xticks)
            figure.ruler("x").ticks(positions, [_nice(t) for t in chart.xticks])
    elif chart.kind == "bars":
        figure.draw(figure.bar(list(chart.categories), list(chart.stacks[0]), marker=[STACK_MARKERS[0]]))
    elif chart.kind == "stacked_bars":
        markers = list(STACK_MARKERS[: len(chart.stacks)])
        figure.draw(figure.bar(list(chart.categories), [list(s) for s in chart.stacks], stacked=True, marker=markers))
        key = list(zip(markers, chart.stack_labels))
    else:
        raise ValueError(f"unknown chart kind {chart.kind!r}")
    top = _y_top(chart)
    if top is not None:
        figure.ruler("y").lim(0, top)
    figure.title(chart.title)
    if chart.xlabel:
        figure.label(chart.xlabel)
    if chart.ylabel:
        figure.label(chart.ylabel, axis="y")
    return key


def _y_top(chart: Chart) -> float | None:
    if chart.y_max is not None:
        return chart.y_max
    if not chart.y_from_zero:
        return None
    if chart.kind == "lines":
        values = [v for s in chart.series for v in s.y]
    elif chart.kind == "stacked_bars":
        values = [sum(col) for col in zip(*chart.stacks)]
    else:
        values = list(chart.stacks[0]) if chart.stacks else []
    top = max(values, default=0)
    return top * 1.08 if top > 0 else 1.0


# --- PNG rendering -------------------------------------------------------------------------------


def save_png(chart: Chart, path: Path) -> Path:
    """Draw the chart with matplotlib into `path` (needs the `png` extra: pip install 'dinf-tui[png]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display; must precede pyplot
        from matplotlib import pyplot
    except ImportError as exc:
        raise RuntimeError("PNG charts need matplotlib: pip install 'dinf-tui[png]'") from exc
    # A fixed hash salt for SVG ids and no date metadata keep repeated reports byte-identical.
    matplotlib.rcParams["svg.hashsalt"] = "dinf"
    fig, ax = pyplot.subplots(figsize=(7.5, 4.2), dpi=110)
    try:
        if chart.empty:
            ax.text(0.5, 0.5, f"no data: {chart.empty_reason}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        elif chart.kind == "lines":
            for s in chart.series:
                style = ":" if s.ideal else "-"
                ax.plot(s.x, s.y, linestyle=style if s.connected else "none", marker=None if s.ideal else "o",
                        label=s.label)
            if chart.log_x:
                ax.set_xscale("log", base=2)
            if chart.xticks:
                ax.set_xticks(list(chart.xticks), [_nice(t) for t in chart.xticks])
            ax.legend()
        else:
            bottom = [0.0] * len(chart.categories)
            labels = chart.stack_labels or ("",)
            for layer, values in enumerate(chart.stacks):
                label = labels[layer] if layer < len(labels) else None
                ax.bar(chart.categories, values, bottom=bottom, label=label or None)
                bottom = [b + v for b, v in zip(bottom, values)]
            if chart.stack_labels:
                ax.legend()
        top = None if chart.empty else _y_top(chart)
        if top is not None:
            ax.set_ylim(0, top)
        ax.set_title(chart.title)
        ax.set_xlabel(chart.xlabel)
        ax.set_ylabel(chart.ylabel)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        pyplot.close(fig)
    return path


# --- scaling -------------------------------------------------------------------------------------


def _ticks(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(sorted(set(values)))


def _with_markers(series: list[Series]) -> tuple[Series, ...]:
    out = []
    for index, s in enumerate(series):
        marker = s.marker or SERIES_MARKERS[index % len(SERIES_MARKERS)]
        out.append(Series(s.label, s.x, s.y, marker, s.connected, s.ideal))
    return tuple(out)


def throughput_vs_gpus(series: Mapping[str, Sequence[ScalingRow]], *,
                       title: str = "Output tokens/s vs GPUs", unit: str = "GPUs") -> Chart:
    """Output tok/s per mode against GPU count, with the ideal line N * X(1) from the baseline."""
    lines: list[Series] = []
    gpus: list[float] = []
    baseline = None
    for label, rows in series.items():
        rows = [r for r in rows if r.point.output_tok_s is not None]
        if not rows:
            continue
        lines.append(Series(label, tuple(r.point.num_gpus for r in rows), tuple(r.point.output_tok_s for r in rows)))
        gpus += [r.point.num_gpus for r in rows]
        baseline = baseline or next((r.point for r in rows if r.n == 1), None)
    if not lines:
        return _empty(title, "no completed scaling runs yet")
    if baseline is not None:
        ticks = _ticks(gpus)
        ideal = tuple(baseline.output_tok_s * g / baseline.num_gpus for g in ticks)
        lines.append(Series("ideal (N x 1-GPU rate)", ticks, ideal, IDEAL_MARKER, ideal=True))
    return Chart(title, "lines", unit, "tok/s", _with_markers(lines), xticks=_ticks(gpus))


def efficiency_vs_gpus(series: Mapping[str, Sequence[ScalingRow]], *,
                       title: str = "Scaling efficiency vs GPUs", unit: str = "GPUs") -> Chart:
    """Efficiency (S/N, or E_w for weak scaling) per mode against GPU count; ideal is 1."""
    lines: list[Series] = []
    gpus: list[float] = []
    for label, rows in series.items():
        rows = [r for r in rows if r.efficiency is not None]
        if rows:
            lines.append(Series(label, tuple(r.point.num_gpus for r in rows), tuple(r.efficiency for r in rows)))
            gpus += [r.point.num_gpus for r in rows]
    if not lines:
        return _empty(title, "no completed scaling runs yet")
    ticks = _ticks(gpus)
    lines.append(Series("ideal (1.0)", ticks, tuple(1.0 for _ in ticks), IDEAL_MARKER, ideal=True))
    return Chart(title, "lines", unit, "efficiency", _with_markers(lines), xticks=ticks)


# --- batch sweep ---------------------------------------------------------------------------------


def by_batch_size(points_by_label: Mapping[str, Sequence[Point]], value: Callable[[Point], float | None], *,
                  title: str, ylabel: str) -> Chart:
    lines: list[Series] = []
    sizes: list[float] = []
    for label, points in points_by_label.items():
        pairs = sorted((p.batch_size, value(p)) for p in points if value(p) is not None)
        if pairs:
            lines.append(Series(label, tuple(b for b, _ in pairs), tuple(v for _, v in pairs)))
            sizes += [b for b, _ in pairs]
    if not lines:
        return _empty(title, "no measurement has this value")
    # Batch sizes are usually powers of two: a log2 axis spaces them evenly, whatever their range
    # (a linear one squeezed 1, 2, 4 into its left third).
    log_x = len(set(sizes)) > 1 and min(sizes) > 0
    return Chart(title, "lines", "batch size", ylabel, _with_markers(lines), xticks=_ticks(sizes), log_x=log_x)


def throughput_vs_batch(points_by_label: Mapping[str, Sequence[Point]]) -> Chart:
    return by_batch_size(points_by_label, lambda p: p.output_tok_s,
                         title="Output tokens/s vs batch size", ylabel="tok/s")


def memory_vs_batch(points_by_label: Mapping[str, Sequence[Point]]) -> Chart:
    """Peak memory of the largest rank, in MiB."""
    return by_batch_size(points_by_label, lambda p: None if p.peak_bytes is None else p.peak_bytes / 2**20,
                         title="Peak memory of the largest rank vs batch size", ylabel="MiB")


def ttft_vs_batch(points_by_label: Mapping[str, Sequence[Point]]) -> Chart:
    return by_batch_size(points_by_label, lambda p: None if p.ttft_s is None else p.ttft_s * 1e3,
                         title="TTFT (median) vs batch size", ylabel="ms")


def tpot_vs_batch(points_by_label: Mapping[str, Sequence[Point]]) -> Chart:
    return by_batch_size(points_by_label, lambda p: None if p.tpot_s is None else p.tpot_s * 1e3,
                         title="TPOT (median) vs batch size", ylabel="ms")


# --- profile -------------------------------------------------------------------------------------


def time_split_chart(point: Point, *, title: str | None = None) -> Chart:
    """Stacked compute / communication / idle share of each rank's time (percent)."""
    title = title or f"Time split per rank: {point.label}, batch {point.batch_size}"
    splits = time_split(point)
    if not splits:
        return _empty(title, "the run was not profiled (profile=True records compute/comm/idle)")
    return Chart(
        title, "stacked_bars", "", "%",
        categories=tuple(f"rank {s.rank}" for s in splits),
        stacks=(tuple(s.compute * 100 for s in splits), tuple(s.comm * 100 for s in splits),
                tuple(s.idle * 100 for s in splits)),
        stack_labels=("compute", "communication", "idle"),
        y_max=100.0,
    )


# --- correctness ---------------------------------------------------------------------------------


def correctness_chart(result: Correctness, *, max_new_tokens: int,
                      title: str = "Matching tokens per prompt") -> Chart:
    """Per prompt, how many generated tokens match the baseline before the first divergence."""
    if not result.checks:
        return _empty(title, "no completions to compare")
    matched = tuple(float(max_new_tokens if c.exact else (c.first_divergence or 0)) for c in result.checks)
    return Chart(
        title, "bars", "prompt", "tokens",
        categories=tuple(str(c.index) for c in result.checks), stacks=(matched,), y_max=float(max_new_tokens),
        note=f"full bar: all {max_new_tokens} tokens identical; {result.exact_matches}/{result.n} prompts exact",
    )


def speed_vs_accuracy(points_by_scheme: Mapping[str, Sequence[tuple[float, float]]]) -> Chart:
    """Output tok/s (y) against top-1 agreement with the unquantized model in % (x): one marker per
    scheme, one point per batch size (the quantization study)."""
    title = "Output tok/s vs top-1 agreement with the unquantized model"
    series = [Series(label, tuple(x for x, _ in pts), tuple(y for _, y in pts), connected=False)
              for label, pts in points_by_scheme.items() if pts]
    if not series:
        return _empty(title, "no scored run (spec.score) in this set")
    return Chart(title, "lines", "top-1 agreement (%)", "tok/s", _with_markers(series))
