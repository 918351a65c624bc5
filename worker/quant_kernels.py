"""A Triton matmul for weight-only int8 weights: x [M, K] (fp16/bf16) @ (q * scale)^T.

One kernel shape for every batch size: a program owns BM rows of x and BN rows of W and walks K,
converting each int8 tile to the activations' dtype in registers before a tensor-core `tl.dot`, so
HBM sees only the quantized bytes (1 per weight) and nothing is written back.
There is no split-K: every output element is summed by one program in one order, so results do not
change from run to run (greedy ids must be reproducible). Block sizes are autotuned per (M bucket, N,
K) at the first call, which the engine makes at warm-up, before any graph capture or timing.

Layout (made by worker/quant.py): q [N, K] int8, scale [N]; W = q * scale[:, None]. Measured on H200
(tests/benchmarks/gpu_quant.py) it beats torch.compile's fused conversion at 1, 8 and 64 rows but
reaches only 0.3-1.3 TB/s at one row, against cuBLAS's 1.4-2.8 TB/s for fp16: tensor-core tiles of
16 rows waste most of a one-row step, and there is no split-K to fill the card on narrow layers.
A GEMV-shaped kernel for one row is the next step.

Wrapped as a `torch.library` custom op, so `torch.compile` keeps it as one opaque call.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of torch ship no Triton; the kernel only ever runs on CUDA
    triton = None


def _m_bucket(m: int) -> int:
    return 16 if m <= 16 else 32 if m <= 32 else 64 if m <= 64 else 128


def _prune(configs, named_args, **kwargs):
    """Row blocks no larger than the batch needs (a 16-row batch never gets a 128-row tile)."""
    bucket = named_args["M_BUCKET"]
    kept = [c for c in configs if c.kwargs["BM"] <= bucket and (bucket <= 16 or c.kwargs["BM"] >= 32)]
    return kept or configs


if triton is not None:
    @triton.autotune(
        configs=[triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=st)
                 for bn, bk, w, st in [(4, 1024, 4, 3), (8, 512, 4, 3), (8, 1024, 8, 3), (16, 256, 4, 3),
                                       (16, 512, 8, 3), (32, 256, 8, 3), (2, 2048, 4, 2)]],
        key=["N", "K"],
    )
    @triton.jit
    def _int8_gemv_kernel(x_ptr, q_ptr, s_ptr, out_ptr, N, K, stride_qn, BN: tl.constexpr, BK: tl.constexpr):
        # One row of x: no tensor cores, every program streams BN weight rows and keeps BN x BK partial
        # sums in registers, reduced once at the end.
        rn = tl.program_id(0) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BN, BK), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            x = tl.load(x_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
            q = tl.load(q_ptr + rn[:, None] * stride_qn + kk[None, :], mask=(rn[:, None] < N) & (kk[None, :] < K),
                        other=0)
            acc += q.to(tl.float32) * x[None, :]
        scale = tl.load(s_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        tl.store(out_ptr + rn, (tl.sum(acc, axis=1) * scale).to(out_ptr.dtype.element_ty), mask=rn < N)

    _CONFIGS = [
        triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (16, 16, 256, 4, 4), (16, 32, 256, 4, 4), (16, 16, 512, 4, 3), (16, 32, 128, 4, 5),
            (16, 64, 128, 4, 4), (16, 16, 128, 2, 6),
            (32, 32, 128, 4, 4), (64, 64, 64, 4, 4), (64, 64, 128, 4, 3), (64, 128, 64, 8, 3),
            (128, 128, 64, 8, 3),
        ]
    ]


    @triton.autotune(configs=_CONFIGS, key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": _prune})
    @triton.jit
    def _int8_kernel(x_ptr, q_ptr, s_ptr, out_ptr, M, N, K, M_BUCKET, stride_xm, stride_qn, stride_om,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm = tl.program_id(1) * BM + tl.arange(0, BM)
        rn = tl.program_id(0) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            x = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            q = tl.load(q_ptr + rn[:, None] * stride_qn + kk[None, :], mask=(rn[:, None] < N) & (kk[None, :] < K), other=0)
            acc += tl.dot(x, tl.trans(q.to(x.dtype)))
        scale = tl.load(s_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))


def _grid(m: int, n: int):
    return lambda meta: (triton.cdiv(n, meta["BN"]), triton.cdiv(m, meta["BM"]))


@torch.library.custom_op("dinf::int8_mm", mutates_args=())
def int8_mm(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ (q * scale[:, None])^T -> [M, N] in x's dtype."""
    m, k = x.shape
    n = q.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 1:
        _int8_gemv_kernel[lambda meta: (triton.cdiv(n, meta["BN"]),)](x, q, scale, out, n, k, q.stride(0))
        return out
    _int8_kernel[_grid(m, n)](x, q, scale, out, m, n, k, _m_bucket(m), x.stride(0), q.stride(0), out.stride(0))
    return out


@int8_mm.register_fake
def _(x, q, scale):
    return x.new_empty(x.shape[0], q.shape[0])
