"""The line at the top of every screen: each cluster's connection state, and the screen's title.

It reads `app.connections` (`tui.core.connection.Connections`) whenever `app.connections_version`
changes, so it is always current on whichever screen is showing.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from tui.display.runs import printable

STATE_MARKS = {  # state -> (mark, its style, words)
    "local": ("●", "green", "local"),
    "connected": ("●", "green", "connected"),
    "idle": ("○", "dim", "not connected yet"),
    "connecting": ("◌", "yellow", "connecting"),
    "reconnecting": ("◌", "yellow", "reconnecting"),
    "failed": ("✖", "red", "failed"),
    "refused": ("✖", "red", "host key refused"),
}


class ConnectionBar(Static):
    """`dinf · <title> · cluster ● state · ...`"""

    DEFAULT_CSS = """
    ConnectionBar { dock: top; height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    def __init__(self, title: str) -> None:
        super().__init__(id="connection-bar")
        self.title_text = title

    def on_mount(self) -> None:
        self.watch(self.app, "connections_version", self._redraw, init=True)

    def _redraw(self, _version: int = 0) -> None:
        # Cluster names and details (error text) come from outside: Content(...) is plain text, so
        # they are assembled around the marks, never parsed as markup.
        connections = self.app.connections
        parts = [Content.assemble(("dinf", "bold"), " · ", printable(self.title_text))]
        if not connections:
            parts.append(Content.assemble(("opening the database…", "dim")))
        for cluster, link in connections.items():
            state, detail = link.state, link.detail
            mark, style, words = STATE_MARKS.get(state, ("", "", state))
            text = Content.assemble(printable(cluster), " ", (mark, style), " " if mark else "", printable(words))
            if detail and state not in ("connected", "local"):
                text = Content.assemble(text, " ", (printable(f"({detail})"), "dim"))
            parts.append(text)
        self.update(Content("  ·  ").join(parts))
