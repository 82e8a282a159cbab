"""The prefill kernel's arithmetic in torch (kv_prefill.kv_prefill_kernel, one float32 operation for
each of the kernel's): a float32 q rounded to fp16 (round to nearest even) before the dots, scores
s * (q16 . (codes - z)) per channel group in float32 and in log2 units, the online softmax over key
tiles of BLOCK_N in base 2 with each tile's P scaled by the per-key ratio s / smax (smax the largest
scale of the tile's keys below the query tile's end) and rounded to fp16, the accumulators kept in
units of the last tile's smax, one division by the row sum at the end. What it leaves out: the order
of the float32 sums inside a dot (the MMA's) and exp2's last bit, each ~2^-24 relative.

Used to measure what these roundings cost against the contract's attention (float64 over the
dequantised rows) where no GPU is: tools/prefill_rounding_eval.py (perplexity of SmolLM2 with the
reference executor's attention replaced by this), and checked against the kernel itself under the
interpreter (test_kernel_kv_prefill.py)."""

from __future__ import annotations

import math

import torch

from resq_export.kernels.kv_prefill import PREFILL_TILES, d_pad
from resq_export.layout import KVQuantizer, group_bounds

LOG2E = 1.4426950408889634
# How close the kernel is to this (x max|V| of the rows read): the float32 sums' order and exp2's last
# bit aside, equal; where exp2's last bit moves a P weight to the other side of an fp16 rounding, that
# output moves by up to 2^-10 p |v|. So: at most FLIP_SHARE of the outputs beyond ARITHMETIC_ATOL, none
# beyond FLIP_ATOL (interpreter, 2026-12-05: 0 % beyond 2^-17 at the Llama-3 heads, the largest 2^-15.5;
# a rounding 8x coarser than the kernel's moves 93-97 % of the outputs past 2^-17).
ARITHMETIC_ATOL = 2.0**-17
FLIP_ATOL = 2.0**-10
FLIP_SHARE = 0.01


def arithmetic_problems(y: torch.Tensor, emulated: torch.Tensor, vmax: float) -> list[str]:
    """What keeps y from being the kernel's arithmetic (emulated), by the rule above; [] when it is."""
    d = (y.float() - emulated.float()).abs()
    share = (d > ARITHMETIC_ATOL * vmax).float().mean().item() if d.numel() else 0.0
    out = [f"{100 * share:.2f} % of the outputs beyond 2^-17 max|V|"] if share > FLIP_SHARE else []
    if d.numel() and d.max().item() > FLIP_ATOL * vmax:
        out.append(f"|y - arithmetic| {d.max().item():.3g} beyond 2^-10 max|V| ({FLIP_ATOL * vmax:.3g})")
    return out


def _centered(quant: KVQuantizer, parts) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - z per channel [..., D] float32 (exact: |codes - z| < 256), scales [..., G] float32)."""
    codes, scales, zeros = parts
    c = quant.codes(codes).float()
    for g, (a, b) in enumerate(group_bounds(quant.group_sizes)):
        c[..., a:b] -= zeros[..., g:g + 1].float()
    return c, scales.float()


def kernel_rounded_prefill(q: torch.Tensor, k_parts, v_parts, quant: KVQuantizer, past: int,
                           q_dtype: torch.dtype = torch.float16, tile: dict | None = None,
                           round_q: bool = True, round_p: bool = True) -> torch.Tensor:
    """Causal GQA attention of q [B, H, S, D] (after U_C) at rows past .. past + S - 1 over the cache
    rows 0 .. past + S - 1 of k_parts / v_parts (codes, scales, zeros [B, Hkv, >= past + S, ...], the
    stored form), as the prefill kernel computes it -> [B, H, S, D] float32. q_dtype: the dot's dtype
    (fp16 for a float32 or fp16 q, bf16 for a bf16 q). tile: BLOCK_M and BLOCK_N instead of
    kv_prefill.PREFILL_TILES' (the tests' small tiles). round_q / round_p False: that rounding left out
    (float32 instead), to tell the two roundings' shares apart."""
    bsz, h, seq, d = q.shape
    hkv = k_parts[0].shape[1]
    group = h // hkv
    total = past + seq
    bounds = group_bounds(quant.group_sizes)
    consts = tile or PREFILL_TILES[d_pad(d)][0]
    block_m, block_n = consts["BLOCK_M"], consts["BLOCK_N"]
    kc, ks = _centered(quant, [t[:, :, :total] for t in k_parts])
    vc, vs = _centered(quant, [t[:, :, :total] for t in v_parts])
    qk_scale = torch.tensor(LOG2E / math.sqrt(d), dtype=torch.float32)
    # the tile's rows: (position, head of the GQA group), position-major; each row's causal limit and
    # its query tile's end (the keys the tile loads: the scales' maximum runs over them)
    rows = torch.arange(seq * group)
    last = past + rows // group
    tile_last = torch.clamp((rows // block_m * block_m + block_m - 1) // group, max=seq - 1)
    end = past + tile_last + 1
    out = torch.empty(bsz, h, seq, d)
    for b in range(bsz):
        for kvh in range(hkv):
            # [S * group, D]: row pos * group + j is head kvh * group + j at position pos
            qr = q[b, kvh * group:(kvh + 1) * group].float().transpose(0, 1).reshape(seq * group, d)
            q16 = qr.to(q_dtype).float() if round_q else qr
            m = torch.full((seq * group,), float("-inf"))
            l_sum = torch.zeros(seq * group)
            acc = torch.zeros(seq * group, d)
            units = [torch.ones(seq * group) for _ in bounds]
            for n in range(0, total, block_n):
                t = torch.arange(n, min(n + block_n, total))
                active = n < end  # the rows whose query tile reaches this key tile
                scores = torch.zeros(seq * group, len(t))
                for g, (lo, hi) in enumerate(bounds):
                    s = ks[b, kvh, t, g] * qk_scale
                    scores = scores + (q16[:, lo:hi] @ kc[b, kvh, t, lo:hi].T) * s[None, :]
                scores = torch.where(t[None, :] <= last[:, None], scores, float("-inf"))
                m_new = torch.where(active, torch.maximum(m, scores.max(1).values), m)
                alpha = torch.exp2(m - m_new)
                alpha = torch.where(torch.isnan(alpha), torch.ones_like(alpha), alpha)  # -inf - -inf: no keys yet
                p = torch.where(active[:, None], torch.exp2(scores - m_new[:, None]), 0.0)
                l_sum = torch.where(active, l_sum * alpha + p.sum(1), l_sum)
                loaded = t[None, :] < end[:, None]  # the keys the query tile loads (others read as scale 0)
                for g, (lo, hi) in enumerate(bounds):
                    s = torch.where(loaded, vs[b, kvh, t, g][None, :], 0.0)
                    smax = s.max(1).values.clamp_min(torch.finfo(torch.float32).tiny)
                    pw = p * (s / smax[:, None])
                    pw = pw.to(q_dtype).float() if round_p else pw
                    factor = alpha * (units[g] / smax)
                    update = acc[:, lo:hi] * factor[:, None] + pw @ vc[b, kvh, t, lo:hi]
                    acc[:, lo:hi] = torch.where(active[:, None], update, acc[:, lo:hi])
                    units[g] = torch.where(active, smax, units[g])
                m = m_new
            inv = 1.0 / l_sum
            y = torch.cat([acc[:, lo:hi] * (units[g] * inv)[:, None] for g, (lo, hi) in enumerate(bounds)], 1)
            out[b, kvh * group:(kvh + 1) * group] = y.reshape(seq, group, d).transpose(0, 1)
    return out
