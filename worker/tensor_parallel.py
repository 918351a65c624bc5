"""Tensor parallel: each rank holds a shard of every layer and the ranks sum their partial results.

* `fast` (`shard_fast_stage`): the fast stage loaded with this rank's heads of q/k/v/o and its slice
  of gate/up/down (`worker/llama.py` does the slicing at load); an all-reduce after the attention
  output projection and after the down projection. Under `torch.compile` the all-reduce is a
  functional collective, so it is traced into the layer and captured in the CUDA graph with it.
* `reference` (`shard_with_deepspeed`): DeepSpeed AutoTP (`init_inference`) on the HF model, kept so
  users can compare the two. Its fp16 cast also casts the rotary `inv_freq` buffer, which moves cos by
  up to 0.035 at position 180; the rotary module is rebuilt in fp32 afterwards, as HF keeps it.
"""

from __future__ import annotations

import os

import torch

from worker.llama import no_reduce

__all__ = ["all_reduce_fn", "no_reduce", "shard_with_deepspeed"]


def all_reduce_fn(group, traced: bool):
    """The `reduce` a fast tp stage calls on its partial sums."""
    import torch.distributed as dist

    if traced:
        from torch.distributed import _functional_collectives as funcol

        def reduce_traced(t: torch.Tensor) -> torch.Tensor:
            return funcol.all_reduce(t, "sum", group)

        return reduce_traced

    def reduce_eager(t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t, group=group)
        return t

    return reduce_eager


def shard_with_deepspeed(model, dtype: torch.dtype, device: torch.device, world_size: int, backend: str | None):
    """DeepSpeed AutoTP shards of an HF `LlamaForCausalLM` (on the CPU), moved to `device`."""
    if device.type == "cpu" and "LOCAL_SIZE" not in os.environ:
        # DeepSpeed's CPU shm all-reduce JIT-compiles for 30-40 s, leaks /dev/shm, and segfaults
        # without LOCAL_SIZE; plain gloo all-reduce is exact and needs none of that.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    import deepspeed
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    deepspeed.init_distributed(dist_backend=backend or "gloo")
    engine = deepspeed.init_inference(
        model,
        tensor_parallel={"tp_size": world_size},
        dtype=dtype,
        replace_with_kernel_inject=False,
    )
    module = engine.module
    # init_inference(dtype=fp16) cast inv_freq too: rebuild it in fp32 (made on the CPU, moved below).
    with torch.device("cpu"):
        module.model.rotary_emb = LlamaRotaryEmbedding(module.config)
    module.to(device)
    return module
