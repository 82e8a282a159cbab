"""Thin torch launchers of the KV-cache attention kernels: the launch policy of ResQKVCacheAttention
(which configuration, grid and workspace), what the C++ plugin does with the cubins
(plugins/kv_attention/triton_kv_attention.cpp). Under TRITON_INTERPRET=1 on CPU tensors (the tests),
on a GPU on CUDA tensors. launch._run is the one launch call, so the seam runner can replace it.

One ResQKVCacheAttention call (B sequences, S new positions, H query / Hkv KV heads, head_dim D):
  1. with U_C: kv_rotate  q -> q_rot [B, H, S, D], k -> k_rot [B, Hkv, S, D] (workspace)
  2. kv_append            K and V rows quantised into the cache at past_length[b] + s (in place)
  3. S >= KV_PREFILL_MIN_S with a compiled prefill configuration (prefill_name): kv_prefill_kernel,
     tensor-core causal attention over the cache (rows 0 .. past_length[b] + s) -> Y;
     else (decode, and the layouts prefill has no configuration for: 4-bit high parts): kv_decode over
     `splits` chunks of the real length -> part_ml [splits, 2, B*H*S], part_acc [splits, B*H*S, D];
     kv_combine -> Y
Workspace (each part 256-byte aligned): q_rot, k_rot, part_ml, part_acc (the prefill kernel uses none
of the last two; the size stays the decode path's, so one plan serves every S).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton

from . import launch
from .kv_append import kv_append_kernel, kv_rotate_kernel
from .kv_decode import LOG2E, kv_combine_kernel, kv_decode_kernel
from . import kv_prefill
from .kv_prefill import kv_prefill_kernel, prefill_kernel_name

# The policy (upper-case integers are compiled into libresq_triton.so beside the cubins, for the C++
# launch code). A pure speed choice: every split count gives the same result up to float rounding.
KV_BLOCK_T = 32  # keys per decode step: 32 x 72 bytes of K and of V per step at head_dim 128 (64 spilled)
KV_MAX_SPLITS = 64  # kv_combine's BLOCK_S
KV_TARGET_PROGRAMS = 264  # decode programs to aim for: two per SM of an H100 (132 SMs)
KV_MIN_GP = 16  # query rows of a decode program: the GQA group padded to a tensor-core tile (groups <= 16)
KV_WIDE_MIN_D = 64  # from this BLOCK_D on, configurations with 4-byte row loads (ALIGN 4) exist
KV_HEAD_BLOCKS = (16, 32, 64, 128, 256)  # BLOCK_D of the low part (D - r channels, padded)
KV_HIGH_BLOCKS = (0, 16, 32)  # BLOCK_R of the high part (r channels; 0: none): r <= 32
KV_PREFILL_MIN_S = 2  # from this many new positions, the prefill kernel (where a configuration is compiled)
APPEND_TILE = (dict(BLOCK_T=8, BLOCK_H=32), 4, 1)
ROTATE_TILE = (dict(BLOCK_R=32, BLOCK_C=64), 4, 1)
COMBINE_TILE = (dict(BLOCK_S=KV_MAX_SPLITS, BLOCK_D=64), 4, 1)
DECODE_WARPS, DECODE_STAGES = 4, 2
# The decode kernel's Q dtypes by name suffix; the plugin passes float32 (the contract's)
Q_SUFFIX = {torch.float32: "", torch.float16: "_f16", torch.bfloat16: "_bf16"}


@dataclass(frozen=True)
class KVAttrs:
    """The op's attributes (ops.json ResQKVCacheAttention)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    high_channels: int = 0
    kv_bits: int = 4
    high_bits: int = 8

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def low_bytes(self) -> int:
        return (self.head_dim - self.high_channels) * self.kv_bits // 8

    @property
    def row_bytes(self) -> int:
        return self.low_bytes + self.high_channels * self.high_bits // 8

    @property
    def groups(self) -> int:
        return 2 if self.high_channels else 1

    @property
    def bits(self) -> tuple[int, int]:
        """(BITS_LOW, BITS_HIGH) of the configurations: without a high part, high_bits is irrelevant and
        the names use 8."""
        return self.kv_bits, self.high_bits if self.high_channels else 8


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(0, n - 1).bit_length())


