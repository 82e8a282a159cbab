"""Quantisation primitives, documented once and used by the quantiser and the reference executor.

Conventions (the op contract, see docs/ops.md):
- Rounding is round-half-to-even (torch.round, ONNX QuantizeLinear, CUDA __float2int_rn).
- Activations: asymmetric per (token, group), the range always includes 0, so the zero point lies in
  [0, 2^b - 1]: scale = (max(x, 0) - min(x, 0)) / (2^b - 1) (1.0 where that is 0),
  zero = round(-min(x, 0) / scale), q = clamp(round(x / scale) + zero, 0, 2^b - 1), x ~ scale * (q - zero).
- Weights: symmetric per (output channel, group): scale = clip * max|w| / (2^(b-1) - 1) (1.0 where 0),
  q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1), w ~ scale * q.
- INT4 packing: two values per byte of an int8 tensor along the last axis; element 2j in the low
  nibble, element 2j+1 in the high nibble; values stored as their low 4 bits (two's complement for
  signed weights, plain for unsigned activation/KV codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def group_bounds(group_sizes: Sequence[int]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for size in group_sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


# --- activations -------------------------------------------------------------------------------

def quantize_asym(x: torch.Tensor, bits: int, clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantisation over the last axis; returns (q int32, scale [...,1], zero [...,1] int32).
    clip < 1 shrinks the range (tools/error_probe.py's variants); the contract always uses 1."""
    qmax = 2**bits - 1
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    if clip != 1.0:
        lo, hi = lo * clip, hi * clip
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, 0, qmax)
    return q.to(torch.int32), scale, zero.to(torch.int32)


def quantize_groups(
    x: torch.Tensor, group_sizes: Sequence[int], bits: Sequence[int], clip_4bit: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group asymmetric quantisation along the last axis: (q int32 [...,K], scale [...,G], zero int32 [...,G]).
    clip_4bit: quantize_asym's clip for the 4-bit groups only (the 8-bit ones keep their full range)."""
    qs, scales, zeros = [], [], []
    for (a, b), nbits in zip(group_bounds(group_sizes), bits):
        q, s, z = quantize_asym(x[..., a:b], nbits, clip_4bit if nbits == 4 else 1.0)
        qs.append(q)
        scales.append(s)
        zeros.append(z)
    return torch.cat(qs, -1), torch.cat(scales, -1), torch.cat(zeros, -1)


def expand_groups(per_group: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """[..., G] -> [..., K]: repeat each group's value over its channels."""
    sizes = torch.tensor(list(group_sizes), device=per_group.device)
    return torch.repeat_interleave(per_group, sizes, dim=-1)


def dequantize_groups(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_sizes: Sequence[int]
) -> torch.Tensor:
    """scale * (q - zero), in float32."""
    return (q - expand_groups(zero, group_sizes)).to(torch.float32) * expand_groups(scale, group_sizes)


def quantize_sym_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantisation (used for the LQER intermediate): (q int32, scale [...,1])."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax)
    return q.to(torch.int32), scale


# --- weights -----------------------------------------------------------------------------------

def weight_scale(w: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Symmetric scale per row of w [out, k] -> [out, 1]."""
    return _scale_of_absmax(w.abs().amax(dim=-1, keepdim=True), bits, clip)


def _scale_of_absmax(absmax: torch.Tensor, bits: int, clip: torch.Tensor | float) -> torch.Tensor:
    scale = clip * absmax / (2 ** (bits - 1) - 1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor, group_sizes: Sequence[int],
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes [out, K] * each group's scale [out, G] in dtype, group by group in one output buffer
    (the same products as with the scales expanded to [out, K], without that copy)."""
    w = codes.to(dtype, copy=True)
    for g, (a, b) in enumerate(group_bounds(group_sizes)):
        w[:, a:b] *= scale[:, g:g + 1].to(dtype)
    return w


def quantize_sym(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax)


def mse_weight_scale(
    w: torch.Tensor, bits: int, grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4,
    block_elements: int = 1 << 16,
) -> torch.Tensor:
    """Per-row clip search (GPTQ's MSE grid): the shrink of max|w| that minimises sum |w - Q(w)|^norm.

    Rows are independent, so the grid runs over blocks of rows that stay in cache, with in-place
    operations on one buffer: the same element-wise operations and per-row sums as evaluating the
    whole matrix at once (identical result), faster on big matrices, where every whole-matrix
    temporary was a fresh allocation paid for in page faults (docs/architecture.md, "Measured design
    choices")."""
    w = w.to(torch.float32)
    qmax = 2 ** (bits - 1) - 1
    best_scale = weight_scale(w, bits)
    step = max(1, block_elements // max(w.shape[1], 1))
    buf = torch.empty((min(step, w.shape[0]), w.shape[1]), dtype=torch.float32)
    for r0 in range(0, w.shape[0], step):
        rows = w[r0:r0 + step]
        err_buf = buf[: rows.shape[0]]
        best = best_scale[r0:r0 + step]
        best_err = torch.full((rows.shape[0],), float("inf"))
        absmax = rows.abs().amax(dim=-1, keepdim=True)
        for i in range(int(max_shrink * grid) + 1):
            scale = _scale_of_absmax(absmax, bits, 1.0 - i / grid)
            torch.div(rows, scale, out=err_buf)  # |Q(w) - w|^norm, as quantize_sym computes Q
            err_buf.round_().clamp_(-qmax - 1, qmax).mul_(scale).sub_(rows).abs_().pow_(norm)
            err = err_buf.sum(-1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best.copy_(torch.where(better[:, None], scale, best))
    return best_scale


# --- int4 packing ------------------------------------------------------------------------------

def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack integer values (signed [-8, 7] or unsigned [0, 15]) pairwise along the last axis into int8."""
    if q.shape[-1] % 2:
        raise ValueError(f"int4 packing needs an even last dimension, got {q.shape[-1]}")
    # Every 4-bit value fits int8, and int8 arithmetic gives the stored bit pattern directly (the
    # shift drops the high bits): one byte per value of temporaries, not four.
    q = q.to(torch.int8)
    return (q[..., 0::2] & 0xF) | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    """Inverse of pack_int4: int8 [..., K/2] -> int32 [..., K]."""
    byte = packed.to(torch.int32) & 0xFF
    lo = byte & 0xF
    hi = byte >> 4
    if signed:
        lo = torch.where(lo > 7, lo - 16, lo)
        hi = torch.where(hi > 7, hi - 16, hi)
    return torch.stack([lo, hi], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# --- exact integer GEMM ------------------------------------------------------------------------

def exact_float_dtype(k: int, a_max: int, b_max: int) -> torch.dtype:
    """A float dtype in which an integer GEMM of depth k (|a| <= a_max, |b| <= b_max) plus a
    zero-point correction of the same bound is exact.

    Every partial sum is an integer below 2 * k * a_max * b_max; float32 holds all integers below
    2^24 exactly, whatever the summation order, float64 those below 2^53. This is how the CPU
    reference computes the kernels' int32 accumulation quickly and exactly.
    """
    bound = 2 * k * a_max * b_max
    if bound >= 2**31:
        raise ValueError(f"integer GEMM of depth {k} may overflow int32 accumulation")
    return torch.float32 if bound < 2**24 else torch.float64


def int_matmul(a: torch.Tensor, b_t: torch.Tensor, a_max: int, b_max: int) -> torch.Tensor:
    """Exact a @ b_t.T for integer tensors, returned as int64."""
    dtype = exact_float_dtype(a.shape[-1], a_max, b_max)
    return torch.matmul(a.to(dtype), b_t.to(dtype).transpose(-1, -2)).to(torch.int64)
