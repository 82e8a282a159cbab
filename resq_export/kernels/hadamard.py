"""The online Hadamard ResQHadamard: y = x @ kron(left, S / sqrt(b)) along rows of n = a * b channels,
S the Sylvester Hadamard of order b (a power of two), left a float32 [a, a] factor (docs/ops.md).

Two kernels, no shared-memory row buffer (so any n works on every GPU):
- fwht_kernel: the Walsh-Hadamard butterflies of P_BLK blocks of b channels in registers, stage by
  stage in fwht's order (bit-exact with algo.hadamard.fwht), then the division by float32(sqrt(b)).
- hadamard_mix_kernel (only when a > 1): y_i = sum_p left[p, i] z_p, p ascending from 0, in place on
  the output, one program per (row, column tile) owning that column tile for all a blocks.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .primitives import div_rn


@triton.jit
def fwht_kernel(x, y, a, n, norm, B: tl.constexpr, LOG_B: tl.constexpr, P_BLK: tl.constexpr):
    """z_p = fwht(x[row, p * B:(p + 1) * B]) / norm for the blocks p of one row.

    x, y: float32 [rows, n] (n = a * B; y may not alias x), norm: float32(sqrt(B)) computed by the
    launcher (math.sqrt in float64, rounded to float32). Grid: (rows, cdiv(a, P_BLK), 1)."""
    row = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * P_BLK + tl.arange(0, P_BLK)
    c = tl.arange(0, B)
    offs = row * n + p[:, None] * B + c[None, :]
    mask = (p < a)[:, None] & (c < B)[None, :]
    z = tl.load(x + offs, mask=mask, other=0.0)
    for st in tl.static_range(LOG_B):
        # channels as [block, B / 2h, 2, h]: stage st pairs channel i with i + h, h = 2^st
        t = tl.permute(tl.reshape(z, [P_BLK, B >> (st + 1), 2, 1 << st]), [0, 1, 3, 2])
        u, w = tl.split(t)  # the pair (i, i + h) of every block of 2h channels
        z = tl.reshape(tl.permute(tl.join(u + w, u - w), [0, 1, 3, 2]), [P_BLK, B])
    tl.store(y + offs, div_rn(z, norm), mask=mask)


@triton.jit
def hadamard_mix_kernel(y, left, a, b, n, A_PAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[row, i * b + c] = sum_{p < a} left[p, i] * y[row, p * b + c] (p ascending, from 0.0), in place.

    y: float32 [rows, n], left: float32 [a, a] row-major, a <= A_PAD. Grid: (rows, cdiv(b, BLOCK_C), 1)."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    i = tl.arange(0, A_PAD)
    cmask = c < b
    imask = i < a
    acc = tl.zeros([A_PAD, BLOCK_C], tl.float32)
    for p in range(0, a):
        zp = tl.load(y + row * n + p * b + c, mask=cmask, other=0.0)
        lp = tl.load(left + p * a + i, mask=imask, other=0.0)
        acc = acc + lp[:, None] * zp[None, :]
    tl.debug_barrier()  # every thread has read its columns of all a blocks before any is overwritten
    tl.store(y + row * n + i[:, None] * b + c[None, :], acc, mask=imask[:, None] & cmask[None, :])
