"""Text charts of the studies, drawn with plotext and returned as strings.

Each function takes derived data from `tui.analysis` and returns the chart as text: colourless by
default (the Markdown report embeds it verbatim and must be byte-for-byte reproducible), or with
ANSI colours for the TUI (`color=True`, rendered there with `rich.text.Text.from_ansi`).

Series are told apart by their marker character as well as by colour, and the key is written as a
line under the plot rather than as plotext's in-canvas legend, which would cover data points.
plotext draws on one module-level figure, so drawing is serialised by a lock (the TUI draws from
worker threads). Nothing here reads the database or computes a metric.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import plotext

from tui.analysis import Correctness, Point, ScalingRow, time_split

DEFAULT_WIDTH = 76
DEFAULT_HEIGHT = 18
SERIES_MARKERS = ("o", "x", "+", "*", "#", "@", "%", "&")
IDEAL_MARKER = "."
STACK_MARKERS = ("█", "▒", "░")

_figure_lock = threading.Lock()


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    marker: str | None = None
    connected: bool = True


def _no_data(title: str, why: str) -> str:
    return f"{title}\n  (no data: {why})"


def _nice(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:g}"


def _key_line(entries: Sequence[tuple[str, str]]) -> str:
    return "  key: " + "   ".join(f"{marker} {label}" for marker, label in entries)


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    xlabel: str,
    ylabel: str,
    xticks: Sequence[float] | None = None,
    log_x: bool = False,
    y_from_zero: bool = True,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    color: bool = False,
) -> str:
    """Lines (or points) of several series on one pair of axes, with a key line below."""
    drawable = [s for s in series if len(s.x) and len(s.x) == len(s.y)]
    if not drawable:
        return _no_data(title, "nothing measured yet")
    key = []
    with _figure_lock:
        figure = plotext.figure
        figure.clear()
        figure.plot_size(width, height)
        for index, s in enumerate(drawable):
            marker = s.marker or SERIES_MARKERS[index % len(SERIES_MARKERS)]
            xs = [math.log2(x) for x in s.x] if log_x else list(s.x)
            signal = figure.signal(xs, list(s.y), marker=marker)
            if s.connected and len(xs) > 1:
                signal.lines()
            figure.draw(signal)
            key.append((marker, s.label))
        if xticks:
            positions = [math.log2(t) for t in xticks] if log_x else list(xticks)
            figure.ruler("x").ticks(positions, [_nice(t) for t in xticks])
        if y_from_zero:
            top = max(max(s.y) for s in drawable)
            figure.ruler("y").lim(0, top * 1.08 if top > 0 else 1)
        figure.title(title)
        figure.label(xlabel)
        figure.label(ylabel, axis="y")
        text = figure.build().string(colorless=not color)
        figure.clear()
    return text.rstrip() + "\n" + _key_line(key)


def _ticks(values: Sequence[float]) -> list[float]:
    return sorted(set(values))


# --- scaling -------------------------------------------------------------------------------------


def throughput_vs_gpus(
    series: Mapping[str, Sequence[ScalingRow]], *, title: str = "Output tokens/s vs GPUs", **style
) -> str:
    """Output tok/s per mode against GPU count, with the ideal line N * X(1) from the baseline."""
    lines = []
    all_gpus: list[float] = []
    baseline_tok_s = None
    baseline_gpus = None
    for label, rows in series.items():
        rows = [r for r in rows if r.point.output_tok_s is not None]
        if not rows:
            continue
        lines.append(Series(label, [r.point.num_gpus for r in rows], [r.point.output_tok_s for r in rows]))
        all_gpus += [r.point.num_gpus for r in rows]
        for r in rows:
            if r.n == 1 and baseline_tok_s is None:
                baseline_tok_s, baseline_gpus = r.point.output_tok_s, r.point.num_gpus
    if baseline_tok_s is not None and all_gpus:
        ticks = _ticks(all_gpus)
        ideal = [baseline_tok_s * g / baseline_gpus for g in ticks]
        lines.append(Series("ideal (N x 1-GPU rate)", ticks, ideal, marker=IDEAL_MARKER))
    return line_chart(title, lines, xlabel="GPUs", ylabel="tok/s", xticks=_ticks(all_gpus), **style)


def efficiency_vs_gpus(
    series: Mapping[str, Sequence[ScalingRow]], *, title: str = "Scaling efficiency vs GPUs", **style
) -> str:
    """Efficiency (S/N, or E_w for weak scaling) per mode against GPU count; ideal is 1."""
    lines = []
    all_gpus: list[float] = []
    for label, rows in series.items():
        rows = [r for r in rows if r.efficiency is not None]
        if rows:
            lines.append(Series(label, [r.point.num_gpus for r in rows], [r.efficiency for r in rows]))
            all_gpus += [r.point.num_gpus for r in rows]
    if all_gpus:
        ticks = _ticks(all_gpus)
        lines.append(Series("ideal (1.0)", ticks, [1.0] * len(ticks), marker=IDEAL_MARKER))
    return line_chart(title, lines, xlabel="GPUs", ylabel="efficiency", xticks=_ticks(all_gpus), **style)


# --- batch sweep ---------------------------------------------------------------------------------


def _batch_series(points_by_label: Mapping[str, Sequence[Point]], value) -> tuple[list[Series], list[float]]:
    lines, sizes = [], []
    for label, points in points_by_label.items():
        pairs = sorted((p.batch_size, value(p)) for p in points if value(p) is not None)
        if pairs:
            lines.append(Series(label, [b for b, _ in pairs], [v for _, v in pairs]))
            sizes += [b for b, _ in pairs]
    return lines, sizes


def _log_axis(sizes: Sequence[float]) -> bool:
    # Batch sizes are usually powers of two; a log axis spaces them evenly.
    return len(set(sizes)) > 2 and max(sizes) / min(sizes) >= 8


def by_batch_size(
    points_by_label: Mapping[str, Sequence[Point]], value, *, title: str, ylabel: str, **style
) -> str:
    lines, sizes = _batch_series(points_by_label, value)
    return line_chart(title, lines, xlabel="batch size", ylabel=ylabel, xticks=_ticks(sizes),
                      log_x=bool(sizes) and _log_axis(sizes), **style)


def throughput_vs_batch(points_by_label: Mapping[str, Sequence[Point]], **style) -> str:
    return by_batch_size(points_by_label, lambda p: p.output_tok_s,
                         title="Output tokens/s vs batch size", ylabel="tok/s", **style)


def memory_vs_batch(points_by_label: Mapping[str, Sequence[Point]], **style) -> str:
    """Peak memory of the largest rank, in GiB."""
    return by_batch_size(points_by_label, lambda p: None if p.peak_bytes is None else p.peak_bytes / 2**30,
                         title="Peak memory per rank (largest rank) vs batch size", ylabel="GiB", **style)


def ttft_vs_batch(points_by_label: Mapping[str, Sequence[Point]], **style) -> str:
    return by_batch_size(points_by_label, lambda p: None if p.ttft_s is None else p.ttft_s * 1e3,
                         title="TTFT (median) vs batch size", ylabel="ms", **style)


def tpot_vs_batch(points_by_label: Mapping[str, Sequence[Point]], **style) -> str:
    return by_batch_size(points_by_label, lambda p: None if p.tpot_s is None else p.tpot_s * 1e3,
                         title="TPOT (median) vs batch size", ylabel="ms", **style)


# --- profile -------------------------------------------------------------------------------------


def time_split_chart(point: Point, *, title: str | None = None, width: int = DEFAULT_WIDTH,
                     height: int = DEFAULT_HEIGHT, color: bool = False) -> str:
    """Stacked compute / communication / idle share of each rank's time (percent)."""
    title = title or f"Time split per rank: {point.label}, batch {point.batch_size}"
    splits = time_split(point)
    if not splits:
        return _no_data(title, "the run was not profiled (profile=True records compute/comm/idle)")
    names = [f"rank {s.rank}" for s in splits]
    stacks = [[s.compute * 100 for s in splits], [s.comm * 100 for s in splits], [s.idle * 100 for s in splits]]
    with _figure_lock:
        figure = plotext.figure
        figure.clear()
        figure.plot_size(width, height)
        figure.draw(figure.bar(names, stacks, stacked=True, marker=list(STACK_MARKERS)))
        figure.ruler("y").lim(0, 100)
        figure.title(title)
        figure.label("%", axis="y")
        text = figure.build().string(colorless=not color)
        figure.clear()
    key = _key_line(list(zip(STACK_MARKERS, ("compute", "communication", "idle"))))
    return text.rstrip() + "\n" + key


# --- correctness ---------------------------------------------------------------------------------


def correctness_chart(result: Correctness, *, max_new_tokens: int, title: str = "Matching tokens per prompt",
                      width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT, color: bool = False) -> str:
    """Per prompt, how many generated tokens match the baseline before the first divergence."""
    if not result.checks:
        return _no_data(title, "no completions to compare")
    indexes = [c.index for c in result.checks]
    matched = [max_new_tokens if c.exact else (c.first_divergence or 0) for c in result.checks]
    with _figure_lock:
        figure = plotext.figure
        figure.clear()
        figure.plot_size(width, height)
        figure.draw(figure.bar([str(i) for i in indexes], matched, marker=[STACK_MARKERS[0]]))
        figure.ruler("y").lim(0, max_new_tokens)
        figure.title(title)
        figure.label("prompt")
        figure.label("tokens", axis="y")
        text = figure.build().string(colorless=not color)
        figure.clear()
    return (text.rstrip() + f"\n  full bar: all {max_new_tokens} tokens identical; "
            f"{result.exact_matches}/{result.n} prompts exact")
