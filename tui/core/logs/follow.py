"""Follow a run's log stream, then drain it: the one loop behind the app's tail and `dinf logs [-f]`.

`Dinf.stream_logs` yields batches of new lines forever (it cannot know when a run's last line has
been written). This decides when to stop:

- following (`finished` given): keep reading while the run is live; once `finished()` says it ended,
  read on until `quiet_s` passes with nothing new, so the last lines (flushed as the ranks exit)
  arrive before the loop ends;
- not following (`finished` is None): stop at the first `quiet_s` without new lines (what is there now);
- `stopped()` ends it at once (the app quitting, a closed screen).

The stream is read on its own thread so a blocking read never delays these decisions, through a
bounded queue so a slow consumer (the app's UI under 100k lines/s) pushes back on the reader. The
reader closes the stream itself (SSH channels, file handles) when it stops. `finished()` is only
asked after a quiet period: for the CLI it polls the cluster.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from remote.cluster import LogChunk

POLL_S = 0.2
"""How often a quiet stream is checked for the stop conditions."""
MAX_QUEUED = 8
"""Batches read ahead of the consumer before the reader waits."""

_END = object()


def follow_then_drain(
    stream: Iterator[list[LogChunk]],
    *,
    quiet_s: float,
    finished: Callable[[], bool] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[list[LogChunk]]:
    """Batches holding new lines (chunks without lines left out), until the rules above say stop.

    An error of the stream is raised here, in the consumer's thread."""
    batches: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
    done = threading.Event()

    def read() -> None:
        try:
            for batch in stream:
                if done.is_set():
                    break
                _put(batches, batch, done)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            _put(batches, exc, done)
        finally:
            close = getattr(stream, "close", None)  # a generator, or a backend's stream object
            if close is not None:
                close()
        _put(batches, _END, done)

    threading.Thread(target=read, name="dinf-log-reader", daemon=True).start()
    last_new = time.monotonic()
    ended_seen_at: float | None = None
    try:
        while not stopped():
            try:
                batch = batches.get(timeout=POLL_S)
            except queue.Empty:
                batch = []
            if batch is _END:
                return
            if isinstance(batch, Exception):
                raise batch
            fresh = [chunk for chunk in batch if chunk.lines]
            if fresh:
                last_new = time.monotonic()
                yield fresh
                continue
            if time.monotonic() - last_new < quiet_s:
                continue
            if finished is None or ended_seen_at is not None:
                return
            if finished():
                ended_seen_at = last_new = time.monotonic()  # one more quiet period for the last lines
    finally:
        done.set()


def _put(batches: queue.Queue, item: object, done: threading.Event) -> None:
    """Queue `item`, waiting while the consumer is behind; give up once it has stopped reading."""
    while not done.is_set():
        try:
            batches.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue
