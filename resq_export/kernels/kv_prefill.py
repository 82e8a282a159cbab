"""Prefill attention of ResQKVCacheAttention over the quantised cache (ops.json, contract v3): S new
queries of each sequence b, the query s at cache row past_length[b] + s, causal GQA attention over
rows 0 .. past_length[b] + s, after the append kernel has written the new rows in place. Output
[B, S, H * D] float32, softmax(q K^T / sqrt(D)) V with K, V the dequantised rows s * (q - z).

One program per (tile of BLOCK_M query rows, sequence and KV head): the rows of a tile are the
(position, head) pairs of the KV head's GQA group, flattened position-major, so every K/V tile is
read and unpacked once for the whole group. Keys in tiles of BLOCK_N, tensor-core `tl.dot` with
float32 accumulation, online softmax in base 2, the causal mask only on the tiles that need it.

The quantisation is exploited, not undone: codes are integers below 256, so (codes - z) is exact in
fp16 and bf16, and per key j and channel group g (the low group [0, D - r), the high group [D - r, D))
    q . k_j = sum_g s_jg * (q_g . (codes_jg - z_jg))
with the per-key scale applied once to the dot's [BLOCK_M, BLOCK_N] result, never per channel; the
only rounding before the float32 accumulation is that of q to the dot's dtype (fp16, or bf16 for bf16
q). (The zero point can also be folded as z_jg * sum(q_g); subtracting it from the codes, as for V,
keeps the operand exact without the cancellation of two large sums, and measured fewer registers.)
V likewise: P V = sum_g smax_g * ((P * s_g / smax_g) . (codes_g - z_g)), the per-key scale folded
into P, which is rounded once to the dot's dtype, normalised by the tile's largest scale so that
small scales do not fall into fp16's subnormals.

Layout of the dots: a group is a window of channels, zero-masked past its end: the low group in
[0, D_PAD) (D_PAD = the next power of two >= D, at least 64; at 256 as two windows of 128, for the
registers), the high group in [D - r, D - r + H_PAD)
(H_PAD: the first of 16, 32, D_PAD that holds r; 0 when r = 0). At D = 128, r = 16 that is 144 MMA
channels for the 128 of an FP16 attention. r itself is a runtime argument, so one compiled
configuration serves every high fraction whose r fits its H_PAD.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _codes(ptr, roff, kmask, width, PAD: tl.constexpr, BITS: tl.constexpr, ROWS_FIRST: tl.constexpr):
    """The uint8 codes of a group's channels 0 .. width - 1 (zero past width; ptr at the group's first
    byte) of the rows at byte offsets roff [BLOCK_N], as [BLOCK_N, PAD] (ROWS_FIRST) or [PAD, BLOCK_N].
    4-bit: one byte per two channels, unpacked in registers (channel 2j in the low nibble of byte j);
    bytes stay bytes until the conversion to the dot's dtype (a quarter of an int32 tile's registers)."""
    if BITS == 4:
        j = tl.arange(0, PAD // 2)
        if ROWS_FIRST:
            b = tl.load(ptr + roff[:, None] + j[None, :], mask=kmask[:, None] & (2 * j < width)[None, :], other=0)
            c = tl.reshape(tl.join(b & 15, b >> 4), [roff.shape[0], PAD])
        else:
            b = tl.load(ptr + roff[None, :] + j[:, None], mask=kmask[None, :] & (2 * j < width)[:, None], other=0)
            c = tl.reshape(tl.permute(tl.join(b & 15, b >> 4), [0, 2, 1]), [PAD, roff.shape[0]])
    else:
        i = tl.arange(0, PAD)
        if ROWS_FIRST:
            c = tl.load(ptr + roff[:, None] + i[None, :], mask=kmask[:, None] & (i < width)[None, :], other=0)
        else:
            c = tl.load(ptr + roff[None, :] + i[:, None], mask=kmask[None, :] & (i < width)[:, None], other=0)
    return c


@triton.jit
def _to_dot(x, DT: tl.constexpr):
    """float32 -> the dot's dtype, rounded to nearest even (once); fp16 / bf16 input as it is."""
    if x.dtype == DT:
        return x
    return x.to(DT, fp_downcast_rounding="rtne")


