"""The home screen: every run in the database, live states merged in; sort, filter, open, cancel.

It renders `app.runs` (kept fresh by the app's refresh worker) and asks the app for actions.
It does no I/O itself.

The table fits the terminal: from `WIDE_FROM` columns it shows every column with full timestamps;
below, it drops the cluster and job columns (the run's screen shows both), shows the creation
time to the minute without the year, and cuts long names with an ellipsis, so at 80 columns every
column shows whole. The filter still matches the hidden columns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from tui.display.runs import (
    clock,
    duration,
    elapsed_s,
    is_finished,
    is_live,
    printable,
    ranks_of,
    short_clock,
    state_of,
    state_text,
)
from tui.ui.messages import RunCancelRequested, RunOpenRequested
from tui.ui.screens import FocusesRun
from tui.ui.widgets.connection_bar import ConnectionBar
from tui.ui.widgets.field_error import FieldError
from tui.ui.widgets.runs_table import PlainCell, RunsTable

COLUMNS: list[tuple[str, str]] = [
    ("id", "ID"),
    ("name", "Name"),
    ("cluster", "Cluster"),
    ("mode", "Mode"),
    ("ranks", "Ranks"),
    ("state", "State"),
    ("job", "Job"),
    ("elapsed", "Elapsed"),
    ("created", "Created"),  # last: the longest, and the least needed at a glance
]


@dataclass(frozen=True)
class TableLayout:
    """Which columns the table shows, and how wide its text may be."""

    columns: tuple[str, ...]
    created: Callable[[float | None], str]
    widths: dict[str, int] = field(default_factory=dict)
    """Fixed content widths by column; the others fit their content. A DataTable column only ever
    grows (a sort arrow added to its label widened it at the next cell update): fixed ones don't."""

    @property
    def name_width(self) -> int | None:
        """Names longer than this are cut with an ellipsis; None: never."""
        return self.widths.get("name")


WIDE_FROM = 120
"""Terminal columns from which every column shows, with full timestamps and whole names (~112 with
a 20-character name, an 8-digit Slurm job id, a sort arrow and the vertical scrollbar)."""
NARROW_WIDTHS = {"mode": 6, "ranks": 5, "state": 13, "elapsed": 9, "created": 11}
"""Below WIDE_FROM: 'single', ranks to 99999, SUBMIT_FAILED, '100:00:00', '11-26 14:03'."""
NARROW_OTHERS = 6 + sum(width + 2 for width in NARROW_WIDTHS.values()) + 2 + 2
"""Below WIDE_FROM, the room all but the names take: the id column at its widest (ids to 9999, or
its label with the sort arrow), the fixed columns with their padding, the vertical scrollbar and
the name column's own padding. Names get the rest (16 characters at 80 columns)."""


def layout_for(width: int) -> TableLayout:
    if width >= WIDE_FROM:
        return TableLayout(tuple(key for key, _ in COLUMNS), clock)
    return TableLayout(("id", "name", "mode", "ranks", "state", "elapsed", "created"), short_clock,
                       {**NARROW_WIDTHS, "name": max(10, width - NARROW_OTHERS)})


def _name_cell(name: str, tags: str, width: int) -> Any:
    """The name, then its tags dimmed (so they show at 80 columns too; a column of their own would be
    the first cut), cut together to the column's width. A run without tags keeps the light PlainCell."""
    if not tags:
        return PlainCell(_cut(name, width))
    shown = _cut(f"{name}  {tags}", width)
    split = min(len(name), len(shown))
    return Text.assemble(printable(shown[:split]), (printable(shown[split:]), "dim"))


