"""Text that changes often inside a box whose size CSS fixes: updating it repaints, never re-lays out.

`Static.update` asks for a layout pass of the whole screen, which on the run screen costs tens of
milliseconds; the header, elapsed time and rank details change every second, so they use this.
Give it a fixed height (and width or `1fr`) in CSS; text beyond the box is cropped.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class FixedText(Widget):
    DEFAULT_CSS = """
    FixedText { height: 1; }
    """

    def __init__(self, markup: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._markup = markup
        self._text = Text.from_markup(markup)

    @property
    def markup(self) -> str:
        return self._markup

    def update(self, markup: str) -> None:
        if markup != self._markup:
            self._markup = markup
            self._text = Text.from_markup(markup)
            self.refresh()

    def render(self) -> Text:
        return self._text