def decode_shape(block_d: int, block_r: int, bits: tuple[int, int]) -> tuple[int, int]:
    """(BLOCK_T, num_warps) of the decode kernel: 16 keys a step at 256 channels, else KV_BLOCK_T; the
    warps where each configuration compiles without spills on every arch (ptxas 13.0, 2026-12-05: with
    4 warps 47 of 430 cubins spilled 8-280 bytes, all with a high part; with 8 for every high part,
    15, all at BLOCK_D <= 64 with 4-bit parts; 4/4-bit at BLOCK_D 128 spills with 4): 8 at 256 channels
    and with a high part, except for 4/4-bit parts at BLOCK_D <= 64 and narrow heads (BLOCK_D <= 32)
    that are not 8/8-bit, which keep 4."""
    block_t = 16 if block_d >= 256 else KV_BLOCK_T
    if block_d >= 256:
        return block_t, 8
    if not block_r or (block_d <= 64 and tuple(bits) == (4, 4)) or (block_d <= 32 and tuple(bits) != (8, 8)):
        return block_t, DECODE_WARPS
    return block_t, 8


def decode_tile(a: KVAttrs) -> dict:
    """kv_decode_kernel's constexprs for a layout; ValueError (the reason) where none is compiled."""
    low, r = a.head_dim - a.high_channels, a.high_channels
    block_d, block_r = _pow2(low, 16), (_pow2(r, 16) if r else 0)
    if a.num_heads % a.num_kv_heads or a.group > KV_MIN_GP or block_d not in KV_HEAD_BLOCKS \
            or block_r not in KV_HIGH_BLOCKS or a.kv_bits not in (4, 8) or a.high_bits not in (4, 8):
        raise ValueError(f"no compiled KV attention kernel for head_dim {a.head_dim} with {r} high channels at "
                         f"{a.kv_bits}/{a.high_bits} bits, {a.num_heads}/{a.num_kv_heads} heads (the kernels take "
                         f"head_dim <= 256, at most 32 high channels, 4 or 8 bits, at most {KV_MIN_GP} query heads "
                         "per KV head)")
    # 4-byte loads of the packed rows where every row and part starts at a multiple of 4 bytes
    align = 4 if a.row_bytes % 4 == 0 and a.low_bytes % 4 == 0 and block_d >= KV_WIDE_MIN_D else 1
    bits_low, bits_high = a.bits
    return dict(GP=_pow2(a.group, KV_MIN_GP), BLOCK_T=decode_shape(block_d, block_r, a.bits)[0], BLOCK_D=block_d,
                BLOCK_R=block_r, BITS_LOW=bits_low, BITS_HIGH=bits_high, ALIGN=align)


def decode_name(a: KVAttrs, q_dtype=torch.float32) -> str:
    t = decode_tile(a)
    return (f"kv_decode_g{t['GP']}_d{t['BLOCK_D']}_r{t['BLOCK_R']}_b{t['BITS_LOW']}{t['BITS_HIGH']}_al{t['ALIGN']}"
            f"{Q_SUFFIX[q_dtype]}")


