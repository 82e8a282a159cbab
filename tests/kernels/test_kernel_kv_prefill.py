"""The prefill attention kernel (kernels/kv_prefill.py) under the interpreter against the reference
executor: the cache filled by the reference's own KVCache (quantise, pack), the expected output from
decoder._attention over the dequantised rows (float64 island), per sequence.

Tolerances, relative to max |V| (the dequantised values of the case), and why they hold:
- against the reference fed the q the kernel rounds (fp16; bf16 q as given): q . k is then exact up
  to the float32 accumulation (products of an fp16 and a small integer are exact); what remains is P
  rounded once to the dot's dtype before P V (relative 2^-11 per weight for fp16, 2^-8 for bf16, so
  |dy| <= 2^-11 max|v|; P * s / smax in fp16's subnormals adds at most 2^-25 * 255 * smax per key),
  exp2 and the float32 sums (~1e-6). Bound: 2^-10 (fp16) / 2^-7 (bf16) x max |V|.
- against the float reference (the contract): q's rounding moves each score by at most
  eps = 2^-11 * sum_c |q_c k_c| / sqrt(D), and a softmax moves by at most 2 max|eps| max|v|: the
  bound above plus 2 * eps of the row.
"""

import math

import pytest
import torch

from resq_export.decoder import KVCache, _attention
from resq_export.kernels import kv_prefill
from resq_export.kernels.kv_prefill import prefill_attention, prefill_configs, prefill_kernel_name
from resq_export.layout import KVQuantizer

P_ROUNDING = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
SMALL_TILE = (dict(BLOCK_M=16, BLOCK_N=16), 4, 1)  # many key tiles and row tiles at test sizes


def build_case(past, seq, heads, kv_heads, dim, high, capacity, kv_bits=4, high_bits=8, seed=0):
    """(q, k_cache, v_cache, past_length, reference inputs per sequence): each sequence's rows appended
    by KVCache (its past, then the S new rows), copied into zero buffers of `capacity` rows; rows past a
    sequence's end get junk codes and NaN scales, which a kernel reading them would spread."""
    gen = torch.Generator().manual_seed(seed)
    quant = KVQuantizer((dim - high, high) if high else (dim,), (kv_bits, high_bits) if high else (kv_bits,))
    groups = 2 if high else 1
    bsz = len(past)
    caches = []
    for _ in range(2):
        codes = torch.full((bsz, kv_heads, capacity, quant.row_bytes), 0xA5, dtype=torch.uint8)
        caches.append([codes, torch.full((bsz, kv_heads, capacity, groups), float("nan")),
                       torch.full((bsz, kv_heads, capacity, groups), 7, dtype=torch.uint8)])
    q = torch.randn(bsz, heads, seq, dim, generator=gen)
    rows = []
    for b, p in enumerate(past):
        cache = KVCache(quant)
        k_new, v_new = (torch.randn(1, kv_heads, seq, dim, generator=gen) for _ in range(2))
        if p:
            cache.append(0, torch.randn(1, kv_heads, p, dim, generator=gen),
                         torch.randn(1, kv_heads, p, dim, generator=gen) * 0.1)
        k_all, v_all = cache.append(0, k_new, v_new * 0.1)
        for buf, stored in zip(caches, (cache.keys[0], cache.values[0])):
            for dst, src in zip(buf, stored):
                dst[b:b + 1, :, :p + seq] = src
        rows.append((k_all, v_all))
    return q, [tuple(c) for c in caches], torch.tensor(past, dtype=torch.int32), rows, quant


def reference(q, rows, group):
    """decoder._attention per sequence (float64 island) -> [B, S, H * D] float32."""
    out = [_attention(q[b:b + 1], k, v, group, torch.float64).transpose(1, 2).flatten(2) for b, (k, v) in enumerate(rows)]
    return torch.cat(out)


def score_bound(q, rows, group):
    """Per (b, s, head) row: 2^-11 * max_j sum_c |q_c k_jc| / sqrt(D), as [B, S, H, 1]."""
    out = []
    for b, (k, _v) in enumerate(rows):
        kk = k[0].abs().repeat_interleave(group, 0)  # [H, T, D]
        out.append((q[b].abs() @ kk.transpose(1, 2)).amax(-1) / math.sqrt(q.shape[-1]))  # [H, S]
    return (torch.stack(out).transpose(1, 2) * 2.0**-11)[..., None]


