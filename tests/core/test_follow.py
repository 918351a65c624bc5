"""follow_then_drain: the one loop deciding when a log stream has said everything."""

from __future__ import annotations

import threading
import time

import pytest

from remote.cluster import LogChunk
from tui.core.logs.follow import follow_then_drain


class Stream:
    """A log stream like `Dinf.stream_logs`: batches at a poll interval, empty when nothing is new."""

    def __init__(self, script: list[list[str]], poll_s: float = 0.02) -> None:
        self.script = list(script)
        self.poll_s = poll_s
        self.closed = threading.Event()

    def __iter__(self):
        try:
            while True:
                time.sleep(self.poll_s)
                lines = self.script.pop(0) if self.script else []
                yield [_chunk(lines)]
        finally:
            self.closed.set()


def _chunk(lines: list[str]) -> LogChunk:
    return LogChunk(path="rank0.log", offset=0, end_offset=0, lines=lines)


def _lines(batches) -> list[str]:
    return [line for batch in batches for chunk in batch for line in chunk.lines]


def test_without_follow_it_stops_at_the_first_quiet_period():
    stream = Stream([["a"], ["b"]])
    started = time.monotonic()
    assert _lines(follow_then_drain(iter(stream), quiet_s=0.2)) == ["a", "b"]
    assert time.monotonic() - started < 2
    assert stream.closed.wait(2)  # the reader closed the stream (channels, files)


def test_following_reads_on_after_the_end_until_a_quiet_period():
    asked = threading.Event()

    def finished() -> bool:  # the run has ended by the time anyone asks
        assert not asked.is_set(), "asked twice (for the CLI each ask polls the cluster)"
        asked.set()
        return True

    def stream():
        for lines in (["a"], ["b"]):
            yield [_chunk(lines)]
        while not asked.wait(0.01):  # quiet until the loop has seen the run end...
            yield [_chunk([])]
        yield [_chunk([])]
        yield [_chunk(["late"])]  # ...then the exiting ranks' last lines
        while True:
            time.sleep(0.01)
            yield [_chunk([])]

    got = _lines(follow_then_drain(stream(), quiet_s=0.2, finished=finished))
    assert got == ["a", "b", "late"]


def test_following_never_stops_while_the_run_is_live():
    stream = Stream([], poll_s=0.01)
    stop_at = time.monotonic() + 0.5
    batches = follow_then_drain(iter(stream), quiet_s=0.05, finished=lambda: False,
                                stopped=lambda: time.monotonic() > stop_at)
    assert _lines(batches) == []
    assert time.monotonic() >= stop_at  # only `stopped` ended it


def test_an_error_of_the_stream_reaches_the_consumer():
    def broken():
        yield [_chunk(["first"])]
        raise ConnectionError("ssh channel closed")

    batches = follow_then_drain(broken(), quiet_s=1.0, finished=lambda: False)
    assert _lines([next(batches)]) == ["first"]
    with pytest.raises(ConnectionError, match="channel closed"):
        next(batches)
