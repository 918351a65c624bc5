"""Text that changes often inside a box whose size CSS fixes: updating it repaints, never re-lays out.

`Static.update` asks for a layout pass of the whole screen, which on the run screen costs tens of
milliseconds; the header, elapsed time and rank details change every second, so they use this.
Give it a fixed height (and width or `1fr`) in CSS; text beyond the box is cropped.

It never parses markup: a `str` is shown as written (it may hold a remote error message), and
styled text comes as a `rich.text.Text` built by the caller (`tui.display.runs.plain`).
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tui.display.runs import plain


class FixedText(Widget):
    DEFAULT_CSS = """
    FixedText { height: 1; }
    """

    def __init__(self, text: str | Text = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = _as_text(text)

    @property
    def text(self) -> Text:
        return self._text

    def update(self, text: str | Text) -> None:
        new = _as_text(text)
        if new != self._text:
            self._text = new
            self.refresh()

    def render(self) -> Text:
        return self._text


def _as_text(text: str | Text) -> Text:
    return text if isinstance(text, Text) else plain(text, multiline=True)
