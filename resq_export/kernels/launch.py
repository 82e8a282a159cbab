"""Thin torch launchers of the Triton kernels: what the C++ plugins do with the cubins (the same kernels,
configurations, grids and workspaces), on torch tensors. Under TRITON_INTERPRET=1 they run on CPU
tensors (the tests); on a GPU, on CUDA tensors. The launch policy (which tile when) lives in
`gemm_tile`, and the configuration names in configs.py follow it (`linear_kernels`, `hadamard_kernels`).

One ResQMixedLinearPrepared call (M tokens, N outputs, rank R, G groups, runs = n_runs):
  1. act_quant            x -> q_low [M, act_low_pitch] u8, q_high [M, act_high_pitch] u8, sx/zx [M, G]
  2. if R: mixed_gemm w8  (A as the weight, wscale = lqer_a_scale with strides (1, 0), wsum = lqer_a_sums,
                          w_high = lqer_a + low_groups * gp_low, both pitches a8_pitch) -> xa [M, R] f32
                          (split tile: partial [runs, M, R] f32, then splitk_reduce with rank 0, bias zeros [R])
     lqer_quant           xa -> qa [M, R] i8, sa [M] f32
  3. mixed_gemm w4        -> y [M, N] (split tile: partial [runs, M, N] f32, then splitk_reduce with LQER, bias)
Workspace: the codes, sx, zx, xa, qa, sa and the larger partial; every buffer 16-byte aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton

from ..export.kernel_layout import PaddedLayout, prepare_lqer_a, prepare_weights
from ..layout import OpParts
from ..reference import GPU_CHUNK_GROUPS, QuantLinear
from .act_quant import act_quant_kernel
from .hadamard import fwht_kernel, hadamard_mix_kernel
from .lqer import lqer_quant_kernel
from .mixed_gemm import mixed_gemm_kernel, splitk_reduce_kernel

# Launch configurations: name -> (constexprs, num_warps, num_stages). All three compute the same bits
# (the split is the contract's run structure), so this policy is a pure speed choice, to tune on a GPU:
# - decode (M <= SPLIT_MAX_M): split over the runs of groups, so even N = 4096 fills 132 SMs (64 N tiles
#   x runs) with many weight bytes in flight; each run's float32 partial costs 2 x 4 x M x N bytes of
#   traffic, M / (4 x group width) of the weight bytes (docs/benchmarks-gpu.md), so only for tiny M;
# - small (M <= DECODE_MAX_M): the same 16 x 64 tile, fused;
# - prefill: 128 x 64 tensor-core tiles (wgmma m64 per warpgroup on sm_90a), 3-stage pipeline.
# Three [BLOCK_M, BLOCK_N] accumulators live in registers (the group's int32 sum, the run's and the
# total float32 sums): 96 per thread at 128 x 64 with 8 warps, 192 at 128 x 128 (spills).
SPLIT_MAX_M = 4
DECODE_MAX_M = 16
GEMM_TILES = {
    "decode": (dict(BLOCK_M=16, BLOCK_N=64, SPLIT=1), 4, 4),
    "small": (dict(BLOCK_M=16, BLOCK_N=64, SPLIT=0), 4, 4),
    "prefill": (dict(BLOCK_M=128, BLOCK_N=64, SPLIT=0), 8, 3),
}
REDUCE_TILE = (dict(BLOCK_M=16, BLOCK_N=128), 4, 1)
ACT_TILE = (dict(BLOCK_T=8, BLOCK_H=64), 4, 1)
LQER_TILE = (dict(BLOCK_R=128), 4, 1)
MIX_COLUMNS = 2048  # elements of hadamard_mix_kernel's [A_PAD, BLOCK_C] accumulator
FWHT_ELEMENTS = 2048  # at least this many per fwht_kernel program (P_BLK blocks of B)
MAX_LEFT = 1024  # hadamard_left_factor's largest Hadamard factor
MAX_B_LOG = 14


def gemm_tile(m: int) -> str:
    return "decode" if m <= SPLIT_MAX_M else "small" if m <= DECODE_MAX_M else "prefill"


# x (the quantiser's input) and y (the linear's output) in other dtypes than float32: name suffixes
DTYPE_SUFFIX = {torch.float32: "", torch.float16: "_f16", torch.bfloat16: "_bf16"}


def linear_kernels(parts: OpParts, m: int, rank: int, x_dtype=torch.float32, y_dtype=torch.float32) -> list[str]:
    """The configurations (configs.py names) that one ResQMixedLinearPrepared call launches, in order."""
    bits = f"a{parts.a_bits_low}_a{parts.a_bits_high}"
    tile = gemm_tile(m)
    split = GEMM_TILES[tile][0]["SPLIT"]
    ys = DTYPE_SUFFIX[y_dtype]
    lqer = [f"mixed_gemm_{tile}_w8_{bits}", *(["splitk_reduce"] if split else []), "lqer_quant"] if rank else []
    gemm = [f"mixed_gemm_{tile}_w4_{bits}", f"splitk_reduce{ys}"] if split else [f"mixed_gemm_{tile}_w4_{bits}{ys}"]
    return [f"act_quant_{bits}{DTYPE_SUFFIX[x_dtype]}", *lqer, *gemm]


def hadamard_kernels(n: int, a: int) -> list[str]:
    """The configurations one ResQHadamard call launches; ValueError where none fits."""
    b = n // a
    if a < 1 or n % a or b < 2 or b & (b - 1) or b.bit_length() - 1 > MAX_B_LOG or a > MAX_LEFT:
        raise ValueError(f"no Hadamard kernel for n = {n} with a left factor of order {a}")
    return [f"fwht_b{b}"] + ([f"hadamard_mix_a{mix_tile(a)[0]['A_PAD']}"] if a > 1 else [])


def fwht_tile(b: int) -> tuple[dict, int, int]:
    """fwht_kernel's configuration for blocks of b channels: at least FWHT_ELEMENTS per program, at
    most 32 per thread (registers)."""
    p_blk = max(1, FWHT_ELEMENTS // b)
    warps = min(16, max(4, p_blk * b // (32 * 32)))
    return dict(B=b, LOG_B=b.bit_length() - 1, P_BLK=p_blk), warps, 1


def mix_tile(a: int) -> tuple[dict, int, int]:
    """hadamard_mix_kernel's configuration for a left factor of order a: a [A_PAD, BLOCK_C] float32
    accumulator of at most MIX_COLUMNS elements (more spills on sm_90a), 16 per thread."""
    a_pad = max(2, 1 << (a - 1).bit_length())
    block_c = max(4, MIX_COLUMNS // a_pad)
    return dict(A_PAD=a_pad, BLOCK_C=block_c), max(4, a_pad * block_c // (32 * 16)), 1


@dataclass
class Prepared:
    """ResQMixedLinearPrepared's inputs (the TensorRT flavour's weight layout) as torch tensors."""

    parts: OpParts
    pad: PaddedLayout
    w_low: torch.Tensor  # int8 [N, w_low_pitch] (a [N, 1] dummy without a 4-bit part)
    w_high: torch.Tensor  # int8 [N, w_high_pitch] (dummy without an 8-bit part)
    wscale: torch.Tensor
    wsum: torch.Tensor
    bias: torch.Tensor
    lqer: tuple | None  # (a_p int8 [R, a8_pitch], asum int32 [R, G], a_scale [R], b int8 [N, R], b_scale [N])

    @property
    def n(self) -> int:
        return self.wscale.shape[0]

    @classmethod
    def from_linear(cls, lin: QuantLinear, device: str | torch.device = "cpu") -> Prepared:
        parts = lin.layout.op_parts()
        pad = PaddedLayout(parts.k, parts.k_low, parts.low_groups, parts.high_groups)
        low = None if lin.qweight_low is None else lin.qweight_low.numpy()
        high = None if lin.qweight_high is None else lin.qweight_high.numpy()
        w_low, w_high, sums = prepare_weights(pad, low, high)
        n = lin.out_features
        dummy = torch.zeros(n, 1, dtype=torch.int8)

        def t(a):
            return torch.from_numpy(a).contiguous().to(device)

        lqer = None
        if lin.lqer is not None:
            a_p, asum = prepare_lqer_a(pad, lin.lqer.a_q.to(torch.int8).numpy())
            lq = lin.lqer
            lqer = (t(a_p), t(asum), lq.a_scale.float().contiguous().to(device),
                    lq.b_q.to(torch.int8).contiguous().to(device), lq.b_scale.float().contiguous().to(device))
        bias = lin.bias.float() if lin.bias is not None else torch.zeros(n)
        return cls(parts, pad, t(w_low) if w_low.shape[1] else dummy.to(device),
                   t(w_high) if w_high is not None else dummy.to(device), lin.wscale.float().contiguous().to(device),
                   t(sums), bias.contiguous().to(device), lqer)


def _run(kernel, grid, args, tile, **constexprs):
    consts, warps, stages = tile
    kernel[grid](*args, **consts, **constexprs, num_warps=warps, num_stages=stages)


def act_pitches(parts: OpParts, pad: PaddedLayout) -> tuple[int, int]:
    return (pad.low_groups * pad.gwp_low * parts.a_bits_low // 8,
            pad.high_groups * pad.gwp_high * parts.a_bits_high // 8)


def quantize_act(x: torch.Tensor, parts: OpParts, pad: PaddedLayout):
    """x [T, K] (float32/16, bf16) -> (q_low uint8, q_high uint8, sx float32 [T, G], zx int32 [T, G])."""
    if parts.a_bits_low not in (4, 8) or parts.a_bits_high not in (4, 8):
        raise ValueError(f"the kernels quantise activations to 4 or 8 bits, not {parts.a_bits_low}/{parts.a_bits_high}")
    t = x.shape[0]
    low_pitch, high_pitch = act_pitches(parts, pad)
    dev = x.device
    q_low = torch.empty(t, max(low_pitch, 1), dtype=torch.uint8, device=dev)
    q_high = torch.empty(t, max(high_pitch, 1), dtype=torch.uint8, device=dev)
    sx = torch.empty(t, pad.groups, dtype=torch.float32, device=dev)
    zx = torch.empty(t, pad.groups, dtype=torch.int32, device=dev)
    if t:
        grid = (triton.cdiv(t, ACT_TILE[0]["BLOCK_T"]), pad.groups, 1)
        _run(act_quant_kernel, grid, (x, q_low, q_high, sx, zx, t, x.stride(0), pad.k_low, pad.low_groups,
                                      pad.high_groups, pad.gw_low, pad.gw_high, pad.gwp_low, pad.gwp_high,
                                      low_pitch, high_pitch), ACT_TILE, A_BITS_LOW=parts.a_bits_low,
             A_BITS_HIGH=parts.a_bits_high)
    return q_low, q_high, sx, zx


def n_runs(pad: PaddedLayout) -> int:
    return -(-pad.low_groups // GPU_CHUNK_GROUPS) + -(-pad.high_groups // GPU_CHUNK_GROUPS)


def grouped_gemm(act, parts: OpParts, pad: PaddedLayout, w_low, w_high, w_low_pitch, w_bits_low, wscale, ws_strides,
                 wsum, bias, n, lqer_in=None, out_dtype=torch.float32, tile: str | None = None) -> torch.Tensor:
    """mixed_gemm_kernel (+ splitk_reduce_kernel at decode) -> y [M, n]."""
    q_low, q_high, sx, zx = act
    m = sx.shape[0]
    dev = sx.device
    y = torch.empty(m, n, dtype=out_dtype, device=dev)
    if m == 0:
        return y
    qa, sa, b, b_scale = lqer_in if lqer_in is not None else (torch.zeros(1, dtype=torch.int8, device=dev),
                                                              torch.zeros(1, device=dev),
                                                              torch.zeros(1, dtype=torch.int8, device=dev),
                                                              torch.zeros(1, device=dev))
    rank = qa.shape[1] if lqer_in is not None else 0
    tile = tile or gemm_tile(m)
    consts, warps, stages = GEMM_TILES[tile]
    runs = n_runs(pad)
    low_pitch, high_pitch = act_pitches(parts, pad)
    if max(m * max(low_pitch, high_pitch), n * max(w_low_pitch, pad.w_high_pitch, pad.a8_pitch), runs * m * n) >= 2**31:
        raise ValueError(f"M = {m}, N = {n}, K = {pad.k}: offsets beyond int32, split the call")
    partial = torch.empty(runs if consts["SPLIT"] else 1, m, n, dtype=torch.float32, device=dev)
    grid = (triton.cdiv(n, consts["BLOCK_N"]), triton.cdiv(m, consts["BLOCK_M"]), runs if consts["SPLIT"] else 1)
    _run(mixed_gemm_kernel, grid,
         (q_low, q_high, sx, zx, w_low, w_high, wscale, wsum, bias, qa, sa, b, b_scale, y, partial, m, n, pad.groups,
          pad.low_groups, pad.high_groups, pad.gwp_low, pad.gwp_high, low_pitch, high_pitch, w_low_pitch,
          pad.a8_pitch if w_bits_low == 8 else pad.w_high_pitch, *ws_strides, rank),
         GEMM_TILES[tile], A_BITS_LOW=parts.a_bits_low, W_BITS_LOW=w_bits_low, A_BITS_HIGH=parts.a_bits_high,
         CHUNK=GPU_CHUNK_GROUPS)
    if consts["SPLIT"]:
        rc = REDUCE_TILE[0]
        _run(splitk_reduce_kernel, (triton.cdiv(n, rc["BLOCK_N"]), triton.cdiv(m, rc["BLOCK_M"]), 1),
             (partial, runs, qa, sa, b, b_scale, bias, y, m, n, rank), REDUCE_TILE)
    return y


def lqer_project(act, prep: Prepared, tile: str | None = None):
    """LQER's qa int8 [M, R], sa float32 [M]: xa by the grouped GEMM with A as an 8-bit weight."""
    a_p, asum, a_scale, _b, _bs = prep.lqer
    r = a_p.shape[0]
    pad = prep.pad
    high = a_p.view(-1)[pad.low_groups * pad.gwp_low:]  # the 8-bit part starts after the low groups
    xa = grouped_gemm(act, prep.parts, pad, a_p, high, pad.a8_pitch, 8, a_scale, (1, 0), asum,
                      torch.zeros(r, device=a_p.device), r, tile=tile)
    m = xa.shape[0]
    qa = torch.empty(m, r, dtype=torch.int8, device=xa.device)
    sa = torch.empty(m, dtype=torch.float32, device=xa.device)
    if m:
        _run(lqer_quant_kernel, (m, 1, 1), (xa, qa, sa, r), LQER_TILE)
    return qa, sa