@triton.jit
def _scores(q_lo, q_lo2, q_hi, k_codes, k_scales, k_zeros, roff, slot, kmask, low, high, low_bytes, G, qk_scale,
            W: tl.constexpr, SPLIT: tl.constexpr, H_PAD: tl.constexpr, KV_BITS: tl.constexpr,
            HIGH_BITS: tl.constexpr, DT: tl.constexpr):
    """Scores of the tile's rows against keys `slot` [BLOCK_N], in log2 units (x log2(e) / sqrt(D))."""
    s = tl.load(k_scales + slot * G, mask=kmask, other=0.0) * qk_scale
    z = tl.load(k_zeros + slot * G, mask=kmask, other=0).to(DT)
    k = _codes(k_codes, roff, kmask, low, W, KV_BITS, False).to(DT) - z[None, :]  # exact: |codes - z| < 256
    dot = tl.dot(q_lo, k)
    if SPLIT == 2:  # the low group's second window of W channels
        k = _codes(k_codes + W * KV_BITS // 8, roff, kmask, low - W, W, KV_BITS, False).to(DT) - z[None, :]
        dot = tl.dot(q_lo2, k, dot)
    scores = dot * s[None, :]
    if H_PAD > 0:
        s = tl.load(k_scales + slot * G + 1, mask=kmask, other=0.0) * qk_scale
        z = tl.load(k_zeros + slot * G + 1, mask=kmask, other=0).to(DT)
        k = _codes(k_codes + low_bytes, roff, kmask, high, H_PAD, HIGH_BITS, False).to(DT) - z[None, :]
        scores += tl.dot(q_hi, k) * s[None, :]
    return scores


@triton.jit
def _weights(p, alpha, c, v_scales, v_zeros, slot, kmask, g, G, DT: tl.constexpr):
    """P's weights for channel group g: (P * s / smax in the dot's dtype, the accumulators' rescale, the
    new units smax, the zero points). The accumulators are held in units of the last tile's largest
    scale (true = acc * c), so the new tile's product accumulates inside the MMA and each accumulator
    element costs one product per tile (the online-softmax rescale), not three."""
    s = tl.load(v_scales + slot * G + g, mask=kmask, other=0.0)
    z = tl.load(v_zeros + slot * G + g, mask=kmask, other=0).to(DT)
    smax = tl.max(s, 0)  # > 0: the tile's first key is always a real row, and scales are > 0
    pw = _to_dot(p * (s / smax)[None, :], DT)
    return pw, alpha * (c / smax), smax, z


@triton.jit
def _pv(acc, pw, factor, z, v_codes, roff, kmask, width, PAD: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr):
    """acc * factor + P . (codes - z) over a window of PAD channels (`width` of them real)."""
    v = _codes(v_codes, roff, kmask, width, PAD, BITS, True).to(DT) - z[:, None]  # exact: |codes - z| < 256
    return tl.dot(pw, v, acc * factor[:, None])


@triton.jit
def _tile(acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_i, l_i, n, q_lo, q_lo2, q_hi, k_codes, k_scales, k_zeros, v_codes,
          v_scales, v_zeros, last, end, low, high, low_bytes, row_bytes, G, qk_scale,
          BLOCK_N: tl.constexpr, W: tl.constexpr, SPLIT: tl.constexpr, H_PAD: tl.constexpr,
          KV_BITS: tl.constexpr, HIGH_BITS: tl.constexpr, DT: tl.constexpr, MASKED: tl.constexpr):
    """One tile of keys n .. n + BLOCK_N - 1 into the online softmax. MASKED: the causal mask (each
    row's last key `last`) and the sequence's end `end`; unmasked tiles lie below every row's last key."""
    t = n + tl.arange(0, BLOCK_N)
    kmask = t < end
    slot = t  # the pointers are the sequence's and KV head's: int32 offsets (fewer registers than int64)
    roff = slot * row_bytes
    scores = _scores(q_lo, q_lo2, q_hi, k_codes, k_scales, k_zeros, roff, slot, kmask, low, high, low_bytes, G,
                     qk_scale, W, SPLIT, H_PAD, KV_BITS, HIGH_BITS, DT)
    if MASKED:
        scores = tl.where(t[None, :] <= last[:, None], scores, float("-inf"))
    # every row has a real key in the first tile it sees (key 0 or a key below its last), so m_new is finite
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(scores - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    pw, factor, c_lo, z = _weights(p, alpha, c_lo, v_scales, v_zeros, slot, kmask, 0, G, DT)
    acc_lo = _pv(acc_lo, pw, factor, z, v_codes, roff, kmask, low, W, KV_BITS, DT)
    if SPLIT == 2:
        acc_lo2 = _pv(acc_lo2, pw, factor, z, v_codes + W * KV_BITS // 8, roff, kmask, low - W, W, KV_BITS, DT)
    if H_PAD > 0:
        pw, factor, c_hi, z = _weights(p, alpha, c_hi, v_scales, v_zeros, slot, kmask, 1, G, DT)
        acc_hi = _pv(acc_hi, pw, factor, z, v_codes + low_bytes, roff, kmask, high, H_PAD, HIGH_BITS, DT)
    return acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_new, l_i


@triton.jit
def kv_prefill_kernel(q, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, past_length, out,
                      seq, capacity, num_heads, num_kv_heads, head_dim, high, qk_scale,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, H_PAD: tl.constexpr,
                      KV_BITS: tl.constexpr, HIGH_BITS: tl.constexpr):
    """Causal GQA attention of S = seq new queries over the quantised cache (the module docstring).

    q: [B, H, S, D] float32 / float16 / bfloat16 (the dot's dtype: bf16 for bf16 q, else fp16).
    k_codes, v_codes: uint8 [B, Hkv, L, C] (C = (D - high) * KV_BITS / 8 + high * HIGH_BITS / 8, the low
    group's codes then the high group's, 4-bit ones two per byte); k_scales, v_scales: float32
    [B, Hkv, L, G]; k_zeros, v_zeros: uint8 [B, Hkv, L, G] (G = 2 if high else 1); past_length: int32
    [B] on the device, past_length[b] + S <= L = capacity; out: float32 [B, S, H * D]. high: the high
    group's width r (< D, at most H_PAD; H_PAD = 0 iff r = 0); D <= D_PAD. qk_scale: float32(log2(e) /
    sqrt(D)). Rows below a sequence's length are read, nothing else.
    Grid: (cdiv(S * H / Hkv, BLOCK_M), B * Hkv, 1)."""
    DT: tl.constexpr = tl.bfloat16 if q.dtype.element_ty == tl.bfloat16 else tl.float16
    # the low group in windows of at most 128 channels: at D 256 two, so that one window's q and K
    # operands are live at a time (one [D, BLOCK_N] K operand per warp spilled)
    SPLIT: tl.constexpr = 2 if D_PAD > 128 else 1
    W: tl.constexpr = D_PAD // SPLIT
    group = num_heads // num_kv_heads
    low = head_dim - high
    low_bytes = low * KV_BITS // 8
    row_bytes = low_bytes + high * HIGH_BITS // 8
    G = 1 + (high > 0).to(tl.int32)
    # the longest tiles (the last positions) first: they bound the launch's time
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_kv_heads
    kvh = bh % num_kv_heads
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < seq * group
    pos = rows // group
    head = kvh * group + rows % group
    q_row = ((b * num_heads + head).to(tl.int64) * seq + pos) * head_dim
    c = tl.arange(0, W)
    q_lo = _to_dot(tl.load(q + q_row[:, None] + c[None, :], mask=row_ok[:, None] & (c < low)[None, :], other=0.0), DT)
    if SPLIT == 2:
        q_lo2 = _to_dot(tl.load(q + q_row[:, None] + W + c[None, :], mask=row_ok[:, None] & (W + c < low)[None, :],
                                other=0.0), DT)
        acc_lo2 = tl.zeros([BLOCK_M, W], tl.float32)
    else:  # unused placeholders
        q_lo2 = q_lo
        acc_lo2 = tl.zeros([BLOCK_M, 16], tl.float32)
    if H_PAD > 0:
        hc = tl.arange(0, H_PAD)
        q_hi = _to_dot(tl.load(q + q_row[:, None] + low + hc[None, :], mask=row_ok[:, None] & (hc < high)[None, :],
                               other=0.0), DT)
        acc_hi = tl.zeros([BLOCK_M, H_PAD], tl.float32)
    else:  # unused placeholders of the same rank
        q_hi = q_lo
        acc_hi = tl.zeros([BLOCK_M, 16], tl.float32)

    past = tl.load(past_length + b)
    first_pos = pid_m * BLOCK_M // group
    last_pos = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // group, seq - 1)
    end = past + last_pos + 1  # keys the tile reads: 0 .. end - 1
    full = (past + first_pos + 1) // BLOCK_N * BLOCK_N  # keys below every row's last: no mask
    kv_row0 = bh.to(tl.int64) * capacity
    k_codes += kv_row0 * row_bytes
    v_codes += kv_row0 * row_bytes
    k_scales += kv_row0 * G
    v_scales += kv_row0 * G
    k_zeros += kv_row0 * G
    v_zeros += kv_row0 * G

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc_lo = tl.zeros([BLOCK_M, W], tl.float32)
    c_lo = tl.full((), 1.0, tl.float32)  # the accumulators' units (_weights)
    c_hi = tl.full((), 1.0, tl.float32)
    for n in range(0, full, BLOCK_N):
        acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_i, l_i = _tile(
            acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_i, l_i, n, q_lo, q_lo2, q_hi, k_codes, k_scales, k_zeros, v_codes,
            v_scales, v_zeros, end, end, low, high, low_bytes, row_bytes, G, qk_scale, BLOCK_N, W, SPLIT, H_PAD,
            KV_BITS, HIGH_BITS, DT, False)  # `last` unused without the mask
    # each row's last key (causal), computed here (tied to the first loop's result, which is > 0): live
    # across the first loop, it was one value too many at D 128
    last = past + (pid_m * BLOCK_M + tl.arange(0, BLOCK_M) + (l_i < 0).to(tl.int32)) // group
    for n in range(full, end, BLOCK_N):
        acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_i, l_i = _tile(
            acc_lo, acc_lo2, acc_hi, c_lo, c_hi, m_i, l_i, n, q_lo, q_lo2, q_hi, k_codes, k_scales, k_zeros, v_codes,
            v_scales, v_zeros, last, end, low, high, low_bytes, row_bytes, G, qk_scale, BLOCK_N, W, SPLIT, H_PAD,
            KV_BITS, HIGH_BITS, DT, True)

    inv_l = 1.0 / l_i
    # The rows' output offsets and masks again, tied to the loop's result (l_i > 0, so the term is 0):
    # computed before the loop, they stayed live across it (spilled to local memory at D 128).
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M) + (l_i < 0).to(tl.int32)
    row_ok = rows < seq * group
    o_row = ((b * seq + rows // group).to(tl.int64) * num_heads + kvh * group + rows % group) * head_dim
    if H_PAD > 0:  # the small accumulator first: its registers are free for the large one's store
        hc = tl.arange(0, H_PAD)
        tl.store(out + o_row[:, None] + low + hc[None, :], acc_hi * (c_hi * inv_l)[:, None],
                 mask=row_ok[:, None] & (hc < high)[None, :])
    c = tl.arange(0, W)
    if SPLIT == 2:
        tl.store(out + o_row[:, None] + W + c[None, :], acc_lo2 * (c_lo * inv_l)[:, None],
                 mask=row_ok[:, None] & (W + c < low)[None, :])
    tl.store(out + o_row[:, None] + c[None, :], acc_lo * (c_lo * inv_l)[:, None],
             mask=row_ok[:, None] & (c < low)[None, :])


# ---- launch policy and compiled configurations ------------------------------------------------------

# (constexprs, num_warps, num_stages) by D_PAD: a speed choice only (every tile computes the same
# attention to the tolerance of the tests). Chosen by ptxas -v on sm_80 (docs/benchmarks-gpu.md, prefill):
# the unpacked K tile is the MMA's B operand, built in registers and replicated in every warp (the
# warps split M), so BLOCK_N stays small.
PREFILL_TILES = {
    64: (dict(BLOCK_M=128, BLOCK_N=32), 8, 1),
    128: (dict(BLOCK_M=128, BLOCK_N=16), 8, 2),
    256: (dict(BLOCK_M=64, BLOCK_N=16), 8, 2),
}
MAX_HEAD_DIM = 256  # ops.json's gpu.max_head_dim
# High-group windows compiled per D_PAD: r = D/8 (the default --high-fraction 0.125) needs 16 at D 64
# and 128, 32 at D 256; D_PAD serves every r.
HIGH_PADS = (16, 32)
# x / q dtypes, as launch.py names them
DTYPE_SUFFIX = {"*fp32": "", "*fp16": "_f16", "*bf16": "_bf16"}


def d_pad(head_dim: int) -> int:
    return max(64, 1 << (head_dim - 1).bit_length())


def h_pad(high: int, dp: int) -> int:
    """The smallest compiled high-group window for r = high channels (0: no high group)."""
    if high == 0:
        return 0
    return next(p for p in (*HIGH_PADS, dp) if p >= high)


def prefill_kernel_name(head_dim: int, high: int, kv_bits: int, high_bits: int, q_suffix: str = "") -> str:
    dp = d_pad(head_dim)
    hp = h_pad(high, dp)
    return f"kv_prefill_d{dp}_r{hp}_k{kv_bits}" + (f"_h{high_bits}" if hp else "") + q_suffix


def prefill_config(dp: int, hp: int, kv_bits: int, high_bits: int, q_type: str = "*fp32"):
    """The KernelConfig (kernel_config.py) of one prefill tile: D_PAD dp, high window hp (0: none, when
    high_bits is not looked at and the name leaves it out), q of Triton type q_type (DTYPE_SUFFIX)."""
    from .kernel_config import _config

    types = dict(k_codes="*u8", k_scales="*fp32", k_zeros="*u8", v_codes="*u8", v_scales="*fp32", v_zeros="*u8",
                 past_length="*i32", out="*fp32", qk_scale="fp32", q=q_type)
    name = f"kv_prefill_d{dp}_r{hp}_k{kv_bits}" + (f"_h{high_bits}" if hp else "") + DTYPE_SUFFIX[q_type]
    return _config(name, kv_prefill_kernel, types, PREFILL_TILES[dp], D_PAD=dp, H_PAD=hp, KV_BITS=kv_bits,
                   HIGH_BITS=high_bits)


def prefill_configs(bits=((4, 8), (8, 8)), q_types=tuple(DTYPE_SUFFIX)) -> list:
    """KernelConfigs of the prefill attention: every D_PAD (64, 128, 256) x high window (none,
    HIGH_PADS, D_PAD) x (kv_bits, high_bits) in `bits` x q dtype in `q_types` (what the kernel can be
    compiled for; kv_launch.prefill_configs names the ones the library embeds)."""
    out = []
    for dp in PREFILL_TILES:
        for hp in sorted({0, *(p for p in HIGH_PADS if p < dp), dp}):
            for kv_bits, high_bits in dict.fromkeys(b if hp else (b[0], 8) for b in bits):
                out += [prefill_config(dp, hp, kv_bits, high_bits, q_type) for q_type in q_types]
    return out


def _check(q, k_cache, v_cache, past_length, high, kv_bits, high_bits):
    """ValueError naming the first input that does not fit the contract's shapes and dtypes."""
    import torch

    if q.dim() != 4 or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q must be [B, H, S, D] float32/float16/bfloat16, got {tuple(q.shape)} {q.dtype}")
    b, h, _s, d = q.shape
    if not 0 < d <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {d}: the prefill kernel serves 1 .. {MAX_HEAD_DIM}")
    if kv_bits not in (4, 8) or high_bits not in (4, 8) or not 0 <= high < d:
        raise ValueError(f"kv_bits {kv_bits}, high_bits {high_bits}, high channels {high}: bits are 4 or 8, 0 <= r < D")
    if (kv_bits == 4 and (d - high) % 2) or (high_bits == 4 and high % 2):
        raise ValueError(f"a 4-bit group needs an even width (D = {d}, r = {high})")
    row = (d - high) * kv_bits // 8 + high * high_bits // 8
    groups = 2 if high else 1
    for name, (codes, scales, zeros) in (("k", k_cache), ("v", v_cache)):
        hkv, cap = codes.shape[1], codes.shape[2]
        if (codes.dtype != torch.uint8 or tuple(codes.shape) != (b, hkv, cap, row) or scales.dtype != torch.float32
                or tuple(scales.shape) != (b, hkv, cap, groups) or zeros.dtype != torch.uint8
                or tuple(zeros.shape) != (b, hkv, cap, groups)):
            raise ValueError(f"{name} cache: codes uint8 [B, Hkv, L, {row}], scales float32 and zeros uint8 "
                             f"[B, Hkv, L, {groups}] expected, got {tuple(codes.shape)} {codes.dtype}, "
                             f"{tuple(scales.shape)} {scales.dtype}, {tuple(zeros.shape)} {zeros.dtype}")
        if not all(t.is_contiguous() for t in (codes, scales, zeros)):
            raise ValueError(f"{name} cache: contiguous tensors expected")
    if k_cache[0].shape != v_cache[0].shape or h % k_cache[0].shape[1]:
        raise ValueError(f"k and v caches differ, or {h} query heads are no multiple of {k_cache[0].shape[1]} KV heads")
    if past_length.dtype != torch.int32 or tuple(past_length.shape) != (b,):
        raise ValueError(f"past_length must be int32 [{b}], got {tuple(past_length.shape)} {past_length.dtype}")
    if q.shape[2] > k_cache[0].shape[2]:
        raise ValueError(f"{q.shape[2]} new rows do not fit a cache of {k_cache[0].shape[2]} rows")


def prefill_attention(q, k_cache, v_cache, past_length, high: int = 0, kv_bits: int = 4, high_bits: int = 8,
                      out=None, tile=None):
    """The attention part of one ResQKVCacheAttention call, after the append: q [B, H, S, D] (after
    RoPE and U_C; float32, float16 or bfloat16), k_cache / v_cache: (codes uint8 [B, Hkv, L, C],
    scales float32 [B, Hkv, L, G], zero points uint8 [B, Hkv, L, G]) holding the new rows already,
    past_length int32 [B] on q's device (never read on the host: past_length[b] + S <= L is the
    caller's contract, as in the plugin). high: the high group's r channels at high_bits (0: one
    group). -> out float32 [B, S, H * D] (written into `out` when given). tile: (constexprs,
    num_warps, num_stages) instead of PREFILL_TILES' (the tests' small tiles)."""
    import torch

    _check(q, k_cache, v_cache, past_length, high, kv_bits, high_bits)
    b, h, s, d = q.shape
    hkv, cap = k_cache[0].shape[1], k_cache[0].shape[2]
    dp = d_pad(d)
    hp = h_pad(high, dp)
    consts, warps, stages = tile or PREFILL_TILES[dp]
    if out is None:
        out = torch.empty(b, s, h * d, dtype=torch.float32, device=q.device)
    elif out.dtype != torch.float32 or tuple(out.shape) != (b, s, h * d) or not out.is_contiguous():
        raise ValueError(f"out must be contiguous float32 [{b}, {s}, {h * d}]")
    if b == 0 or s == 0:
        return out
    q = q.contiguous()
    grid = (triton.cdiv(s * (h // hkv), consts["BLOCK_M"]), b * hkv, 1)
    qk_scale = LOG2E / d**0.5
    kv_prefill_kernel[grid](q, *k_cache, *v_cache, past_length, out, s, cap, h, hkv, d, high, qk_scale,
                            **consts, D_PAD=dp, H_PAD=hp, KV_BITS=kv_bits, HIGH_BITS=high_bits,
                            num_warps=warps, num_stages=stages)
    return out
