"""The message under a field at fault: hidden while empty, so a valid form stays compact."""

from __future__ import annotations

from textual.widgets import Static


class FieldError(Static):
    DEFAULT_CSS = """
    FieldError { color: $error; height: auto; display: none; }
    FieldError.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, classes="field-error", markup=False)

    def show(self, message: str) -> None:
        self.update(message)
        self.set_class(bool(message), "-shown")