CASES = {
    # name: past lengths, S, H, Hkv, D, r, capacity, q dtype, bits, tile
    "d128_gqa4_b2_fp32_small_tiles": ([0, 37], 19, 8, 2, 128, 16, 64, torch.float32, (4, 8), SMALL_TILE),
    "d64_gqa3_b2_fp16_capacity_edge": ([39, 5], 11, 6, 2, 64, 8, 50, torch.float16, (4, 8), None),
    "d128_gqa1_one_group_capacity_edge": ([70], 9, 2, 2, 128, 0, 79, torch.float32, (4, 8), None),
    # bf16 q is compiled but not run here: Triton 3.9's interpreter multiplies bf16 tensors as their raw
    # uint16 bits (create_dot) and casts integers to bf16 as integers
    "d64_gqa4_kv8_fp16": ([13, 0], 23, 4, 1, 64, 8, 40, torch.float16, (8, 8), SMALL_TILE),
    "d96_gqa4_high4": ([21], 17, 4, 1, 96, 12, 40, torch.float32, (4, 4), SMALL_TILE),  # D_PAD 128, r in 16
    "d32_gqa2_padded_to_64": ([4, 9], 7, 4, 2, 32, 0, 16, torch.float32, (4, 8), None),
    "d64_gqa8": ([10], 5, 8, 1, 64, 8, 16, torch.float32, (4, 8), SMALL_TILE),
    # D_PAD 256: the low group in two windows of 128 (the second one partly real)
    "d200_gqa2_two_windows": ([6], 9, 4, 2, 200, 24, 24, torch.float32, (4, 8), SMALL_TILE),
    "d256_gqa2_fp16": ([30, 3], 6, 2, 1, 256, 32, 40, torch.float16, (4, 8), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_matches_reference(name):
    past, seq, heads, kv_heads, dim, high, cap, q_dtype, (kb, hb), tile = CASES[name]
    q, (kc, vc), past_length, rows, _quant = build_case(past, seq, heads, kv_heads, dim, high, cap, kb, hb)
    group = heads // kv_heads
    q_in = q.to(q_dtype)
    y = prefill_attention(q_in, kc, vc, past_length, high, kb, hb, tile=tile)
    assert y.shape == (len(past), seq, heads * dim) and y.dtype == torch.float32
    dot_dtype = torch.bfloat16 if q_dtype == torch.bfloat16 else torch.float16
    vmax = max(v.abs().max().item() for _k, v in rows)
    # the kernel's arithmetic up to P's rounding: the reference fed the q the kernel multiplies
    rounded = reference(q_in.to(dot_dtype).float(), rows, group)
    err = (y - rounded).abs().max().item()
    assert err <= P_ROUNDING[dot_dtype] * vmax, (err, vmax)
    # the contract: the float q (the fp16 / bf16 input is the q the caller has)
    exact = reference(q_in.float(), rows, group).view(len(past), seq, heads, dim)
    eps = 2 * score_bound(q_in.float(), rows, group) if q_dtype == torch.float32 else 0  # fp16/bf16 q: exact
    bound = (P_ROUNDING[dot_dtype] + eps) * vmax
    assert ((y.view_as(exact) - exact).abs() <= bound).all()


def test_a_shifted_length_is_caught():
    """Negative control: one row less of past (the kernel's causal window off by one) exceeds the bound."""
    past, seq, heads, kv_heads, dim, high, cap, *_ = CASES["d128_gqa4_b2_fp32_small_tiles"]
    q, (kc, vc), past_length, rows, _ = build_case(past, seq, heads, kv_heads, dim, high, cap)
    want = reference(q.half().float(), rows, heads // kv_heads)
    vmax = max(v.abs().max().item() for _k, v in rows)
    y = prefill_attention(q, kc, vc, past_length - torch.tensor([0, 1], dtype=torch.int32), high, tile=SMALL_TILE)
    assert (y[1] - want[1]).abs().max().item() > 4 * P_ROUNDING[torch.float16] * vmax
    assert (y[0] - want[0]).abs().max().item() <= P_ROUNDING[torch.float16] * vmax  # the other sequence is unchanged


def test_output_buffer_and_empty_call():
    q, (kc, vc), past_length, rows, _ = build_case([3], 5, 2, 1, 64, 8, 16)
    out = torch.full((1, 5, 128), float("nan"))
    assert prefill_attention(q, kc, vc, past_length, 8, out=out, tile=SMALL_TILE) is out
    assert torch.isfinite(out).all()
    assert prefill_attention(q[:, :, :0], kc, vc, past_length, 8).shape == (1, 0, 128)


@pytest.mark.parametrize("change,message", [
    (dict(high=16), "cache"),  # r that does not give the cache's row bytes
    (dict(kv_bits=3), "bits"),
    (dict(past_length=torch.zeros(2, dtype=torch.int32)), "past_length"),
    (dict(q=torch.zeros(1, 3, 5, 64)), "multiple"),
    (dict(q=torch.zeros(1, 2, 5, 512)), "head_dim"),
])
def test_refuses_inputs_off_the_contract(change, message):
    q, (kc, vc), past_length, _rows, _ = build_case([3], 5, 2, 2, 64, 8, 16)
    args = dict(q=q, k_cache=kc, v_cache=vc, past_length=past_length, high=8, kv_bits=4, high_bits=8)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        prefill_attention(**args)


def test_configurations_cover_the_launches():
    """Every name prefill_kernel_name gives for the exporter's defaults (r = D / 8, or no high group)
    and the q dtypes is a compiled configuration, named, typed and documented like configs.py's."""
    configs = {c.name: c for c in prefill_configs()}
    assert len(configs) == len(prefill_configs())
    for dim in (64, 80, 96, 128, 256):
        for high in (0, dim // 8 // 2 * 2, dim // 2):
            for sfx in ("", "_f16", "_bf16"):
                for kb in (4, 8):
                    assert prefill_kernel_name(dim, high, kb, 8, sfx) in configs, (dim, high, sfx)
    for c in configs.values():
        assert list(c.signature) == list(c.fn.arg_names)
        assert c.constexprs["D_PAD"] in kv_prefill.PREFILL_TILES
        assert "Grid:" in getattr(c.fn, "fn", c.fn).__doc__


@pytest.mark.parametrize("name", ["d128_gqa4_b2_fp32_small_tiles", "d64_gqa3_b2_fp16_capacity_edge",
                                  "d96_gqa4_high4"])
def test_the_roundings_emulated_in_torch_are_the_kernels(name):
    """kv_rounding.kernel_rounded_prefill (the kernel's roundings in torch, what
    tools/prefill_rounding_eval.py measures perplexity with) gives the kernel's output up to the float32
    sums' order and exp2's last bit (kv_rounding.arithmetic_problems; measured 2^-18.7 at worst over
    CASES' fp32 / fp16 ones, 2026-12-05), where the kernel and the float reference differ by 2^-12.3 ..
    2^-14.3; so the perplexity measured with it is the kernel's."""
    from kv_rounding import arithmetic_problems, kernel_rounded_prefill

    past, seq, heads, kv_heads, dim, high, cap, q_dtype, (kb, hb), tile = CASES[name]
    q, (kc, vc), past_length, rows, quant = build_case(past, seq, heads, kv_heads, dim, high, cap, kb, hb)
    q_in = q.to(q_dtype)
    y = prefill_attention(q_in, kc, vc, past_length, high, kb, hb, tile=tile).view(len(past), seq, heads, dim)
    vmax = max(v.abs().max().item() for _k, v in rows)
    for b, p in enumerate(past):
        emu = kernel_rounded_prefill(q_in[b:b + 1].float(), [t[b:b + 1] for t in kc], [t[b:b + 1] for t in vc], quant,
                                     p, tile=tile[0] if tile else None)
        assert arithmetic_problems(y[b], emu[0].transpose(0, 1), vmax) == [], name
    exact = reference(q_in.float(), rows, heads // kv_heads).view_as(y)
    assert (y - exact).abs().max().item() > 2.0**-14 * vmax  # the roundings it models are visible at this scale


def test_a_coarser_rounding_passes_op_atol_and_fails_the_kernel_arithmetic(tmp_path, monkeypatch):
    """Negative control, and why the enqueue check holds prefill steps to the kernel's arithmetic too: the
    kernel with P rounded through bf16 before fp16 (8x the kernel's rounding; a copy of kv_prefill.py,
    planted) stays within kv_cases.op_atol, a worst-case bound (0.13 of it here; the real kernel 0.014),
    but moves 95 % of the outputs more than 2^-17 max|V| from kv_rounding's emulation (up to 2^-8.4), which
    the real kernel meets but for one output (2^-15.5: a P weight rounded the other way)."""
    import importlib

    from kv_cases import LAYOUTS, cache, make_call, op_atol
    from kv_cases import reference as op_reference
    from kv_rounding import arithmetic_problems, kernel_rounded_prefill
    from test_kernel_kv_decode import ATOL

    from resq_export.decoder import rotate_keys_gpu

    with open(kv_prefill.__file__) as f:
        source = f.read()
    line = "    pw = _to_dot(p * (s / smax)[None, :], DT)\n"
    assert source.count(line) == 1
    (tmp_path / "planted_prefill.py").write_text(
        source.replace(line, "    pw = _to_dot(p * (s / smax)[None, :], tl.bfloat16).to(DT)\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    planted = importlib.import_module("planted_prefill")
    a = LAYOUTS[1][1]  # Llama-3-8B's heads, r 16
    call = make_call(a, [0, 37], 19, seed=19)
    k_ref, v_ref, y_ref = op_reference(call, cache(a, 2, 64, 1), cache(a, 2, 64, 2))
    q = rotate_keys_gpu(call.q, call.key_rotation)
    atol = op_atol(call, k_ref, v_ref, ATOL[torch.float32])
    quant = KVQuantizer((a.head_dim - a.high_channels, a.high_channels), (a.kv_bits, a.high_bits))
    emu = torch.cat([kernel_rounded_prefill(q[b:b + 1], [t[b:b + 1] for t in k_ref], [t[b:b + 1] for t in v_ref], quant,
                                            p) for b, p in enumerate([0, 37])]).transpose(1, 2).reshape(y_ref.shape)
    vmax = max(quant.dequantize(*(t[b, :, :p + 19] for t in v_ref)).abs().max().item() for b, p in enumerate([0, 37]))
    for module, passes in ((kv_prefill, True), (planted, False)):
        y = module.prefill_attention(q, tuple(k_ref), tuple(v_ref), call.past_length, a.high_channels, a.kv_bits,
                                     a.high_bits)
        assert (y - y_ref).abs().max().item() < 0.5 * atol, module.__name__  # op_atol sees neither
        assert (arithmetic_problems(y, emu, vmax) == []) == passes, module.__name__
