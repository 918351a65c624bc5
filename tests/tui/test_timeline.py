"""The pipeline timeline: the bubble fraction measured from spans, and the widget drawn at 80x24 and
160x45 (SVG snapshots) from the timeline a real 2-process pp run on CPU recorded
(`timeline_pp2_cpu.json`: tests/worker/test_trace.py's run, its result.json `timeline` kept as is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from tui.studies.timeline import (
    RankSpans,
    Timeline,
    bubble_fraction,
    first_timeline,
    render,
    shares,
    timeline_from,
)
from tui.ui.widgets.timeline import PipelineTimeline

RECORDED = json.loads((Path(__file__).parent / "timeline_pp2_cpu.json").read_text())


def test_bubble_is_the_share_of_the_window_not_computing():
    # 10 ms window: compute 0-2, recv 2-6, idle 6-7, send 7-8, compute 8-10 -> computing 40%
    rank = RankSpans(0, (("compute", 0.0, 0.002), ("recv", 0.002, 0.006), ("send", 0.007, 0.008),
                         ("compute", 0.008, 0.010)))
    assert bubble_fraction(rank, 0.010) == pytest.approx(0.6)
    split = shares(rank, 0.010)
    assert split["recv"] == pytest.approx(0.4) and split[None] == pytest.approx(0.1)


def test_the_innermost_span_decides_where_spans_nest():
    # tp: an all-reduce inside the forward is communication, not compute
    rank = RankSpans(1, (("compute", 0.0, 0.010), ("comm", 0.004, 0.006)))
    assert bubble_fraction(rank, 0.010) == pytest.approx(0.2)
    text = render(Timeline(1, 0.010, 1, (rank,)), 40)
    assert "rank 1 |" in text and "=" in text and "bubble  20%" in text


def test_rows_fit_the_width_and_every_rank_states_its_bubble():
    timeline = timeline_from(RECORDED["timeline"])
    for width in (80, 160):
        lines = render(timeline, width, title="pp x2, batch 4").splitlines()
        assert all(len(line) <= width for line in lines), [len(line) for line in lines]
        rows = [line for line in lines if line.startswith("rank ")]
        assert [r[:6] for r in rows] == ["rank 0", "rank 1"]
        assert all(r.endswith("%") and "bubble" in r for r in rows)
    # result.json records and storage rows (raw_json) are both read
    assert first_timeline([RECORDED])[0] == 4
    assert first_timeline([{"batch_size": 4, "raw_json": json.dumps(RECORDED)}])[1] == timeline
    assert first_timeline([{"batch_size": 1, "raw_json": "{}"}]) is None and timeline_from({"ranks": []}) is None


class TimelineApp(App):
    def compose(self) -> ComposeResult:
        yield PipelineTimeline(id="timeline")

    def on_mount(self) -> None:
        self.query_one(PipelineTimeline).show(timeline_from(RECORDED["timeline"]), "pp x2 [b]on CPU[/b], batch 4")


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_timeline_snapshot(snap_compare, size):
    # the title holds markup-like text: it is shown as written, never parsed
    assert snap_compare(TimelineApp(), terminal_size=size)
