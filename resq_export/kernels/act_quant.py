"""The activation quantiser of ResQMixedLinearPrepared (docs/ops.md, `quantize_groups`): per token and
group, asymmetric 4- or 8-bit codes in the padded kernel layout that the mixed GEMM reads.

One program per (tile of BLOCK_T tokens, group): the groups of a token run in parallel, not one after
another in one block (the CUDA kernel's design, ~85 us per decode call), and nothing is staged in
shared memory, so any K works. A group is read twice (range, then codes), the second time from L1/L2.

Output layout (plugins' ResQActCodes): q_low [T, act_low_pitch] with group g of the 4-bit-weight part
at channel g * gp_low, 4-bit codes packed two per byte (channel 2j in the low nibble of byte j), 8-bit
codes one per byte; q_high likewise for the 8-bit-weight part; padding channels hold code 0; sx float32
[T, G], zx int32 [T, G].
"""

from __future__ import annotations

import triton
import triton.language as tl

from .primitives import div_rn, rne


@triton.jit
def _quant_group(x_base, x_pitch, q_base, q_pitch, sx_ptr, zx_ptr, G, gw, gp, rows, rmask,
                 BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BITS: tl.constexpr):
    qmax: tl.constexpr = (1 << BITS) - 1
    j = tl.arange(0, BLOCK_H)
    xrow = x_base + rows[:, None] * x_pitch
    lo = tl.zeros([BLOCK_T], tl.float32)  # the range always includes 0
    hi = tl.zeros([BLOCK_T], tl.float32)
    for c0 in range(0, gw, 2 * BLOCK_H):
        ce = c0 + 2 * j  # even channels, and ce + 1 the odd ones: the two nibbles of a byte
        me = rmask[:, None] & (ce < gw)[None, :]
        mo = rmask[:, None] & (ce + 1 < gw)[None, :]
        xe = tl.load(xrow + ce[None, :], mask=me, other=0.0).to(tl.float32)
        xo = tl.load(xrow + ce[None, :] + 1, mask=mo, other=0.0).to(tl.float32)
        lo = tl.minimum(lo, tl.minimum(tl.min(xe, axis=1), tl.min(xo, axis=1)))
        hi = tl.maximum(hi, tl.maximum(tl.max(xe, axis=1), tl.max(xo, axis=1)))
    s = div_rn(hi - lo, qmax * 1.0)
    s = tl.where(s > 0.0, s, 1.0)
    z = rne(div_rn(-lo, s))
    tl.store(sx_ptr + rows * G, s, mask=rmask)
    tl.store(zx_ptr + rows * G, z.to(tl.int32), mask=rmask)
    qrow = q_base + rows[:, None] * q_pitch
    for c0 in range(0, gp, 2 * BLOCK_H):
        ce = c0 + 2 * j
        me = rmask[:, None] & (ce < gw)[None, :]
        mo = rmask[:, None] & (ce + 1 < gw)[None, :]
        xe = tl.load(xrow + ce[None, :], mask=me, other=0.0).to(tl.float32)
        xo = tl.load(xrow + ce[None, :] + 1, mask=mo, other=0.0).to(tl.float32)
        qe = tl.minimum(tl.maximum(rne(div_rn(xe, s[:, None])) + z[:, None], 0.0), qmax * 1.0)
        qo = tl.minimum(tl.maximum(rne(div_rn(xo, s[:, None])) + z[:, None], 0.0), qmax * 1.0)
        qe = tl.where(me, qe, 0.0).to(tl.int32)  # padding channels: code 0
        qo = tl.where(mo, qo, 0.0).to(tl.int32)
        keep = rmask[:, None] & (ce < gp)[None, :]
        if BITS == 4:
            tl.store(qrow + (ce // 2)[None, :], (qe | (qo << 4)).to(tl.uint8), mask=keep)
        else:
            tl.store(qrow + ce[None, :], qe.to(tl.uint8), mask=keep)
            # an odd width (a KV cache part, unpadded) ends on an even channel: its odd neighbour is the
            # next part's or row's first byte
            tl.store(qrow + ce[None, :] + 1, qo.to(tl.uint8), mask=keep & (ce + 1 < gp)[None, :])


@triton.jit
def act_quant_kernel(x, q_low, q_high, sx, zx, T, x_pitch, k_low, low_groups, high_groups, gw_low, gw_high,
                     gp_low, gp_high, act_low_pitch, act_high_pitch,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, A_BITS_LOW: tl.constexpr,
                     A_BITS_HIGH: tl.constexpr):
    """Quantise x per (token, group) into the padded code layout.

    x: [T, x_pitch] float32 (fp16/bf16 in their configurations), the K = k_low + high_groups * gw_high
    input channels of a token contiguous. q_low: uint8 [T, act_low_pitch] (unused when low_groups is 0),
    q_high: uint8 [T, act_high_pitch] (unused when high_groups is 0), sx: float32 [T, G], zx: int32
    [T, G], G = low_groups + high_groups. gw_*: a group's width, gp_*: that width rounded up to a
    multiple of 64 (the code layout's stride per group); act_*_pitch: bytes per token of each part
    (groups * gp * bits / 8). A_BITS_*: 4 or 8, the parts' activation bits.
    Grid: (cdiv(T, BLOCK_T), G, 1).
    """
    g = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < T
    rows = rows.to(tl.int64)
    G = low_groups + high_groups
    if g < low_groups:
        _quant_group(x + g * gw_low, x_pitch, q_low + g * (gp_low * A_BITS_LOW // 8), act_low_pitch, sx + g,
                     zx + g, G, gw_low, gp_low, rows, rmask, BLOCK_T, BLOCK_H, A_BITS_LOW)
    else:
        h = g - low_groups
        _quant_group(x + k_low + h * gw_high, x_pitch, q_high + h * (gp_high * A_BITS_HIGH // 8), act_high_pitch,
                     sx + g, zx + g, G, gw_high, gp_high, rows, rmask, BLOCK_T, BLOCK_H, A_BITS_HIGH)