def mixed_linear(x: torch.Tensor, prep: Prepared, out_dtype=torch.float32, tile: str | None = None) -> torch.Tensor:
    """The whole ResQMixedLinearPrepared op: quantise, LQER projection, GEMM with its epilogue."""
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1]).contiguous()
    act = quantize_act(x, prep.parts, prep.pad)
    lqer_in = None
    if prep.lqer is not None:
        qa, sa = lqer_project(act, prep, tile)
        lqer_in = (qa, sa, prep.lqer[3], prep.lqer[4])
    y = grouped_gemm(act, prep.parts, prep.pad, prep.w_low, prep.w_high, prep.pad.w_low_pitch, 4, prep.wscale,
                     (prep.wscale.shape[1], 1), prep.wsum, prep.bias, prep.n, lqer_in, out_dtype, tile)
    return y.reshape(*lead, prep.n)


def hadamard(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """ResQHadamard: x [..., n] float32 @ kron(left, S / sqrt(n / a))."""
    a, n = left.shape[0], x.shape[-1]
    hadamard_kernels(n, a)
    b = n // a
    rows = x.reshape(-1, n).contiguous().float()
    y = torch.empty_like(rows)
    if rows.shape[0]:
        ft = fwht_tile(b)
        _run(fwht_kernel, (rows.shape[0], triton.cdiv(a, ft[0]["P_BLK"]), 1), (rows, y, a, n, float(math.sqrt(b))), ft)
        if a > 1:
            mt = mix_tile(a)
            _run(hadamard_mix_kernel, (rows.shape[0], triton.cdiv(b, mt[0]["BLOCK_C"]), 1),
                 (y, left.float().contiguous(), a, b, n), mt)
    return y.reshape(x.shape)
