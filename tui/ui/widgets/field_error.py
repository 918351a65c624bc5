"""The message under a field at fault: hidden while empty, so a valid form stays compact.

Messages may quote what came back from a cluster (a submit's error): shown as plain text.
"""

from __future__ import annotations

from textual.widgets import Static

from tui.display.runs import plain


class FieldError(Static):
    DEFAULT_CSS = """
    FieldError { color: $error; height: auto; display: none; }
    FieldError.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, classes="field-error", markup=False)

    def show(self, message: str) -> None:
        self.update(plain(message, multiline=True))
        self.set_class(bool(message), "-shown")
