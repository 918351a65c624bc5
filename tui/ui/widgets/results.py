"""A finished run's measurements table (one row per batch size), its correctness summary and, for a
profiled run, the timeline of a few pipeline steps per rank (`PipelineTimeline`).

Reads attributes of the service's measurement and correctness records by name (the columns of
storage.models.Measurement / CorrectnessResult); a missing value shows as '-'.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from tui.display.runs import plain
from tui.studies.timeline import first_timeline
from tui.ui.widgets.timeline import PipelineTimeline

# (attribute, header, format). The key columns come first, so that at 80 columns a run's throughput
# and per-token latency show without scrolling the table sideways (the rest are to its right).
MEASUREMENT_COLUMNS: list[tuple[str, str, str]] = [
    ("batch_size", "batch", "{:d}"),
    ("output_throughput_tok_s", "output tok/s", "{:.1f}"),
    ("tpot_median_s", "TPOT p50 ms", "ms"),
    ("ttft_median_s", "TTFT p50 ms", "ms"),
    ("per_gpu_output_tok_s", "per-GPU tok/s", "{:.1f}"),
    ("decode_throughput_tok_s", "decode tok/s", "{:.1f}"),
    ("total_throughput_tok_s", "total tok/s", "{:.1f}"),
    ("itl_median_s", "ITL p50 ms", "ms"),
    ("ttft_p90_s", "TTFT p90 ms", "ms"),
    ("e2e_median_s", "E2E p50 s", "{:.3f}"),
    ("num_requests", "requests", "{:d}"),
    ("output_tokens", "out tok", "{:d}"),
]


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, dict) else getattr(record, name, None)


def format_value(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        if fmt == "ms":
            return f"{float(value) * 1000:.2f}"
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def correctness_text(correctness: Any) -> Text:
    """One line per compared batch size, or why there is nothing to show."""
    if not correctness:
        return Text("No correctness comparison for this run (it needs a single-GPU reference run).", style="dim")
    items = correctness if isinstance(correctness, list) else [correctness]
    lines = [Text.assemble(("correctness", "bold"), " (greedy token ids vs the reference)")]
    for item in items:
        batch = _field(item, "batch_size")
        rate = _field(item, "exact_match_rate")
        exact, total = _field(item, "num_exact"), _field(item, "num_prompts")
        topk = _field(item, "topk_agreement_rate")
        reference = _field(item, "reference")
        where = "whole run" if batch in (None, -1) else f"batch {batch}"
        text = f"  {where}: exact match {format_value(rate, '{:.1%}')}"
        if exact is not None and total is not None:
            text += f" ({exact}/{total} prompts)"
        if topk is not None:
            text += f", diverging tokens within top-k {format_value(topk, '{:.1%}')}"
        # The reference is a run's name: plain text.
        lines.append(Text.assemble(plain(text), " " if reference else "", plain(f"vs {reference}", "dim") if reference else ""))
    return Text("\n").join(lines)


class ResultsPanel(VerticalScroll):
    """Measurements and correctness; says so while the run has not finished."""

    DEFAULT_CSS = """
    ResultsPanel DataTable { height: auto; max-height: 16; }
    ResultsPanel #correctness { margin-top: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static("[dim]Results appear here when the run has finished.[/]", id="results-status")
        yield DataTable(id="measurements", cursor_type="row", zebra_stripes=True)
        yield Static("", id="correctness")
        yield PipelineTimeline(id="timeline")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name, header, _ in MEASUREMENT_COLUMNS:
            table.add_column(header, key=name)
        table.display = False

    def show(self, measurements: list[Any], correctness: Any) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for record in sorted(measurements, key=lambda m: _field(m, "batch_size") or 0):
            table.add_row(*(plain(format_value(_field(record, name), fmt)) for name, _, fmt in MEASUREMENT_COLUMNS))
        table.display = bool(measurements)
        status = self.query_one("#results-status", Static)
        if measurements:
            status.update(f"[b]measurements[/] · {len(measurements)} batch size(s)")
        else:
            status.update("[yellow]The run finished without measurements (see the logs for why).[/]")
        self.query_one("#correctness", Static).update(correctness_text(correctness))
        found = first_timeline(measurements)  # profiled runs only
        self.query_one(PipelineTimeline).show(found[1] if found else None,
                                              f"timeline, batch {found[0]}" if found else "")
