"""Turning growing files into `LogChunk`s of complete lines, from byte offsets (both backends).

What it does: given a way to read a file from an offset (SFTP on the cluster, `open()` locally),
polls every path, delivers only complete lines, and advances each path's offset past exactly what
it delivered — so a consumer that restarts from the last offsets it saw gets no line twice and
misses none. Files that don't exist yet are simply polled until they do.

What it doesn't: reconnect (the reader does: `SshConnection.read_from` heals itself) or decide
which files to follow (the caller passes paths).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from remote.cluster import LogChunk

MAX_READ = 1 << 20
"""Bytes read per file per poll; a line longer than this is delivered in pieces."""

ReadFrom = Callable[[str, int], "bytes | None"]
SizeOf = Callable[[str], "int | None"]
"""A file's size in bytes; None if it doesn't exist yet."""


def complete_lines(path: str, offset: int, data: bytes, *, force: bool = False) -> LogChunk | None:
    """The complete lines at the start of `data` (read from `offset`); None if there is none yet.

    `force` delivers a newline-less tail too (a read that filled its whole buffer).
    """
    end = data.rfind(b"\n")
    if end < 0:
        if not (force and data):
            return None
        end = len(data) - 1
        body = data
        text_lines = [body.decode("utf-8", "replace")]
    else:
        body = data[: end + 1]
        text_lines = body.decode("utf-8", "replace").split("\n")[:-1]
    lines = [line[:-1] if line.endswith("\r") else line for line in text_lines]
    return LogChunk(path=path, offset=offset, end_offset=offset + len(body), lines=lines)


def follow(
    read_from: ReadFrom,
    paths: list[str],
    offsets: dict[str, int] | None = None,
    *,
    poll_s: float = 0.2,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    tail_bytes: int | None = None,
    size_of: SizeOf | None = None,
) -> Iterator[list[LogChunk]]:
    """Yield one batch per poll: the new complete lines of every path (an empty batch when none).

    Empty batches let a consumer check for cancellation; it stops the stream by closing the
    generator or setting `stop`.

    `tail_bytes` (with `size_of`): a path without an offset starts at most this many bytes before
    its end, at the next line start, so opening a run whose log holds millions of lines reads the
    last few MB, not the whole file. Chunks then start past 0: their `offset` says what was skipped.
    """
    given = offsets or {}
    positions = {path: given.get(path, 0) for path in paths}
    to_tail = {p for p in paths if p not in given} if tail_bytes is not None and size_of is not None else set()
    aligning: set[str] = set()
    """Paths that start mid-line: skip to the first newline before delivering anything."""
    while stop is None or not stop.is_set():
        batch = []
        for path in paths:
            if path in to_tail and size_of is not None and tail_bytes is not None:
                size = size_of(path)
                if size is None:  # not there yet: it will be read from its start once it is
                    continue
                to_tail.discard(path)
                if size > tail_bytes:
                    # One byte early: if it is a newline, the line after it is delivered whole.
                    positions[path] = size - tail_bytes - 1
                    aligning.add(path)
            while True:  # drain: a file may hold more than one read's worth
                data = read_from(path, positions[path])
                if not data:
                    break
                full = len(data) >= MAX_READ
                if path in aligning:
                    cut = data.find(b"\n")
                    skipped = len(data) if cut < 0 else cut + 1
                    positions[path] += skipped
                    data = data[skipped:]
                    if cut >= 0:
                        aligning.discard(path)
                    if not data:
                        if full:
                            continue
                        break
                chunk = complete_lines(path, positions[path], data, force=full)
                if chunk is None:
                    break
                positions[path] = chunk.end_offset
                batch.append(chunk)
                if not full:
                    break
        yield batch
        if not batch:
            sleep(poll_s)