def n_splits(a: KVAttrs, batch: int, seq: int, capacity: int) -> int:
    """Splits of the keys: enough programs to fill the GPU, at most one per BLOCK_T keys of the capacity
    (a bound on every real length; the real length then sets each split's size on the device)."""
    want = -(-KV_TARGET_PROGRAMS // max(1, batch * a.num_kv_heads * seq))
    return max(1, min(KV_MAX_SPLITS, want, -(-capacity // KV_BLOCK_T)))


def kv_kernels(a: KVAttrs, seq: int, rotation: bool, q_dtype=torch.float32) -> list[str]:
    """The configurations (configs.py names) one call launches, in order."""
    bits_low, bits_high = a.bits
    prefill = prefill_name(a, seq, q_dtype)
    return ((["kv_rotate"] * 2 if rotation else []) + [f"kv_append_b{bits_low}{bits_high}"]
            + ([prefill] if prefill else [decode_name(a, q_dtype), "kv_combine"]))


def _align(n: int) -> int:
    return (n + 255) // 256 * 256


def workspace_bytes(a: KVAttrs, batch: int, seq: int, capacity: int, rotation: bool) -> int:
    """The C++ plan's size (triton_kv_attention.cpp): q_rot, k_rot, part_ml, part_acc."""
    rows = batch * a.num_heads * seq
    splits = n_splits(a, batch, seq, capacity)
    rot = _align(rows * a.head_dim * 4) + _align(batch * a.num_kv_heads * seq * a.head_dim * 4) if rotation else 0
    return rot + _align(splits * 2 * rows * 4) + _align(splits * rows * a.head_dim * 4)


def rotate(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x [..., D] float32 @ u [D, D] in the contract's GPU order (decoder.rotate_keys_gpu)."""
    d = x.shape[-1]
    rows = x.reshape(-1, d).contiguous().float()
    y = torch.empty_like(rows)
    if rows.shape[0]:
        c = ROTATE_TILE[0]
        launch._run(kv_rotate_kernel, (triton.cdiv(rows.shape[0], c["BLOCK_R"]), triton.cdiv(d, c["BLOCK_C"]), 1),
                    (rows, u.float().contiguous(), y, rows.shape[0], d), ROTATE_TILE)
    return y.reshape(x.shape)


def append(a: KVAttrs, k: torch.Tensor, v: torch.Tensor, k_cache, v_cache, past_length: torch.Tensor) -> None:
    """Quantise k, v [B, Hkv, S, D] float32 into the caches (codes, scales, zeros) at past_length[b], in place."""
    bsz, hkv, seq, d = k.shape
    if seq == 0:
        return
    capacity = k_cache[0].shape[2]
    bits_low, bits_high = a.bits
    launch._run(kv_append_kernel, (triton.cdiv(seq, APPEND_TILE[0]["BLOCK_T"]), bsz * hkv, 2),
                (k.contiguous(), v.contiguous(), past_length, *k_cache, *v_cache, seq, hkv, capacity, d,
                 a.high_channels, a.row_bytes, a.low_bytes), APPEND_TILE, BITS_LOW=bits_low, BITS_HIGH=bits_high)


def decode_attention(a: KVAttrs, q: torch.Tensor, k_cache, v_cache, past_length: torch.Tensor,
                     splits: int | None = None) -> torch.Tensor:
    """Attention of q [B, H, S, D] (after U_C) over the cache rows 0 .. past_length[b] + s -> Y [B, S, H * D]
    float32, by flash-decoding (any S; the prefill kernel is the fast path for S > 1)."""
    bsz, h, seq, d = q.shape
    capacity = k_cache[0].shape[2]
    y = torch.empty(bsz, seq, h * d, dtype=torch.float32, device=q.device)
    if seq == 0:
        return y
    tile = decode_tile(a)
    splits = splits or n_splits(a, bsz, seq, capacity)
    rows = bsz * h * seq
    part_ml = torch.empty(splits, 2, rows, dtype=torch.float32, device=q.device)
    part_acc = torch.empty(splits, rows, d, dtype=torch.float32, device=q.device)
    align = tile["ALIGN"]
    launch._run(kv_decode_kernel, (splits, bsz * a.num_kv_heads, seq),
                (q.contiguous(), *k_cache, *v_cache, past_length, part_ml, part_acc, seq, h, a.num_kv_heads, capacity,
                 d, a.high_channels, a.row_bytes // align, a.low_bytes // align, splits, LOG2E / math.sqrt(d)),
                ({}, decode_shape(tile["BLOCK_D"], tile["BLOCK_R"], (tile["BITS_LOW"], tile["BITS_HIGH"]))[1],
                 DECODE_STAGES), **tile)
    c = COMBINE_TILE[0]
    launch._run(kv_combine_kernel, (rows, triton.cdiv(d, c["BLOCK_D"]), 1), (part_ml, part_acc, y, rows, seq, h, d, splits),
                COMBINE_TILE)
    return y


# The prefill configurations compiled (built here directly; kv_prefill.prefill_configs() lists every
# one the kernel can be compiled for): head_dim <= 128 (D_PAD 64, 128), the high windows the decode
# kernel also takes (r <= 32), (kv_bits, high_bits) 4/8 and 8/8, float32 q (the plugin's) and float16 /
# bfloat16 q for the Llama-3-style heads (the benchmarks, as for decode); not the two that spill
# (PREFILL_SPILLED: an 8-bit low group at D 64 with a high group). D_PAD 256 and the D_PAD-wide
# high windows spill on every arch (docs/benchmarks-gpu.md, the prefill's compile check): there the
# decode kernel serves S > 1 too (prefill_name). A speed choice: both paths compute the same attention.
PREFILL_HEAD_PADS = (64, 128)
PREFILL_HIGH_PADS = (0, 16, 32)
PREFILL_BITS = ((4, 8), (8, 8))  # (kv_bits, high_bits); without a high window only kv_bits names it
# (D_PAD, H_PAD, kv_bits, high_bits) also compiled for a float16 and a bfloat16 q (_f16, _bf16)
PREFILL_HALF_Q = ((128, 0, 4, 8), (128, 16, 4, 8))
# spilled (ptxas 13.0, 2026-12-05): d64_r16_k8_h8 on sm_120 (8 + 4 bytes), d64_r32_k8_h8 on sm_80 (32 + 20)
PREFILL_SPILLED = ((64, 16, 8, 8), (64, 32, 8, 8))


def prefill_configs() -> list:
    """The prefill kernel's compiled configurations (configs.kv_configs lists them)."""
    tiles = [(dp, hp, kb, hb) for dp in PREFILL_HEAD_PADS for hp in PREFILL_HIGH_PADS for kb, hb in PREFILL_BITS
             if (dp, hp, kb, hb) not in PREFILL_SPILLED]
    return [kv_prefill.prefill_config(*tile, q_type) for tile in tiles
            for q_type in (("*fp32", "*fp16", "*bf16") if tile in PREFILL_HALF_Q else ("*fp32",))]


@functools.cache
def _prefill_by_name() -> dict:
    return {c.name: c for c in prefill_configs()}


def prefill_name(a: KVAttrs, seq: int, q_dtype=torch.float32) -> str | None:
    """The prefill configuration (kv_prefill.prefill_kernel_name) for S = seq new positions, or None
    where the decode kernel serves them: S < KV_PREFILL_MIN_S, or a layout prefill_configs does not
    compile (a 4-bit high part). triton_kv_attention.cpp chooses the same way (the name's cubin)."""
    if seq < KV_PREFILL_MIN_S:
        return None
    name = prefill_kernel_name(a.head_dim, a.high_channels, a.kv_bits, a.high_bits, Q_SUFFIX[q_dtype])
    return name if name in _prefill_by_name() else None


def prefill_attention(a: KVAttrs, q: torch.Tensor, k_cache, v_cache, past_length: torch.Tensor,
                      name: str) -> torch.Tensor:
    """Attention of q [B, H, S, D] (after U_C) over the cache rows 0 .. past_length[b] + s -> Y [B, S, H * D]
    float32 by kv_prefill_kernel's configuration `name`: its grid and arguments as kv_prefill's launcher
    passes them, through launch._run (the seam the C++ plugin's launches mirror)."""
    bsz, h, seq, d = q.shape
    y = torch.empty(bsz, seq, h * d, dtype=torch.float32, device=q.device)
    if seq == 0 or bsz == 0:
        return y
    config = _prefill_by_name()[name]
    consts = dict(config.constexprs)
    tile = ({}, config.num_warps, config.num_stages)
    grid = (triton.cdiv(seq * a.group, consts["BLOCK_M"]), bsz * a.num_kv_heads, 1)
    launch._run(kv_prefill_kernel, grid, (q.contiguous(), *k_cache, *v_cache, past_length, y, seq, k_cache[0].shape[2],
                                          h, a.num_kv_heads, d, a.high_channels, LOG2E / math.sqrt(d)), tile, **consts)
    return y


def kv_attention(a: KVAttrs, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache, v_cache,
                 past_length: torch.Tensor, key_rotation: torch.Tensor | None = None) -> torch.Tensor:
    """The whole op on the kernels: k_cache / v_cache are (codes, scales, zeros) written in place (the
    TensorRT flavour's aliased present outputs); returns Y [B, S, H * D] float32."""
    decode_tile(a)  # the layouts without a kernel are refused before the cache is written, whichever path serves S
    if key_rotation is not None:
        q, k = rotate(q.float(), key_rotation), rotate(k.float(), key_rotation)
    append(a, k.float(), v.float(), k_cache, v_cache, past_length)
    name = prefill_name(a, q.shape[2], q.dtype)
    if name is not None:
        return prefill_attention(a, q, k_cache, v_cache, past_length, name)
    return decode_attention(a, q, k_cache, v_cache, past_length)
