"""Which layers each pipeline stage holds: contiguous, balanced ranges (or the spec's own split).

Shared by both implementations (`worker/llama.py` and `worker/reference_model.py`); no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


def split_layers(num_layers: int, num_stages: int, sizes: list[int] | None = None) -> list[tuple[int, int]]:
    """Contiguous [first, last) layer ranges per stage; balanced (earlier stages take the remainder)."""
    if num_stages < 1 or num_stages > num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {num_stages} stages")
    if sizes is None:
        base, extra = divmod(num_layers, num_stages)
        sizes = [base + (1 if s < extra else 0) for s in range(num_stages)]
    if len(sizes) != num_stages or sum(sizes) != num_layers or min(sizes) < 1:
        raise ValueError(f"layer split {sizes} does not cover {num_layers} layers in {num_stages} stages")
    ranges, start = [], 0
    for n in sizes:
        ranges.append((start, start + n))
        start += n
    return ranges


@dataclass(frozen=True)
class StagePlan:
    """Which part of the model a stage holds."""

    first_layer: int
    last_layer: int  # exclusive
    is_first: bool
    is_last: bool

    @classmethod
    def for_stage(cls, num_layers: int, stage: int, num_stages: int, sizes: list[int] | None = None) -> StagePlan:
        first, last = split_layers(num_layers, num_stages, sizes)[stage]
        return cls(first, last, stage == 0, stage == num_stages - 1)

    @classmethod
    def whole(cls, num_layers: int) -> StagePlan:
        return cls(0, num_layers, True, True)
