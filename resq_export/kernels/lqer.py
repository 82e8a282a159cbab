"""LQER's per-token 8-bit quantiser of xa = x A (docs/ops.md): xa itself is mixed_gemm_kernel run with
A as an all-8-bit weight (W_BITS_LOW = 8, wscale = lqer_a_scale with strides (1, 0)), so the projection
shares the GEMM's layout, tiles and float32 epilogue; this kernel only quantises its rows."""

from __future__ import annotations

import triton
import triton.language as tl

from .primitives import div_rn, rne


@triton.jit
def lqer_quant_kernel(xa, qa, sa, rank, BLOCK_R: tl.constexpr):
    """qa[t] = clamp(round(xa[t] / s), -128, 127), s = max|xa[t]| / 127 (1 where that is 0), per token t.

    xa: float32 [T, rank], qa: int8 [T, rank], sa: float32 [T]. Grid: (T, 1, 1)."""
    t = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    m = tl.zeros([BLOCK_R], tl.float32)
    for r0 in range(0, rank, BLOCK_R):
        v = tl.load(xa + t * rank + r0 + r, mask=r0 + r < rank, other=0.0)
        m = tl.maximum(m, tl.abs(v))
    s = div_rn(tl.max(m, axis=0), 127.0)
    s = tl.where(s > 0.0, s, 1.0)
    tl.store(sa + t, s)
    for r0 in range(0, rank, BLOCK_R):
        v = tl.load(xa + t * rank + r0 + r, mask=r0 + r < rank, other=0.0)
        q = tl.minimum(tl.maximum(rne(div_rn(v, s)), -128.0), 127.0)
        tl.store(qa + t * rank + r0 + r, q.to(tl.int32).to(tl.int8), mask=r0 + r < rank)
