"""The mixed INT4/INT8 GEMM of ResQMixedLinearPrepared with its whole epilogue (docs/ops.md, "On the GPU").

y[t, o] = float32 epilogue over the groups of sum_c q_x[t, c] q_w[o, c] - z_x[t, g] wsum_g[o] (exact
int32), then LQER (from qa, sa), then bias. The layout is the exporter's (kernel_layout.py): every
group padded to gp channels (a multiple of 64), so a 64-channel K step never straddles a group.

- K steps of 64 channels run as one flat loop per weight part (4-bit part, then 8-bit part), so the
  software pipeline (num_stages) spans group boundaries; a group's int32 accumulator is folded into the
  float32 epilogue with an `if` at its last step.
- Tensor cores on int8 with int32 accumulation, one k64 dot per step. There is no 4-bit or unsigned
  dot: 4-bit codes are unpacked to int8 (shifts; signed weights sign-extended), 8-bit activation codes
  enter as q - 128 (int8) and the zero point as z - 128, which is exact: sum (q - 128) w - (z - 128)
  wsum = sum q w - z wsum.
- SPLIT (decode): one program per (N tile, M tile, run of GPU_CHUNK_GROUPS groups) writes its run's
  float32 sum to `partial`; splitk_reduce_kernel adds the runs in order and applies LQER and bias.
  The split is the contract's run structure, so the result is the fused kernel's bit for bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .primitives import to_bf16_rne


@triton.jit
def _step(acc, a_row, w_col, rmask, cmask, c0, A_BITS: tl.constexpr, W_BITS: tl.constexpr):
    """acc += codes of channels [c0, c0 + 64) of one part, one k64 int8 dot. a_row: [BM, 1] pointers of
    the part's activation rows, w_col: [1, BN] pointers of its weight rows."""
    j = tl.arange(0, 32)
    k = tl.arange(0, 64)
    # 4-bit operands are unpacked, then put back in channel order (2j, 2j + 1) with join: unpacking
    # before the operands are laid out for the MMA keeps each byte in one thread (two k32 dots on the
    # nibble halves let the compiler unpack after the layout change, where a tile is replicated across
    # warps: 255 registers and spills at 128 x 64)
    if A_BITS == 4:
        ab = tl.load(a_row + (c0 // 2 + j)[None, :], mask=rmask[:, None], other=0).to(tl.int32)
        a = tl.reshape(tl.join((ab & 15).to(tl.int8), (ab >> 4).to(tl.int8)), [ab.shape[0], 64])
    else:
        a = (tl.load(a_row + (c0 + k)[None, :], mask=rmask[:, None], other=128).to(tl.int32) - 128).to(tl.int8)
    if W_BITS == 4:
        wb = tl.load(w_col + (c0 // 2 + j)[:, None], mask=cmask[None, :], other=0).to(tl.int32)
        w_even = ((wb << 28) >> 28).to(tl.int8)  # signed low nibble
        w_odd = (wb >> 4).to(tl.int8)  # signed high nibble (arithmetic shift)
        w = tl.reshape(tl.permute(tl.join(w_even, w_odd), [0, 2, 1]), [64, wb.shape[1]])
    else:
        w = tl.load(w_col + (c0 + k)[:, None], mask=cmask[None, :], other=0)
    return tl.dot(a, w, acc)


@triton.jit
def _part(total, a_ptr, a_pitch, w_ptr, w_pitch, sx, zx, G, g_first, wscale, ws_stride_n, ws_stride_g, wsum,
          g0, g1, gp, rows, rmask, cols, cmask,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, A_BITS: tl.constexpr, W_BITS: tl.constexpr,
          CHUNK: tl.constexpr):
    """total + the runs of groups g0 .. g1 - 1 of one part (g0 and g1 on run boundaries or the part's end)."""
    a_row = a_ptr + rows[:, None] * a_pitch
    w_col = w_ptr + cols[None, :] * w_pitch
    spg = gp // 64  # K steps per group
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    chunk = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for s in range(g0 * spg, g1 * spg):
        acc = _step(acc, a_row, w_col, rmask, cmask, s * 64, A_BITS, W_BITS)
        if s % spg == spg - 1:  # the group's last step: its exact sum enters the float32 epilogue
            gi = s // spg
            g = g_first + gi
            sxg = tl.load(sx + rows * G + g, mask=rmask, other=0.0)
            zg = tl.load(zx + rows * G + g, mask=rmask, other=0)
            if A_BITS == 8:
                zg = zg - 128
            wsg = tl.load(wsum + cols * G + g, mask=cmask, other=0)
            wsc = tl.load(wscale + cols * ws_stride_n + g * ws_stride_g, mask=cmask, other=0.0)
            corr = acc - zg[:, None] * wsg[None, :]
            chunk = chunk + (corr.to(tl.float32) * sxg[:, None]) * wsc[None, :]
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
            if ((gi + 1) % CHUNK == 0) | (gi + 1 == g1):
                total = total + chunk
                chunk = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    return total


@triton.jit
def _finish(total, rows, rmask, cols, cmask, qa, sa, lqer_b, lqer_b_scale, bias, y, N, rank,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """y = (total + LQER) + bias, stored in y's dtype."""
    if rank > 0:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
        for r0 in range(0, rank, 32):
            r = r0 + tl.arange(0, 32)
            a = tl.load(qa + rows[:, None] * rank + r[None, :], mask=rmask[:, None] & (r < rank)[None, :], other=0)
            b = tl.load(lqer_b + cols[None, :] * rank + r[:, None], mask=cmask[None, :] & (r < rank)[:, None],
                        other=0)
            acc = tl.dot(a, b, acc)
        s_a = tl.load(sa + rows, mask=rmask, other=0.0)
        s_b = tl.load(lqer_b_scale + cols, mask=cmask, other=0.0)
        total = total + (acc.to(tl.float32) * s_a[:, None]) * s_b[None, :]
    total = total + tl.load(bias + cols, mask=cmask, other=0.0)[None, :]
    if y.dtype.element_ty == tl.bfloat16:
        total = to_bf16_rne(total)
    elif y.dtype.element_ty == tl.float16:
        total = total.to(tl.float16, fp_downcast_rounding="rtne")
    tl.store(y + rows[:, None] * N + cols[None, :], total, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def mixed_gemm_kernel(q_low, q_high, sx, zx, w_low, w_high, wscale, wsum, bias, qa, sa, lqer_b, lqer_b_scale, y,
                      partial, M, N, G, low_groups, high_groups, gp_low, gp_high, act_low_pitch, act_high_pitch,
                      w_low_pitch, w_high_pitch, ws_stride_n, ws_stride_g, rank,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, A_BITS_LOW: tl.constexpr,
                      W_BITS_LOW: tl.constexpr, A_BITS_HIGH: tl.constexpr, SPLIT: tl.constexpr,
                      CHUNK: tl.constexpr):
    """The grouped mixed GEMM and its float32 epilogue.

    q_low/q_high, sx, zx: act_quant_kernel's output (M tokens, G = low_groups + high_groups).
    w_low: int8 [N, w_low_pitch], group g at byte g * gp_low * W_BITS_LOW / 8 (packed int4 when
    W_BITS_LOW is 4); w_high: int8 [N, w_high_pitch], group h at byte h * gp_high. wscale: float32,
    element (o, g) at o * ws_stride_n + g * ws_stride_g ([N, G]: G, 1; LQER's a_scale [R]: 1, 0).
    wsum: int32 [N, G]. bias: float32 [N] (zeros where the model has none). qa: int8 [M, rank], sa:
    float32 [M], lqer_b: int8 [N, rank], lqer_b_scale: float32 [N] (rank 0: no LQER; pointers unused).
    y: [M, N] (fp32). partial: float32 [n_runs, M, N] workspace, n_runs = cdiv(low_groups, CHUNK) +
    cdiv(high_groups, CHUNK) (used only when SPLIT). CHUNK must be GPU_CHUNK_GROUPS (8). Offsets are
    int32: the launcher refuses M x act pitch, N x weight pitch, M x N or n_runs x M x N >= 2^31.
    Grid: SPLIT = 0: (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M), 1), writes y.
    SPLIT = 1: (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M), n_runs), writes `partial` (then
    splitk_reduce_kernel writes y; qa, sa, lqer_b, lqer_b_scale, bias, y are unused here).
    """
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    lo0 = 0
    lo1 = low_groups
    hi0 = 0
    hi1 = high_groups
    if SPLIT:
        run = tl.program_id(2)
        low_runs = tl.cdiv(low_groups, CHUNK)
        if run < low_runs:
            lo0 = run * CHUNK
            lo1 = tl.minimum(lo0 + CHUNK, low_groups)
            hi1 = 0
        else:
            hi0 = (run - low_runs) * CHUNK
            hi1 = tl.minimum(hi0 + CHUNK, high_groups)
            lo1 = 0
    total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    total = _part(total, q_low, act_low_pitch, w_low, w_low_pitch, sx, zx, G, 0, wscale, ws_stride_n, ws_stride_g,
                  wsum, lo0, lo1, gp_low, rows, rmask, cols, cmask, BLOCK_M, BLOCK_N, A_BITS_LOW, W_BITS_LOW, CHUNK)
    total = _part(total, q_high, act_high_pitch, w_high, w_high_pitch, sx, zx, G, low_groups, wscale, ws_stride_n,
                  ws_stride_g, wsum, hi0, hi1, gp_high, rows, rmask, cols, cmask, BLOCK_M, BLOCK_N, A_BITS_HIGH, 8,
                  CHUNK)
    if SPLIT:
        tl.store(partial + (tl.program_id(2) * M + rows[:, None]) * N + cols[None, :], total,
                 mask=rmask[:, None] & cmask[None, :])
    else:
        _finish(total, rows, rmask, cols, cmask, qa, sa, lqer_b, lqer_b_scale, bias, y, N, rank, BLOCK_M, BLOCK_N)


@triton.jit
def splitk_reduce_kernel(partial, n_runs, qa, sa, lqer_b, lqer_b_scale, bias, y, M, N, rank,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """y = ((0 + partial[0]) + partial[1]) + ... (the runs in order), then LQER and bias as the fused
    kernel. partial: float32 [n_runs, M, N]; the other arguments as mixed_gemm_kernel's.
    Grid: (cdiv(N, BLOCK_N), cdiv(M, BLOCK_M), 1)."""
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    rows = rows.to(tl.int64)
    cols = cols.to(tl.int64)
    mask = rmask[:, None] & cmask[None, :]
    total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for r in range(0, n_runs):
        total = total + tl.load(partial + (r * M + rows[:, None]) * N + cols[None, :], mask=mask, other=0.0)
    _finish(total, rows, rmask, cols, cmask, qa, sa, lqer_b, lqer_b_scale, bias, y, N, rank, BLOCK_M, BLOCK_N)
