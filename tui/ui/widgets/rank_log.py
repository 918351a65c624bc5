"""A bounded, filterable, searchable log view over a `LogBuffer` (tui.core.logs.buffers) that lives outside it.

The buffer keeps the newest `max_lines` lines (a deque), so a run printing millions of lines stays
bounded in memory, and it exists before its tab is mounted (tabs are lazy): lines that arrive
while a tab is hidden are there when it opens. Appending is O(lines) at C speed and the widget
renders only the rows on screen, which is what keeps frames short at 100k lines/s.
"""

from __future__ import annotations

import re

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.core.logs.buffers import LogBuffer


class RankLog(ScrollView, can_focus=True):
    """Shows a LogBuffer; follows the tail while `follow` is on; highlights `search` matches."""

    DEFAULT_CSS = """
    RankLog {
        background: $surface;
        overflow-y: scroll;
        overflow-x: auto;
    }
    RankLog:focus { background-tint: $foreground 5%; }
    """

    follow: reactive[bool] = reactive(True)
    search: reactive[re.Pattern[str] | None] = reactive(None, always_update=True)

    def __init__(self, buffer: LogBuffer, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.buffer = buffer
        self._match_style = Style(reverse=True, bold=True)
        self._style: Style | None = None
        """rich_style walks the DOM; computed once per style change, not once per row."""

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style = None

    def on_mount(self) -> None:
        self.lines_changed()

    def lines_changed(self) -> None:
        """Call after the buffer grew (or its filter changed): resize, and follow the tail."""
        visible = self.buffer.visible
        size = Size(self.buffer.width, len(visible))
        if size.width == self.virtual_size.width:
            # Only the height grew: the vertical bar is always shown (overflow-y: scroll), so no
            # layout can change. Assigning `virtual_size` would re-lay the whole screen (it is a
            # layout reactive) on every batch; updating the scrollbars is all that is needed.
            self.set_reactive(RankLog.virtual_size, size)
            self._scroll_update(size)
        else:
            self.virtual_size = size
        if self.follow:
            self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.refresh()

    class FollowChanged(Message):
        """The view started or stopped following new lines (a key, or the user scrolling back)."""

        def __init__(self, follow: bool) -> None:
            super().__init__()
            self.follow = follow

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.scroll_end(animate=False, x_axis=False)
        self.post_message(self.FollowChanged(follow))  # the screen's following/paused label

    def watch_search(self) -> None:
        self.refresh()

    def on_mouse_scroll_up(self) -> None:  # the user scrolled back: stop following
        self.follow = False

    def action_scroll_up(self) -> None:
        self.follow = False
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.follow = False
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self.follow = False
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.follow = True
        super().action_scroll_end()

    def find_next(self, *, backwards: bool = False) -> bool:
        """Scroll to the next line matching `search` below (or above) the top row; False if none."""
        if self.search is None:
            return False
        visible = self.buffer.visible
        start = int(self.scroll_y)
        indices = range(start - 1, -1, -1) if backwards else range(start + 1, len(visible))
        for index in indices:
            if self.search.search(visible[index]):
                self.follow = False
                self.scroll_to(y=index, animate=False)
                return True
        return False

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if self._style is None:
            self._style = self.rich_style
        style = self._style
        visible = self.buffer.visible
        if index >= len(visible):
            return Strip.blank(width, style)
        line = visible[index]
        segments = self._segments(line, style)
        strip = Strip(segments).crop_extend(scroll_x, scroll_x + width, style)
        return strip.apply_offsets(scroll_x, index)

    def _segments(self, line: str, style: Style) -> list[Segment]:
        if self.search is None:
            return [Segment(line, style)]
        segments: list[Segment] = []
        position = 0
        highlight = style + self._match_style
        for match in self.search.finditer(line):
            start, end = match.span()
            if start == end:
                continue
            if start > position:
                segments.append(Segment(line[position:start], style))
            segments.append(Segment(line[start:end], highlight))
            position = end
        if position < len(line):
            segments.append(Segment(line[position:], style))
        return segments or [Segment("", style)]
