"""Chart choices that hold whatever the data (the charts themselves are drawn by plotext)."""

from __future__ import annotations

from tui.studies import charts
from tui.studies.analysis import Point


def _point(label: str, batch: int, tok_s: float) -> Point:
    return Point(run_id=1, label=label, mode="pp", num_gpus=2, num_nodes=1, batch_size=batch, num_requests=8,
                 output_tokens=64, wall_s=1.0, output_tok_s=tok_s)


def test_the_batch_axis_is_log2_even_for_a_short_sweep():
    """1, 2, 4 on a linear axis squeezed into its left part; a log2 axis spaces them evenly."""
    for sizes in ((1, 2, 4), (1, 2, 4, 8, 16, 32, 64), (3, 6)):
        chart = charts.throughput_vs_batch({"pp": [_point("pp", b, 10.0 * b) for b in sizes]})
        assert chart.log_x, sizes
        assert chart.xticks == tuple(sizes)
        assert "batch size" in charts.render(chart, width=60)
    single = charts.throughput_vs_batch({"pp": [_point("pp", 8, 80.0)]})
    assert not single.log_x  # one batch size: nothing to space


def _plot_area(text: str) -> str:
    """The canvas rows only (between the frame's top and bottom), without the axes' tick labels."""
    rows = text.splitlines()
    top = next(i for i, row in enumerate(rows) if "┌" in row)
    bottom = next(i for i, row in enumerate(rows) if "└" in row)
    inside = []
    for row in rows[top + 1:bottom]:
        left = min(i for i in (row.find("┤"), row.find("│")) if i >= 0)
        inside.append(row[left + 1:].rstrip().removesuffix("│"))
    return "\n".join(inside)


def test_series_on_the_same_points_are_marked_and_named():
    """dp2 gives exactly single's numbers: drawn last, its line used to hide single's entirely. The
    shared points get their own marker and the key says who lies under whom, and where."""
    sizes = (1, 2, 4, 8)
    chart = charts.throughput_vs_batch({
        "single": [_point("single", b, 10.0 * b) for b in sizes],
        "dp2": [_point("dp2", b, 10.0 * b + 1e-12) for b in sizes],  # float noise is still the same point
        "pp2": [_point("pp2", b, 40.0 if b == 4 else 5.0 * b) for b in sizes],
    })
    assert charts.meetings(chart.series) == [
        charts.Meeting(("dp2", "single"), sizes, (10.0, 20.0, 40.0, 80.0), True),
        charts.Meeting(("pp2", "dp2", "single"), (4,), (40.0,), False)]
    text = charts.render(chart, width=100)
    assert "  ≡ on the same points: dp2 = single at every point; pp2 = dp2 = single at batch size = 4" in text
    canvas = _plot_area(text)
    assert canvas.count(charts.OVERLAP_MARKER) == len(sizes)  # one per shared point
    assert "x" in canvas and "+" in canvas  # dp2's and pp2's own lines still show between them


def test_series_that_never_meet_get_no_note():
    chart = charts.throughput_vs_batch({"single": [_point("single", b, 10.0 * b) for b in (1, 2, 4)],
                                        "pp2": [_point("pp2", b, 11.0 * b) for b in (1, 2, 4)]})
    assert charts.meetings(chart.series) == []
    text = charts.render(chart)
    assert charts.OVERLAP_MARKER not in text and "on the same points" not in text


def test_a_reference_line_never_hides_a_series_on_it():
    """dp's efficiency is exactly the ideal 1.0: the ideal is drawn first, so dp's line shows (it used
    to vanish under the ideal's dots) and the note says the ideal lies under it."""
    from tui.studies.analysis import ScalingRow

    def row(gpus: int, efficiency: float) -> ScalingRow:
        point = Point(run_id=gpus, label="dp", mode="dp", num_gpus=gpus, num_nodes=1, batch_size=8,
                      num_requests=8, output_tokens=64, wall_s=1.0, output_tok_s=100.0 * gpus * efficiency)
        return ScalingRow(point=point, n=gpus, speedup=gpus * efficiency, efficiency=efficiency,
                          throughput_scaling=efficiency, memory_ratio=None)

    chart = charts.efficiency_vs_gpus({"dp": [row(2, 1.0), row(4, 1.0)], "pp": [row(2, 0.7), row(4, 0.5)]})
    text = charts.render(chart, width=60)
    assert "  ≡ on the same points: dp = ideal (1.0) at every point" in text
    dp_marker = next(s.marker for s in chart.series if s.label == "dp")
    ideal_row = next(line for line in _plot_area(text).splitlines() if charts.OVERLAP_MARKER in line)
    assert dp_marker in ideal_row and charts.IDEAL_MARKER not in ideal_row  # dp over the ideal, 2 to 4
