"""ResQKVCacheAttention's attention over the quantised cache as flash-decoding (docs/ops.md, docs/plugins.md).

kv_decode_kernel: one program per (split, batch x KV head, query position) serves every query head of
its GQA group (GP rows: the group padded to a power of two of at least 16, the smallest tensor-core
tile). The keys 0 .. n - 1 of query s (n = past_length[b] + s + 1, read on the device) are cut into
`splits` equal chunks of whole BLOCK_T tiles: the split follows the real length, not the capacity, and
a program whose chunk is empty stores an empty partial (m = -inf, l = 0). Per tile of BLOCK_T keys:
- the packed rows are loaded as byte vectors that the compiler widens to 4-byte loads where the
  layout allows (ALIGN = 4: row and part offsets are multiples of 4) and unpacked in registers
  (two nibbles per byte, put back in channel order with interleave);
- scores by the zero-point algebra, one dot per part on the raw codes: s_k * (q . c - z_k * sum(q)),
  so the per-token scale and zero point cost one multiply-add per key and part, not per channel;
- online softmax in base 2; the values likewise: acc += (p s_v) . c - sum_t(p s_v z_v).
kv_combine_kernel: the splits' partials merged by log-sum-exp into Y [B, S, H * D] float32.

The dots take Q's dtype: the codes (< 256) are exact in float16 and bfloat16, p s_v is rounded to it
(as flash attention rounds p); a float32 Q uses tf32x3 (about float32's precision on tensor cores).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _codes(row, tmask, nbytes, BITS: tl.constexpr, BLOCK_C: tl.constexpr):
    """The codes of one part of BLOCK_T cached rows ([BLOCK_T] pointers to the part's first byte), int32
    [BLOCK_T, BLOCK_C] in channel order; 0 past the part's nbytes bytes and in masked rows."""
    NB: tl.constexpr = BLOCK_C * BITS // 8
    j = tl.arange(0, NB)
    raw = tl.load(row[:, None] + j[None, :], mask=tmask[:, None] & (j < nbytes)[None, :], other=0).to(tl.int32)
    if BITS == 4:
        return tl.interleave(raw & 15, raw >> 4)  # channel 2j: the low nibble of byte j
    else:
        return raw


@triton.jit
def _pow2_scale(m):
    """(2^-e, 2^e) with m * 2^-e in [1, 2), from m's exponent bits (exact, for the interpreter and the GPU
    alike); (1, 1) where m is 0. Scaling by them is exact, so an operand normalised by the first and a
    product multiplied back by the second keep float16's precision without its range limits."""
    e = (m.to(tl.int32, bitcast=True) >> 23) & 255
    e = tl.minimum(tl.maximum(tl.where(m > 0.0, e, 127), 1), 253)
    return ((254 - e) << 23).to(tl.float32, bitcast=True), (e << 23).to(tl.float32, bitcast=True)


@triton.jit
def _dot(a_hi, a_lo, b, SPLIT: tl.constexpr):
    """a . b on float16 tensor cores, float32 sums: b holds codes (exact in float16); a, normalised by a
    power of two, is a_hi + a_lo (SPLIT: two float16 parts, 22 bits of a float32 operand) or a_hi alone."""
    acc = tl.dot(a_hi, b)
    if SPLIT:
        acc = tl.dot(a_lo, b, acc)
    return acc


@triton.jit
def _split(a, SPLIT: tl.constexpr):
    """float32 a -> (hi, lo) float16 with hi + lo = a to 22 bits (lo unused without SPLIT)."""
    hi = a.to(tl.float16)
    if SPLIT:
        return hi, (a - hi.to(tl.float32)).to(tl.float16)
    return hi, hi


@triton.jit
def kv_decode_kernel(q, k_codes, k_scales, k_zeros, v_codes, v_scales, v_zeros, past_length, part_ml, part_acc,
                     S, H, num_kv_heads, capacity, D, high, row_units, low_units, splits, qk_scale,
                     GP: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
                     BITS_LOW: tl.constexpr, BITS_HIGH: tl.constexpr, ALIGN: tl.constexpr):
    """One split's partial attention of a query position for the query heads of one KV head.

    q: [B, H, S, D] (float32, float16 or bfloat16; after U_C); the cache as kv_append_kernel writes it,
    its rows row_units * ALIGN bytes, the high part at low_units * ALIGN bytes into a row (BLOCK_R = 0:
    no high part). qk_scale: log2(e) / sqrt(D). part_ml: float32 [splits, 2, B * H * S] (the running
    max in base 2, then the sum of exponentials), part_acc: float32 [splits, B * H * S, D]; row
    (b * H + h) * S + s. BLOCK_D: the low part's channels D - high, padded; BLOCK_R: the high part's.
    Grid: (splits, B * Hkv, S)."""
    sp = tl.program_id(0)
    bh = tl.program_id(1)
    s = tl.program_id(2)
    b = bh // num_kv_heads
    group = H // num_kv_heads
    n_rows = tl.num_programs(1) * group * S
    past = tl.load(past_length + b)
    n_keys = tl.minimum(past + s + 1, capacity)  # causal: cache rows 0 .. past_length[b] + s
    chunk = tl.cdiv(tl.cdiv(n_keys, splits), BLOCK_T) * BLOCK_T
    start = sp * chunk
    end = tl.minimum(start + chunk, n_keys)
    low = D - high
    # float16 Q: one float16 dot per operand; float32 and bfloat16 Q: two (hi + lo), as P . V always
    SPLIT: tl.constexpr = q.dtype.element_ty != tl.float16

    g = tl.arange(0, GP)
    gmask = g < group
    qrow = ((bh * group + g).to(tl.int64) * S + s)  # (b * H + h) * S + s
    c = tl.arange(0, BLOCK_D)
    q_lo = tl.load(q + qrow[:, None] * D + c[None, :], mask=gmask[:, None] & (c < low)[None, :],
                   other=0.0).to(tl.float32)
    qmax = tl.max(tl.max(tl.abs(q_lo), axis=1), axis=0)
    acc_lo = tl.zeros([GP, BLOCK_D], tl.float32)
    if BLOCK_R > 0:
        r = tl.arange(0, BLOCK_R)
        q_hi = tl.load(q + qrow[:, None] * D + low + r[None, :], mask=gmask[:, None] & (r < high)[None, :],
                       other=0.0).to(tl.float32)
        qmax = tl.maximum(qmax, tl.max(tl.max(tl.abs(q_hi), axis=1), axis=0))
        # the high part's P . V on 64 columns (as many as the low part's below 64; columns past r are
        # zero codes): a [16, 16] dot output got a layout that cost ~50 registers more and spilled
        BLOCK_RV: tl.constexpr = 64 if BLOCK_D >= 64 else BLOCK_D
        rv = tl.arange(0, BLOCK_RV)
        acc_hi = tl.zeros([GP, BLOCK_RV], tl.float32)
    q_norm, q_back = _pow2_scale(qmax)
    qsum_lo = tl.sum(q_lo, axis=1)
    if BLOCK_R > 0:
        qsum_hi = tl.sum(q_hi, axis=1)
    G = 1 + (high > 0).to(tl.int32)
    low_bytes = low_units * ALIGN
    row_bytes = row_units * ALIGN
    m_i = tl.full([GP], float("-inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    base = bh.to(tl.int64) * capacity
    for t0 in range(start, end, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tmask = t < end
        slot = base + t
        krow = k_codes + slot * row_bytes
        ks = tl.load(k_scales + slot * G, mask=tmask, other=0.0)
        kz = tl.load(k_zeros + slot * G, mask=tmask, other=0).to(tl.float32)
        # q is read again per tile (from L1) rather than kept: as the A operand of a 16-row dot every
        # warp holds all of it, 64 registers a thread at head_dim 128 in two parts, which spilled
        ql_hi, ql_lo = _split(tl.load(q + qrow[:, None] * D + c[None, :], mask=gmask[:, None] & (c < low)[None, :],
                                      other=0.0).to(tl.float32) * q_norm, SPLIT)
        qk = _dot(ql_hi, ql_lo, tl.trans(_codes(krow, tmask, low_bytes, BITS_LOW, BLOCK_D).to(tl.float16)), SPLIT) * q_back
        scores = ks[None, :] * (qk - kz[None, :] * qsum_lo[:, None])
        if BLOCK_R > 0:
            ks_h = tl.load(k_scales + slot * G + 1, mask=tmask, other=0.0)
            kz_h = tl.load(k_zeros + slot * G + 1, mask=tmask, other=0).to(tl.float32)
            qh_hi, qh_lo = _split(tl.load(q + qrow[:, None] * D + low + r[None, :],
                                          mask=gmask[:, None] & (r < high)[None, :], other=0.0).to(tl.float32) * q_norm,
                                  SPLIT)
            qk_h = _dot(qh_hi, qh_lo, tl.trans(_codes(krow + low_bytes, tmask, row_bytes - low_bytes, BITS_HIGH,
                                                      BLOCK_R).to(tl.float16)), SPLIT) * q_back
            scores += ks_h[None, :] * (qk_h - kz_h[None, :] * qsum_hi[:, None])
        scores = tl.where(tmask[None, :], scores * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
        vrow = v_codes + slot * row_bytes
        vs = tl.load(v_scales + slot * G, mask=tmask, other=0.0)
        vz = tl.load(v_zeros + slot * G, mask=tmask, other=0).to(tl.float32)
        pw = p * vs[None, :]
        v_norm, v_back = _pow2_scale(tl.max(vs, axis=0))  # p <= 1: pw <= max s_v
        pw_hi, pw_lo = _split(pw * v_norm, True)
        pv = _dot(pw_hi, pw_lo, _codes(vrow, tmask, low_bytes, BITS_LOW, BLOCK_D).to(tl.float16), True) * v_back
        acc_lo = acc_lo * alpha[:, None] + (pv - tl.sum(pw * vz[None, :], axis=1)[:, None])
        if BLOCK_R > 0:
            vs_h = tl.load(v_scales + slot * G + 1, mask=tmask, other=0.0)
            vz_h = tl.load(v_zeros + slot * G + 1, mask=tmask, other=0).to(tl.float32)
            pw_h = p * vs_h[None, :]
            vh_norm, vh_back = _pow2_scale(tl.max(vs_h, axis=0))
            pwh_hi, pwh_lo = _split(pw_h * vh_norm, True)
            pv_h = _dot(pwh_hi, pwh_lo, _codes(vrow + low_bytes, tmask, row_bytes - low_bytes, BITS_HIGH,
                                               BLOCK_RV).to(tl.float16), True) * vh_back
            acc_hi = acc_hi * alpha[:, None] + (pv_h - tl.sum(pw_h * vz_h[None, :], axis=1)[:, None])
    out = sp.to(tl.int64) * n_rows + qrow
    tl.store(part_ml + sp.to(tl.int64) * n_rows + qrow, m_i, mask=gmask)
    tl.store(part_ml + (sp.to(tl.int64) + splits) * n_rows + qrow, l_i, mask=gmask)
    tl.store(part_acc + out[:, None] * D + c[None, :], acc_lo, mask=gmask[:, None] & (c < low)[None, :])
    if BLOCK_R > 0:
        tl.store(part_acc + out[:, None] * D + low + rv[None, :], acc_hi, mask=gmask[:, None] & (rv < high)[None, :])


@triton.jit
def kv_combine_kernel(part_ml, part_acc, y, n_rows, S, H, D, splits, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """Y[b, s, h * D + c] = sum_j 2^(m_j - M) acc_j[c] / sum_j 2^(m_j - M) l_j over the splits j (M their
    largest m; an empty split has m = -inf and adds nothing).

    part_ml, part_acc: kv_decode_kernel's (n_rows = B * H * S); y: float32 [B, S, H * D].
    Grid: (n_rows, cdiv(D, BLOCK_D), 1)."""
    row = tl.program_id(0).to(tl.int64)  # (b * H + h) * S + s
    c = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    j = tl.arange(0, BLOCK_S)
    jmask = j < splits
    m = tl.load(part_ml + j * n_rows + row, mask=jmask, other=float("-inf"))
    l_j = tl.load(part_ml + (j + splits) * n_rows + row, mask=jmask, other=0.0)
    m_max = tl.max(m, axis=0)
    w = tl.where(m > float("-inf"), tl.exp2(m - m_max), 0.0)
    acc = tl.load(part_acc + (j.to(tl.int64) * n_rows + row)[:, None] * D + c[None, :],
                  mask=(w > 0.0)[:, None] & (c < D)[None, :], other=0.0)
    o = tl.sum(acc * w[:, None], axis=0) / tl.sum(l_j * w, axis=0)
    bh = row // S
    s = row % S
    b = bh // H
    h = bh % H
    tl.store(y + ((b * S + s) * H + h) * D + c, o, mask=c < D)
