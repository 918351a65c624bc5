"""Weight-only quantization of the fast stage's matmul weights: int8 per output channel, int4 per group of 128.

The four matmul weights of every layer and the LM head are quantized at load, on this rank's device,
after tensor-parallel slicing, so each rank reads and converts only its own tensors. Embeddings and
norms stay in the run's dtype (a lookup reads one row per token; quantizing it saves no bandwidth).

* `int8`: symmetric, one scale per output channel (row): W = q * scale.
* `int4`: asymmetric, one (scale, minimum) pair per row and 128 input columns: W = nibble * scale +
  minimum. Input widths that are not a multiple of 128 (OpenLLaMA-3B's 8,640) are zero-padded.

On CUDA, int8 runs through dinf's Triton kernel (`worker/quant_kernels.py`: int8 tiles converted in
registers, never written back dequantized) and int4 through torch core's tinygemm kernel
(`aten._weight_int4pack_mm`, which torchao's default int4 layout also calls; it takes bf16
activations, so each matmul casts in and out). Both were chosen by the kernel table of
tests/benchmarks/gpu_quant.py on H200, against torch.compile's fused conversion for int8 and a Triton
int4 kernel of dinf's own. On CPU int8 converts and multiplies (correct, slow; what CI exercises);
int4 is refused there.

A quantized weight is a small named tuple of tensors; `matmul` and `gemv` dispatch on its type, so
`worker/llama.py`'s layer function stays one function of tensors that the compiler traces whole.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

INT4_GROUP = 128
INT4_INNER_K_TILES = 8  # tinygemm's tile layout: the input width must be a multiple of 8 * 16


class QuantError(ValueError):
    """A scheme `quantize` does not know (the spec's checks refuse it first)."""


class Int8Weight(NamedTuple):
    q: torch.Tensor  # [N, K] int8
    scale: torch.Tensor  # [N], in the activations' dtype


class Int4Weight(NamedTuple):
    packed: torch.Tensor  # tinygemm's tiled layout of [N, K_padded] 4-bit values
    scales_zeros: torch.Tensor  # [K_padded / 128, N, 2] bf16
    in_features: int  # K before padding
    padded_in: int  # K_padded, a multiple of 128


Weight = torch.Tensor | Int8Weight | Int4Weight


# --- quantizers ----------------------------------------------------------------------------------


def quantize_int8(w: torch.Tensor) -> Int8Weight:
    """Symmetric per-row int8: q = round(w / s), s = max|w_row| / 127."""
    w32 = w.float()
    scale = w32.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w32 / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return Int8Weight(q.contiguous(), scale.to(w.dtype))


def int4_groups(w: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Asymmetric int4 per (row, group of `group` columns): nibbles [N, K_padded] (0..15), scales and
    minimums [N, K_padded / group], with W = nibble * scale + minimum; and K_padded."""
    n, k = w.shape
    padded = -(-k // group) * group
    grouped = F.pad(w.float(), (0, padded - k)).reshape(n, padded // group, group)
    lo, hi = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scales = (hi - lo).clamp(min=1e-6) / 15.0
    nibbles = torch.round((grouped - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
    return nibbles.reshape(n, padded), scales, lo, padded


def quantize_int4(w: torch.Tensor, group: int = INT4_GROUP) -> Int4Weight:
    """int4 groups packed for torch core's tinygemm kernel, on w's (CUDA) device."""
    nibbles, scales, lo, padded = int4_groups(w, group)
    # tinygemm dequantizes (nibble - 8) * scale + zero, so zero = minimum + 8 * scale.
    scales_zeros = torch.stack([scales, lo + 8.0 * scales], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    pairs = (nibbles[:, ::2] << 4 | nibbles[:, 1::2]).to(torch.uint8)  # even column in the high nibble
    packed = torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(), INT4_INNER_K_TILES)
    return Int4Weight(packed, scales_zeros, w.shape[1], padded)


def quantize(w: torch.Tensor, scheme: str) -> Weight:
    if scheme == "none":
        return w
    if scheme == "int8":
        return quantize_int8(w)
    if scheme == "int4":
        return quantize_int4(w)
    raise QuantError(f"unknown quantization scheme {scheme!r}")


def dequantize(w: Weight, dtype: torch.dtype) -> torch.Tensor:
    """The float weight [N, K] a quantized one stands for (tests and the kernel check)."""
    if isinstance(w, torch.Tensor):
        return w.to(dtype)
    if isinstance(w, Int8Weight):
        return (w.q.float() * w.scale.float()[:, None]).to(dtype)
    eye = torch.eye(w.padded_in, dtype=torch.bfloat16, device=w.packed.device)
    dense = torch.ops.aten._weight_int4pack_mm(eye, w.packed, INT4_GROUP, w.scales_zeros)  # [K, N] = W^T
    return dense.t()[:, : w.in_features].to(dtype)


# --- matmuls -------------------------------------------------------------------------------------


def matmul(x: torch.Tensor, w: Weight) -> torch.Tensor:
    """x [..., K] @ w^T for a plain, int8 or int4 weight w [N, K]."""
    if isinstance(w, torch.Tensor):
        return F.linear(x, w)
    if isinstance(w, Int4Weight):
        return _tinygemm(x, w)
    if x.is_cuda:
        from worker.quant_kernels import int8_mm

        return int8_mm(x.reshape(-1, x.shape[-1]), w.q, w.scale).reshape(*x.shape[:-1], w.q.shape[0])
    return F.linear(x, w.q.to(x.dtype)) * w.scale  # CPU: convert and multiply (correct, not fast)


def gemv(x: torch.Tensor, w: Weight) -> torch.Tensor:
    """A plain weight's product as a multiply and an fp32 sum, for the compiler only (its own GEMV).

    Under torch.compile this becomes one fused reduction kernel per matmul (no split-K pass); eager
    it would materialise [..., N, K]. The engine times it against cuBLAS for one-row steps. Quantized
    weights already run a kernel of their own, so they are unchanged.
    """
    if isinstance(w, torch.Tensor):
        return (x.unsqueeze(-2).float() * w.float()).sum(-1).to(x.dtype)
    return matmul(x, w)


def _tinygemm(x: torch.Tensor, w: Int4Weight) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)  # the kernel takes bf16 activations
    if w.padded_in != w.in_features:
        x2 = F.pad(x2, (0, w.padded_in - w.in_features))
    out = torch.ops.aten._weight_int4pack_mm(x2, w.packed, INT4_GROUP, w.scales_zeros)
    return out.to(x.dtype).reshape(*shape[:-1], out.shape[-1])


def weight_bytes(w: Weight) -> int:
    tensors = [w] if isinstance(w, torch.Tensor) else [t for t in w if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)
