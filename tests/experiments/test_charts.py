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