def _cut(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "…"

REBUILD_WHEN_REMOVING = 50
"""Removing more rows than this at once clears and refills the table instead."""

WELCOME = (
    "[b]No runs yet.[/]\n\n"
    "Press [b]d[/] to start a demo run on this machine: a tiny synthetic LLaMA, pipeline-parallel\n"
    "over 2 local ranks, no Slurm or SSH needed. You can watch it from submit to results.\n"
    "Press [b]n[/] for a new run on a configured cluster, [b]ctrl+p[/] for every command."
)


def _row_values(record: Any, now: float) -> dict[str, Any]:
    """Sortable values per column (the cell shows a formatted form of them), and the run's tags
    (no column of their own: shown after the name, and matched by the filter)."""
    return {
        "id": getattr(record, "id", 0) or 0,
        "name": getattr(record, "name", "") or "",
        "cluster": str(getattr(record, "cluster", "") or ""),
        "mode": getattr(record, "mode", "") or "",
        "ranks": ranks_of(record),
        "state": state_of(record),
        "job": getattr(record, "job_id", None) or "",
        "created": getattr(record, "created_at", None) or 0.0,
        "elapsed": elapsed_s(record, now) or 0.0,
        "tags": " ".join(f"#{tag}" for tag in getattr(record, "tags", ())),
    }


class RunsScreen(FocusesRun, Screen):
    """Every run; Enter opens one."""

    # At 80 columns the footer holds about six bindings: the ones a newcomer needs are shown, in
    # this order; the rest stay active and are listed in the keys panel (ctrl+p, "Keys").
    BINDINGS = [
        Binding("n", "app.new_run", "New run"),
        Binding("enter", "open_run", "Open", show=True),
        Binding("c", "cancel_run", "Cancel run"),
        Binding("v", "app.compare_runs", "Compare"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("r", "app.refresh_runs", "Refresh"),
        Binding("d", "app.demo_run", "Demo"),
        Binding("q", "app.quit", "Quit"),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_column = "id"
        self.sort_reverse = True
        self.filter_pattern: re.Pattern[str] | None = None
        self._shown_keys: list[str] | None = None
        """Row keys (run ids) in the order the table shows them."""
        self._shown_records: dict[str, Any] = {}
        """Row key -> the run snapshot its cells were drawn from."""
        self._offered_cancel: bool | None = None
        self._layout: TableLayout | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionBar("runs")
        yield Input(placeholder="filter runs: regex matched against each column  (/)", id="runs-filter")
        yield FieldError(id="runs-filter-error")
        yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(WELCOME, id="welcome")
        yield Footer(compact=True)  # about a third more bindings fit in 80 columns

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._set_layout(layout_for(self.app.size.width))
        table.focus()
        self.watch(self.app, "runs_version", self._redraw, init=True)
        self.set_interval(1.0, self._tick_elapsed)

    def on_resize(self, event: events.Resize) -> None:
        layout = layout_for(event.size.width)
        if layout != self._layout:
            selected = self.selected_run_id()
            self._set_layout(layout)
            self._redraw()
            table = self.query_one(DataTable)
            if selected is not None and str(selected) in table.rows:
                table.move_cursor(row=table.get_row_index(str(selected)))

    def _set_layout(self, layout: TableLayout) -> None:
        """Columns for `layout`, no rows: the next redraw fills them in its formats."""
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self._shown_records.clear()
        self._shown_keys = None
        labels = dict(COLUMNS)
        for key in layout.columns:
            table.add_column(labels[key], key=key, width=layout.widths.get(key))
        self._layout = layout

    # --- drawing -----------------------------------------------------------------------------

    def _visible_runs(self) -> list[tuple[Any, dict[str, Any]]]:
        now = time.time()
        rows = []
        for record in getattr(self.app, "runs", {}).values():
            values = _row_values(record, now)
            if self.filter_pattern is not None:
                search = self.filter_pattern.search
                if not any(search(str(value)) for value in values.values()):  # any column matches
                    continue
            rows.append((record, values))
        rows.sort(key=lambda item: item[1][self.sort_column], reverse=self.sort_reverse)
        return rows

    def _cells(self, values: dict[str, Any], record: Any) -> list[Any]:
        """The cells of the columns the layout shows, in its order."""
        # A str cell would be parsed as markup by DataTable: text cells are PlainCells (shown
        # literally, light by the thousand), numbers stay ints, the state a coloured Text.
        layout = self._layout
        assert layout is not None  # set at mount
        cells = {
            "id": values["id"],
            "name": _name_cell(values["name"], values["tags"], layout.name_width),
            "cluster": PlainCell(values["cluster"]),
            "mode": PlainCell(values["mode"]),
            "ranks": values["ranks"],
            "state": state_text(values["state"]),
            "job": PlainCell(values["job"] or "-"),
            "elapsed": PlainCell(duration(elapsed_s(record))),
            "created": PlainCell(layout.created(values["created"] or None)),
        }
        return [cells[key] for key in layout.columns]

    def _redraw(self, _version: int = 0) -> None:
        """Show `app.runs`. Rows are keyed by run id and kept between refreshes: only a row whose
        snapshot changed gets new cells, a new run is added and a vanished one removed, and the rows
        are re-sorted only when their order changed; the cursor stays on the run it was on. Only
        dropping many rows at once (a filter) rebuilds the table. With a thousand runs, rebuilding
        it every refresh kept the idle app at 24-32% CPU (bench_tui.py)."""
        table = self.query_one(DataTable)
        self._label_columns(table)
        rows = self._visible_runs()
        keys = [str(values["id"]) for _, values in rows]
        selected = self.selected_run_id()
        shown = self._shown_records
        wanted = set(keys)
        gone = [key for key in shown if key not in wanted]
        if len(gone) > REBUILD_WHEN_REMOVING:  # remove_row renumbers every row: one clear is cheaper
            table.clear()
            shown.clear()
            gone = []
        for key in gone:
            table.remove_row(key)
            del shown[key]
        order = [key for key in self._shown_keys or [] if key in shown]
        for record, values in rows:
            key = str(values["id"])
            old = shown.get(key)
            if old is record or old == record:
                continue  # the snapshot shown (elapsed ticks on its own)
            cells = self._cells(values, record)
            if old is None:
                table.add_row(*cells, key=key)
                order.append(key)
            else:
                for column, cell in zip(self._layout.columns, cells):
                    table.update_cell(key, column, cell, update_width=True)
            shown[key] = record
        if order != keys:
            position = {key: index for index, key in enumerate(keys)}
            table.sort("id", key=lambda cell: position[str(cell)])
        self._shown_keys = keys
        if selected is not None and str(selected) in table.rows:
            row = table.get_row_index(str(selected))
            if row != table.cursor_row:
                table.move_cursor(row=row)
        self._update_bindings()  # the selected run may have finished
        has_runs = bool(getattr(self.app, "runs", {}))
        self.query_one("#welcome").display = not has_runs and getattr(self.app, "service", None) is not None

    def _label_columns(self, table: DataTable) -> None:
        """The sort arrow on the sorted column's header."""
        changed = False
        for key, label in COLUMNS:
            column = table.columns.get(key)  # type: ignore[call-overload]
            if column is None:
                continue
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column else ""
            if column.label.plain != label + arrow:
                column.label = Text(label + arrow)
                changed = True
        if changed:
            table.refresh()

    def _tick_elapsed(self) -> None:
        table = self.query_one(RunsTable)
        for record in getattr(self.app, "runs", {}).values():
            key = str(getattr(record, "id", ""))
            if is_live(record) and key in table.rows:
                table.tick_cell(key, "elapsed", PlainCell(duration(elapsed_s(record))))  # re-renders its row only

    # --- actions -----------------------------------------------------------------------------

    def focused_run_id(self) -> int | None:
        return self.selected_run_id()

    def selected_run_id(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # cursor outside a refreshed table
            return None
        return int(key.value) if key and key.value else None

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(RunOpenRequested(int(event.row_key.value)))

    def action_open_run(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.post_message(RunOpenRequested(run_id))

    def action_cancel_run(self) -> None:
        run_id = self.selected_run_id()
        if run_id is not None:
            self.post_message(RunCancelRequested(run_id))

    def _cancel_offered(self) -> bool:
        record = getattr(self.app, "runs", {}).get(self.selected_run_id())
        return record is not None and not is_finished(record)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_run":  # offered for a run that can still be cancelled, not a finished one
            return self._cancel_offered()
        return True

    @on(DataTable.RowHighlighted)
    def _update_bindings(self) -> None:
        # Only when it changes: refreshing the bindings redraws the footer, and every poll of a
        # live run redraws the list (it kept the idle app at ~4% CPU, bench_tui.py).
        offered = self._cancel_offered()
        if offered != self._offered_cancel:
            self._offered_cancel = offered
            self.refresh_bindings()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = key, False
        self._redraw()

    def action_cycle_sort(self) -> None:
        keys = list(self._layout.columns if self._layout else (key for key, _ in COLUMNS))  # the shown ones
        after = keys.index(self.sort_column) + 1 if self.sort_column in keys else 0
        self.sort_column = keys[after % len(keys)]
        self.sort_reverse = False
        self._redraw()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._redraw()

    def action_focus_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        error = self.query_one("#runs-filter-error", FieldError)
        try:
            self.filter_pattern = re.compile(event.value, re.IGNORECASE) if event.value else None
            error.show("")
        except re.error as exc:
            error.show(f"not a valid regular expression: {exc}")
            return
        self._redraw()

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self) -> None:
        self.query_one(DataTable).focus()
