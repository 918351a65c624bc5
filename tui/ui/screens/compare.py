"""The compare screen: pick runs (or whole experiments), see what differs and what it did.

Left: the runs that have results and the experiments. Space marks a run for comparison, `b`
makes the highlighted run the baseline, Enter on an experiment marks every run of it that has
results and shows its grid of cells. Right, in tabs: the fields that differ between the marked
runs, the metrics derived against the baseline, the charts that apply (tok/s and efficiency vs
GPUs with the ideal line, batch-size curves, time split per rank, correctness per prompt), and
the selected experiment's grid with each cell's state (`R` resubmits its failed cells).

Loading and deriving run in thread workers (`tui.studies.results`, `tui.studies.comparison`) that only post
messages; widgets are updated on the UI thread. The screen needs `app.service` (a `Dinf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from tui.display.runs import plain, printable
from tui.ui.messages import CompareMarksChanged

CHART_INSET = 2  # the charts' scrollbar gutter, kept so a scrollbar appearing never narrows them
MIN_CHART_WIDTH = 30  # narrower than this plotext has no room for its axes: the pane scrolls instead
GRID_NOTE = ("On the local backend the cells of an experiment run one at a time (each waits for the one "
             "before), so no two share the machine they time; on Slurm the scheduler places them.")


def draw_charts(comparison: Any, width: int) -> list[Text]:
    """The comparison's charts as text `width` columns wide; a line never wraps (a wrapped chart is
    garbage), it is cut at the pane's edge instead."""
    from tui.studies import charts  # plotext: loaded when the first comparison is drawn

    drawn = []
    for chart in comparison.charts:
        text = Text.from_ansi(charts.render(chart, width=width, color=True))
        text.no_wrap, text.overflow = True, "crop"
        drawn.append(text)
    return drawn


def derived_legend() -> str:
    from tui.studies.comparison import DERIVED_LEGEND  # with its charts: loaded when the screen opens

    return DERIVED_LEGEND


@dataclass
class CompareListsLoaded(Message):
    """The runs with results and the experiments, for the pickers."""

    runs: list[Any]
    experiments: list[Any]


@dataclass
class ComparisonBuilt(Message):
    """The marked runs compared (None when fewer than one run is marked)."""

    comparison: Any
    charts: list[Text]
    width: int
    """The width the charts were drawn at."""


@dataclass
class ChartsRedrawn(Message):
    """The same comparison's charts drawn again at a new width (the pane was resized)."""

    comparison: Any
    charts: list[Text]
    width: int


@dataclass
class ExperimentGridLoaded(Message):
    experiment: Any


@dataclass
class CompareFailed(Message):
    error: str


