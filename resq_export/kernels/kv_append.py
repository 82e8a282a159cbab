"""ResQKVCacheAttention's first two steps on the GPU (docs/ops.md): the key rotation U_C of q and k,
and the append of the new K/V rows into the quantised cache, in place.

- kv_rotate_kernel: y = x @ u for rows of D channels, in float32 as the contract's GPU variant says
  (decoder.rotate_keys_gpu computes it exactly): y[:, j] = ((0 + x[:, 0] u[0, j]) + x[:, 1] u[1, j]) +
  ..., each product and sum one float32 rounding (no fused multiply-add). The appended codes depend
  on k's bits, so the order is fixed rather than left to a dot.
- kv_append_kernel: quantise each new row per token per KV head (groups [D - r] at BITS_LOW, [r] at
  BITS_HIGH, quantize_groups' arithmetic: act_quant's group quantiser) and write codes, scales and
  zero points at rows past_length[b] + s. past_length is read on the device, so a decode step needs
  no host synchronisation and can be captured in a CUDA graph; rows at or past the capacity are not
  written (the contract forbids them; a bad length must not write out of bounds).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .act_quant import _quant_group


@triton.jit
def kv_rotate_kernel(x, u, y, rows, D, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[r, j] = sum_k x[r, k] u[k, j], k ascending, float32, one rounding per operation.

    x, y: float32 [rows, D] (y may not alias x), u: float32 [D, D]. Grid: (cdiv(rows, BLOCK_R),
    cdiv(D, BLOCK_C), 1)."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    j = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rmask = r < rows
    jmask = j < D
    r = r.to(tl.int64)
    acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    for k in range(0, D):
        xk = tl.load(x + r * D + k, mask=rmask, other=0.0)
        uk = tl.load(u + k * D + j, mask=jmask, other=0.0)
        acc = acc + xk[:, None] * uk[None, :]
    tl.store(y + r[:, None] * D + j[None, :], acc, mask=rmask[:, None] & jmask[None, :])


@triton.jit
def kv_append_kernel(k_new, v_new, past_length, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, S, num_kv_heads,
                     capacity, D, high, row_bytes, low_bytes,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BITS_LOW: tl.constexpr, BITS_HIGH: tl.constexpr):
    """Quantise the new rows of K (program_id(2) == 0) or V (1) into the cache at past_length[b].

    k_new, v_new: float32 [B, Hkv, S, D]; past_length: int32 [B]; *_codes: uint8 [B, Hkv, L, row_bytes]
    (the low part's low_bytes bytes, then the high part's; 4-bit codes two per byte, channel 2j in the
    low nibble); *_scales: float32 [B, Hkv, L, G]; *_zeros: uint8 [B, Hkv, L, G]; G = 1 + (high > 0).
    Grid: (cdiv(S, BLOCK_T), B * Hkv, 2)."""
    bh = tl.program_id(1)
    b = bh // num_kv_heads
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    past = tl.load(past_length + b)
    # nothing is written outside the cache, whatever past_length says
    rmask = (t < S) & (past + t < capacity) & (past + t >= 0)
    t = t.to(tl.int64)
    G = 1 + (high > 0).to(tl.int32)
    src_off = bh.to(tl.int64) * S * D
    slot = bh.to(tl.int64) * capacity + past  # the cache row of t = 0; row t is slot + t
    if tl.program_id(2) == 0:
        x, codes, scales, zeros = k_new, k_codes, k_scales, k_zeros
    else:
        x, codes, scales, zeros = v_new, v_codes, v_scales, v_zeros
    low = D - high
    _quant_group(x + src_off, D, codes + slot * row_bytes, row_bytes, scales + slot * G, zeros + slot * G, G, low, low,
                 t, rmask, BLOCK_T, BLOCK_H, BITS_LOW)
    if high > 0:
        _quant_group(x + src_off + low, D, codes + slot * row_bytes + low_bytes, row_bytes, scales + slot * G + 1,
                     zeros + slot * G + 1, G, high, high, t, rmask, BLOCK_T, BLOCK_H, BITS_HIGH)
