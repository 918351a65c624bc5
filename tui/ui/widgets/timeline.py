"""`PipelineTimeline`: a profiled run's few decode steps per rank, drawn to the widget's width.

The drawing and the bubble fraction are `tui.studies.timeline.render`'s; this widget only redraws it when
its width changes. Text from the run (its name in the title) is never read as markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.display.runs import printable
from tui.studies.timeline import Timeline, render


class PipelineTimeline(Static):
    """Hidden until `show` gets a timeline; then one row per rank, the axis and the key."""

    DEFAULT_CSS = """
    PipelineTimeline { height: auto; margin-top: 1; display: none; }
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("", *args, **kwargs)
        self.timeline: Timeline | None = None
        self.title = ""

    def show(self, timeline: Timeline | None, title: str = "") -> None:
        self.timeline, self.title = timeline, title
        self.display = timeline is not None
        self.refresh(layout=True)

    def render(self) -> Text:
        if self.timeline is None:
            return Text("")
        width = self.size.width or 80
        return Text(render(self.timeline, width, title=printable(self.title)))
