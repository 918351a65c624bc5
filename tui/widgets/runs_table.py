"""The runs list's table: a DataTable whose elapsed clocks tick without re-rendering every row.

Textual's DataTable keys all its render caches on one update counter, so changing one cell (a live
run's elapsed time, every second) renders every visible cell again: with a thousand runs that alone
kept the idle app at ~6% CPU (tests/benchmarks/bench_tui.py). `tick_cell` changes a cell and drops
only its row's cached renders. It relies on DataTable's private caches (textual 8, pinned below 9);
tests/tui/test_large_history.py checks that a tick shows and renders only its row again.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey


class RunsTable(DataTable):
    """A DataTable with a cheap way to change one cell whose width stays the same."""

    def tick_cell(self, row_key: str, column_key: str, value: Text) -> None:
        """Set a cell (like `update_cell` without a width update) and re-render only its row."""
        row, column = RowKey(row_key), ColumnKey(column_key)
        if row not in self._row_locations or column not in self._column_locations:
            return
        self._data[row][column] = value
        index = self.get_row_index(row)
        self._row_renderable_cache.discard((self._update_count, index))  # the row's cell values
        for cache in (self._cell_render_cache, self._row_render_cache):
            for key in [key for key in cache.keys() if key[0] == row]:  # noqa: SIM118 (an LRUCache, no __iter__)
                cache.discard(key)
        self._line_cache.clear()  # screen lines are re-joined from the cached rows: cheap
        self.refresh_row(index)