class CompareScreen(Screen):
    """Diff-only fields, derived metrics vs a baseline, charts, and experiment grids."""

    DEFAULT_CSS = """
    CompareScreen #compare-pickers {
        width: 1fr; min-width: 26; max-width: 58; border-right: solid $panel-lighten-2;
    }
    CompareScreen #compare-runs { height: 2fr; }
    CompareScreen #compare-experiments { height: 1fr; border-top: solid $panel-lighten-2; }
    CompareScreen #compare-status { height: auto; padding: 0 1; color: $text-muted; }
    CompareScreen #compare-warnings { height: auto; max-height: 8; padding: 0 1; color: $warning; display: none; }
    CompareScreen #compare-grid-note { height: auto; padding: 0 1; color: $text-muted; }
    CompareScreen #compare-tabs { width: 2fr; }
    CompareScreen #compare-charts { scrollbar-gutter: stable; }
    CompareScreen #compare-charts Static { margin-bottom: 1; text-wrap: nowrap; text-overflow: clip; }
    CompareScreen #compare-derived { max-height: 1fr; }
    CompareScreen #compare-derived-legend { height: auto; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [
        Binding("space", "toggle_run", "Mark run"),
        Binding("b", "set_baseline", "Baseline"),
        Binding("R", "resubmit_failed", "Resubmit failed"),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("v", "app.compare_runs", "Compare", show=False),  # already here: kept off the footer
    ]

    def __init__(self, run_ids: list[int] | None = None, baseline_id: int | None = None) -> None:
        """`run_ids` start marked (the app passes the marks this screen had when last closed, plus
        the run in focus); `baseline_id` among them, else the first."""
        super().__init__()
        self.marked: list[int] = list(dict.fromkeys(run_ids or []))
        self.baseline_id: int | None = baseline_id if baseline_id in self.marked else (self.marked[0] if self.marked else None)
        self.run_records: dict[int, Any] = {}
        self.experiment_rows: dict[int, Any] = {}
        self.comparison: Any = None
        self.grid: Any = None
        self.chart_width = 0
        """The width the shown charts were drawn at (0: none drawn yet)."""

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="compare-pickers"):
                yield DataTable(id="compare-runs", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="compare-experiments", cursor_type="row")
            with Vertical(id="compare-tabs"):
                yield Static("Mark runs with space (b: baseline); Enter on an experiment marks its runs.",
                             id="compare-status")
                yield Static("", id="compare-warnings", markup=False)
                with TabbedContent(id="compare-tabbed"):
                    with TabPane("Differs", id="tab-diff"):
                        yield DataTable(id="compare-diff", zebra_stripes=True)
                    with TabPane("Vs baseline", id="tab-derived"):
                        yield DataTable(id="compare-derived", zebra_stripes=True)
                        yield Static(derived_legend(), id="compare-derived-legend", markup=False)
                    with TabPane("Charts", id="tab-charts"):
                        yield VerticalScroll(id="compare-charts")
                    with TabPane("Grid", id="tab-grid"):
                        yield Static(GRID_NOTE, id="compare-grid-note", markup=False)
                        yield DataTable(id="compare-grid", zebra_stripes=True)
        yield Footer(compact=True)  # about a third more bindings fit in 80 columns

    def on_mount(self) -> None:
        runs = self.query_one("#compare-runs", DataTable)
        runs.add_column("", key="mark", width=2)
        for key, label in (("id", "ID"), ("name", "Name"), ("mode", "Mode"), ("ranks", "Ranks")):
            runs.add_column(label, key=key)
        experiments = self.query_one("#compare-experiments", DataTable)
        for key, label in (("id", "ID"), ("name", "Experiment"), ("kind", "Study"), ("runs", "Runs")):
            experiments.add_column(label, key=key)
        self._load_lists()
        # Runs finishing while the screen is open join the pickers (marks are kept).
        self.watch(self.app, "runs_version", self._runs_changed, init=False)

    def _runs_changed(self, _version: int = 0) -> None:
        done = {run_id for run_id, record in self.app.runs.items() if record.done}
        if done != set(self.run_records):
            self._load_lists()

    # --- loading -----------------------------------------------------------------------------------

    @property
    def service(self) -> Any:
        return self.app.service

    @work(thread=True, exclusive=True, group="compare-lists", exit_on_error=False)
    def _load_lists(self) -> None:
        from tui.core.comparisons import choices

        try:
            runs, experiments = choices(self.service)
        except Exception as exc:  # noqa: BLE001 - shown, not raised into the UI thread
            self.post_message(CompareFailed(f"could not read runs: {exc}"))
            return
        self.post_message(CompareListsLoaded(runs, experiments))

    def on_compare_lists_loaded(self, message: CompareListsLoaded) -> None:
        self.run_records = {r.id: r for r in message.runs}
        self.marked = [i for i in self.marked if i in self.run_records]
        if self.baseline_id not in self.marked:
            self.baseline_id = self.marked[0] if self.marked else None
        table = self.query_one("#compare-runs", DataTable)
        table.clear()
        for record in message.runs:
            # Names, modes, keys and values below come from runs and specs: plain Text, never markup.
            table.add_row(self._mark(record.id), str(record.id), plain(record.name), plain(record.mode),
                          str(record.num_ranks), key=str(record.id))
        experiments = self.query_one("#compare-experiments", DataTable)
        experiments.clear()
        self.experiment_rows = {row.id: row for row in message.experiments}
        for row in message.experiments:
            experiments.add_row(str(row.id), plain(row.name), plain(row.kind), str(row.runs), key=str(row.id))
        self._rebuild()

    def _mark(self, run_id: int) -> str:
        if run_id == self.baseline_id:
            return "★"
        return "✓" if run_id in self.marked else ""

    def _refresh_marks(self) -> None:
        self.post_message(CompareMarksChanged(list(self.marked), self.baseline_id))  # the app keeps them
        table = self.query_one("#compare-runs", DataTable)
        for run_id in self.run_records:
            table.update_cell(str(run_id), "mark", self._mark(run_id))

    # --- picking -----------------------------------------------------------------------------------

    def _highlighted(self, table_id: str) -> int | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - cursor outside a refreshed table
            return None
        return int(key.value) if key.value is not None else None

    def action_toggle_run(self) -> None:
        run_id = self._highlighted("#compare-runs")
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
            if self.baseline_id == run_id:
                self.baseline_id = self.marked[0] if self.marked else None
        else:
            self.marked.append(run_id)
            if self.baseline_id is None:
                self.baseline_id = run_id
        self._refresh_marks()
        self._rebuild()

    def action_set_baseline(self) -> None:
        run_id = self._highlighted("#compare-runs")
        if run_id is None:
            return
        if run_id not in self.marked:
            self.marked.append(run_id)
        self.baseline_id = run_id
        self._refresh_marks()
        self._rebuild()

    @on(DataTable.RowSelected, "#compare-experiments")
    def _experiment_chosen(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._load_experiment(int(event.row_key.value))

    @on(DataTable.RowSelected, "#compare-runs")
    def _run_chosen(self, event: DataTable.RowSelected) -> None:
        self.action_toggle_run()

    @work(thread=True, exclusive=True, group="compare-grid", exit_on_error=False)
    def _load_experiment(self, exp_id: int) -> None:
        from tui.core.experiment_runs import load

        try:
            experiment = load(self.service, exp_id)
        except Exception as exc:  # noqa: BLE001
            self.post_message(CompareFailed(f"could not load experiment {exp_id}: {exc}"))
            return
        self.post_message(ExperimentGridLoaded(experiment))

    def on_experiment_grid_loaded(self, message: ExperimentGridLoaded) -> None:
        exp = message.experiment
        self.grid = exp
        with_results = [c.run.id for c in exp.cells if c.done and c.run is not None]
        if with_results:
            self.marked = with_results
            # the experiment's own baseline cell (its single-rank reference), not whichever ran first
            baselines = [c.run.id for c in exp.completed("baseline")]
            self.baseline_id = (baselines or with_results)[0]
            self._refresh_marks()
            self._rebuild()
        self._show_grid(exp)
        self.query_one("#compare-tabbed", TabbedContent).active = "tab-grid"

    def _show_grid(self, exp: Any) -> None:
        grid = self.query_one("#compare-grid", DataTable)
        grid.clear(columns=True)
        for label in ("Cell", "Role", "Mode", "Ranks", "State", "Run", "Attempts"):
            grid.add_column(label)
        for cell in exp.cells:
            state = plain(cell.state, "green" if cell.done else "red" if cell.failed else "yellow")
            grid.add_row(plain(cell.cell.key), plain(cell.cell.role), plain(cell.cell.spec.mode),
                         str(cell.cell.num_ranks), state, str(cell.run.id) if cell.run else "-", str(cell.attempts))
        for key, why in (exp.plan.skipped if exp.plan else ()):
            grid.add_row(plain(key), "not run", "", "", Text("SKIPPED", style="dim"), "-", plain(why[:40]))

    def action_resubmit_failed(self) -> None:
        if self.grid is None:
            self.notify("Open an experiment first (Enter on it).", severity="warning")
            return
        self._resubmit(self.grid.id)

    @work(thread=True, exclusive=True, group="compare-resubmit", exit_on_error=False)
    def _resubmit(self, exp_id: int) -> None:
        from tui.core.experiment_runs import resubmit_failed

        try:
            launches = resubmit_failed(self.service, exp_id)
        except Exception as exc:  # noqa: BLE001
            self.post_message(CompareFailed(f"resubmit failed: {exc}"))
            return
        self.app.call_from_thread(self.notify, f"Resubmitted {len(launches)} failed cell(s).", markup=False)
        self._load_experiment(exp_id)

    # --- comparing ---------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        status = self.query_one("#compare-status", Static)
        if not self.marked:
            status.update("Mark runs with space (b: baseline); Enter on an experiment marks its runs.")
            self._fill(None, [])
            return
        status.update(f"Comparing {len(self.marked)} run(s) against baseline #{self.baseline_id}.")
        self._compare(list(self.marked), self.baseline_id, self._chart_width())

    @work(thread=True, exclusive=True, group="compare-build", exit_on_error=False)
    def _compare(self, run_ids: list[int], baseline_id: int | None, width: int) -> None:
        from tui.core.comparisons import compare

        try:
            comparison = compare(self.service, run_ids, baseline=baseline_id)
            drawn = draw_charts(comparison, width)
        except Exception as exc:  # noqa: BLE001
            self.post_message(CompareFailed(f"could not compare: {exc}"))
            return
        self.post_message(ComparisonBuilt(comparison, drawn, width))

    def on_comparison_built(self, message: ComparisonBuilt) -> None:
        if message.comparison is not None and [r.id for r in message.comparison.runs] != self._expected_order():
            return  # a newer selection is being compared
        self._fill(message.comparison, message.charts)
        self.chart_width = message.width
        self._redraw_if_resized()  # the pane may have changed while they were drawn

    # --- charts follow the pane's width --------------------------------------------------------------

    def _chart_width(self) -> int:
        """The columns a chart has in the Charts tab: the right pane less the scrollbar's gutter.
        Measured on the pane, which has its size whichever tab is active (a hidden tab has none)."""
        pane = self.query_one("#compare-tabs", Vertical)
        return max(MIN_CHART_WIDTH, pane.size.width - CHART_INSET)

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw_if_resized)  # after the layout has the new sizes

    def _redraw_if_resized(self) -> None:
        width = self._chart_width()
        if self.comparison is not None and self.chart_width and width != self.chart_width:
            self.chart_width = width
            self._redraw_charts(self.comparison, width)

    @work(thread=True, exclusive=True, group="compare-charts", exit_on_error=False)
    def _redraw_charts(self, comparison: Any, width: int) -> None:
        try:
            drawn = draw_charts(comparison, width)
        except Exception as exc:  # noqa: BLE001
            self.post_message(CompareFailed(f"could not draw the charts: {exc}"))
            return
        self.post_message(ChartsRedrawn(comparison, drawn, width))

    def on_charts_redrawn(self, message: ChartsRedrawn) -> None:
        if message.comparison is not self.comparison or message.width != self.chart_width:
            return  # a newer comparison or width is on its way
        self._show_charts(message.charts)

    def _expected_order(self) -> list[int]:
        order = list(self.marked)
        if self.baseline_id is not None and self.baseline_id not in order:
            order.insert(0, self.baseline_id)
        return order

    def _fill(self, comparison: Any, drawn: list[Text]) -> None:
        from tui.studies.comparison import DERIVED_HEADERS, derived_rows, diff_rows, run_label

        self.comparison = comparison
        diff = self.query_one("#compare-diff", DataTable)
        derived = self.query_one("#compare-derived", DataTable)
        diff.clear(columns=True)
        derived.clear(columns=True)
        self._show_charts(drawn if comparison is not None else None)
        warnings = self.query_one("#compare-warnings", Static)
        shown = comparison.warnings if comparison is not None else ()
        # run names inside are outside text: shown as written, never markup, no control characters
        warnings.update(Text("\n".join(f"! {printable(w)}" for w in shown)))
        warnings.display = bool(shown)
        if comparison is None:
            return
        diff.add_columns("field", *(plain(run_label(r) + (" ★" if r.id == comparison.baseline.id else ""))
                                    for r in comparison.runs))
        rows = diff_rows(comparison)
        for row in rows:
            diff.add_row(*map(plain, row))
        if not rows:
            diff.add_row("(no field differs)", *("" for _ in comparison.runs))
        derived.add_columns(*DERIVED_HEADERS)
        for row in derived_rows(comparison):
            derived.add_row(*map(plain, row))

    def _show_charts(self, drawn: list[Text] | None) -> None:
        holder = self.query_one("#compare-charts", VerticalScroll)
        holder.remove_children()
        if drawn is not None:
            holder.mount_all([Static(text) for text in drawn] or [Static("No chart applies to these runs.")])

    def on_compare_failed(self, message: CompareFailed) -> None:
        self.notify(printable(message.error, multiline=True), severity="error", timeout=8, markup=False)
