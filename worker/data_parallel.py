"""Data parallel: every replica holds the whole model and runs a contiguous shard of the requests.

Replicas pad every batch to the widest prompt of the whole run, so a batch is the same computation
(the same shapes, the same captured graphs) whatever the shard it came from. No communication during
decoding; the runner gathers the replicas' outputs at the end of each measurement.
"""

from __future__ import annotations


def shard(num_requests: int, replicas: int, replica: int) -> tuple[int, int]:
    """(first request index, count) of `replica`'s contiguous share; earlier replicas take the remainder."""
    base, extra = divmod(num_requests, replicas)
    first = replica * base + min(replica, extra)
    return first, base + (1 if replica < extra else 0)


def common_width(request_ids: list[list[int]]) -> int:
    """The width every replica pads its batches to: the longest prompt of the run."""
    return max(len(ids) for ids in request_ids)
