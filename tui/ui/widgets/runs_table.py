"""The runs list's table: a DataTable whose elapsed clocks tick without re-rendering every row.

Textual's DataTable keys all its render caches on one update counter, so changing one cell (a live
run's elapsed time, every second) renders every visible cell again: with a thousand runs that alone
kept the idle app at ~6% CPU (tests/benchmarks/bench_tui.py). `tick_cell` changes a cell and drops
only its row's cached renders. It relies on DataTable's private caches (textual 8, pinned below 9);
tests/tui/test_large_history.py checks that a tick shows and renders only its row again.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from tui.display.runs import printable


class PlainCell:
    """A cell of text from outside dinf, light to keep by the thousand.

    DataTable shows a cell that is neither a str (parsed as markup) nor a Rich renderable as
    `Text(str(cell))`: literally, and built only for the rows on screen. A thousand runs kept as
    `Text` cells, each with its own span list, held ~2 MB of dinf-tui's RSS (bench_tui.py).
    """

    __slots__ = ("plain",)

    def __init__(self, text: object) -> None:
        self.plain = printable(text)
        """What the cell shows (as `Text.plain` reads): control characters made visible."""

    def __str__(self) -> str:
        return self.plain

    def __repr__(self) -> str:
        return f"PlainCell({self.plain!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlainCell) and other.plain == self.plain

    def __hash__(self) -> int:
        return hash(self.plain)


class RunsTable(DataTable):
    """A DataTable with a cheap way to change one cell whose width stays the same, and no
    renderables kept for rows that are not on screen."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        # Measuring new rows builds every cell's renderable and caches it by row: after the first
        # listing of a thousand runs that cache held 9,000 Texts no frame would ever draw (~1.8 MB).
        # The rows on screen build theirs again at the next frame.
        self._row_renderable_cache.clear()

    def tick_cell(self, row_key: str, column_key: str, value: Text | PlainCell) -> None:
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
