"""Quantisation primitives and the reference linear's integer semantics."""

import pytest
import torch

from resq_export.algo.gptq import gptq_quantize
from resq_export.algo.lqer import lqer_factors, top_singular, whitening_factor
from resq_export.algo.quant import (
    dequantize_groups, expand_groups, int_matmul, mse_weight_scale, pack_int4, quantize_groups,
    quantize_sym, unpack_int4, weight_scale,
)
from resq_export.layout import LinearLayout
from resq_export.reference import LqerBranch, QuantLinear, group_sums

G = torch.Generator().manual_seed(0)


def test_int4_packing_round_trips_every_value():
    signed = torch.arange(-8, 8).repeat(3, 4)
    assert torch.equal(unpack_int4(pack_int4(signed), signed=True), signed)
    unsigned = torch.arange(0, 16).repeat(2, 2)
    packed = pack_int4(unsigned)
    assert packed.dtype == torch.int8 and packed.shape == (2, 16)
    assert torch.equal(unpack_int4(packed, signed=False), unsigned)
    # layout: element 2j in the low nibble, 2j+1 in the high nibble
    assert pack_int4(torch.tensor([1, 2])).item() == 0x21
    with pytest.raises(ValueError):
        pack_int4(torch.zeros(3))
    # every pair of nibbles, signed and unsigned, against the byte written out by hand
    for values, signed in ((range(-8, 8), True), (range(16), False)):
        pairs = torch.tensor([[a, b] for a in values for b in values])
        byte = [((a & 0xF) | ((b & 0xF) << 4)) for a, b in pairs.tolist()]
        assert pack_int4(pairs)[:, 0].tolist() == [v - 256 if v > 127 else v for v in byte]
        assert torch.equal(unpack_int4(pack_int4(pairs), signed=signed), pairs)


@pytest.mark.parametrize("k,a_max,b_max", [(504, 15, 8), (72, 255, 128), (1536, 255, 128)])
def test_int_matmul_is_exact(k, a_max, b_max):
    a = torch.randint(0, a_max + 1, (17, k), generator=G)
    b = torch.randint(-b_max, b_max, (9, k), generator=G)
    assert torch.equal(int_matmul(a, b, a_max, b_max), a.long() @ b.long().T)


def test_activation_quantisation_contract():
    x = torch.randn(64, 40, generator=G) * 3
    x[:, 35:] *= 50  # outlier group
    q, s, z = quantize_groups(x, (32, 8), (4, 8))
    assert q[:, :32].min() >= 0 and q[:, :32].max() <= 15 and q[:, 32:].max() <= 255
    assert torch.all((z[:, 0] >= 0) & (z[:, 0] <= 15))
    err = (dequantize_groups(q, s, z, (32, 8)) - x).abs()
    assert torch.all(err <= expand_groups(s, (32, 8)) / 2 + 1e-5)
    zeros = quantize_groups(torch.zeros(2, 8), (8,), (4,))
    assert torch.all(zeros[0] == 0) and torch.all(zeros[1] == 1.0)


def test_mse_clip_search_beats_absmax():
    w = torch.randn(32, 256, generator=G)
    w[:, 0] *= 8
    def err(scale):
        return ((quantize_sym(w, scale, 4) * scale - w) ** 2).sum()
    assert err(mse_weight_scale(w, 4)) < err(weight_scale(w, 4))



@pytest.mark.parametrize("rows,cols,block", [(37, 300, 1000), (64, 96, 1 << 16), (5, 1000, 10)])
def test_mse_clip_search_row_blocks_equal_whole_matrix(rows, cols, block):
    """The blocked search is an optimisation only: every row's scale equals the grid's argmin
    evaluated on the whole matrix at once (blocks of 3, 64 and 1 rows; a zero row)."""
    w = torch.randn(rows, cols, generator=G) * 0.02
    w[1] = 0.0
    w[2, :3] = 0.5
    for bits in (4, 8):
        best_err, best = torch.full((rows,), float("inf")), weight_scale(w, bits)
        for i in range(81):
            scale = weight_scale(w, bits, 1.0 - i / 100)
            err = (quantize_sym(w, scale, bits) * scale - w).abs().pow(2.4).sum(-1)
            best = torch.where((err < best_err)[:, None], scale, best)
            best_err = torch.minimum(err, best_err)
        assert torch.equal(mse_weight_scale(w, bits, block_elements=block), best)

def _random_quant_linear(layout, out=24, lqer_rank=0):
    k = layout.in_features
    bits = expand_groups(torch.tensor(layout.w_bits), layout.group_sizes)
    q = torch.stack([torch.randint(-2 ** (b - 1), 2 ** (b - 1), (out,), generator=G) for b in bits.tolist()], 1)
    wscale = torch.rand(out, len(layout.group_sizes), generator=G) * 0.05 + 0.01
    lqer = None
    if lqer_rank:
        lqer = LqerBranch(torch.randint(-128, 128, (lqer_rank, k), generator=G), torch.rand(lqer_rank) * 0.01,
                          torch.randint(-128, 128, (out, lqer_rank), generator=G), torch.rand(out) * 0.01)
    return QuantLinear.from_codes(layout, q.int(), wscale, torch.randn(out, generator=G), lqer)


LAYOUTS = {
    "resq": LinearLayout((56, 8), (4, 8), (4, 8)),
    "o_proj": LinearLayout((14, 14, 14, 14, 2, 2, 2, 2), (4,) * 4 + (8,) * 4, (4,) * 4 + (8,) * 4),
    "w4a8": LinearLayout((32, 32), (4, 4), (8, 8)),
    "w4a16": LinearLayout((56, 8), (4, 8), (16, 16)),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_reference_linear_equals_dequantise_then_float(name):
    """Integer path == float64 (dequantised x) @ (dequantised W)^T: exact up to float32 epilogue rounding."""
    layout = LAYOUTS[name]
    lin = _random_quant_linear(layout)
    x = torch.randn(3, 7, layout.in_features, generator=G)
    y = lin(x)
    x2 = x.reshape(-1, layout.in_features)
    if not layout.float_activations:
        q, s, z = quantize_groups(x2, layout.group_sizes, layout.a_bits)
        x2 = dequantize_groups(q, s, z, layout.group_sizes)
    ref = x2.double() @ lin.dequantized_weight().double().T + lin.bias.double()
    torch.testing.assert_close(y.reshape(-1, y.shape[-1]).double(), ref, rtol=1e-5, atol=1e-5)


def test_group_sums_and_zero_point_correction_are_integer_exact():
    layout = LAYOUTS["o_proj"]
    lin = _random_quant_linear(layout)
    x = torch.randn(5, layout.in_features, generator=G)
    q, _, z = quantize_groups(x, layout.group_sizes, layout.a_bits)
    wsum = group_sums(lin.qweight, layout.group_sizes)
    for g, (a, b) in enumerate(zip([0, 14, 28, 42, 56, 58, 60, 62], [14, 28, 42, 56, 58, 60, 62, 64])):
        exact = (q[:, a:b].long() - z[:, g:g + 1].long()) @ lin.qweight[:, a:b].long().T
        via_sum = int_matmul(q[:, a:b], lin.qweight[:, a:b], 255, 128) - z[:, g:g + 1].long() * wsum[None, :, g]
        assert torch.equal(exact, via_sum)


def test_lqer_branch_matches_float_computation():
    layout = LAYOUTS["w4a8"]
    lin = _random_quant_linear(layout, lqer_rank=4)
    x = torch.randn(6, 64, generator=G)
    y = lin(x)
    q, s, z = quantize_groups(x, layout.group_sizes, layout.a_bits)
    xd = dequantize_groups(q, s, z, layout.group_sizes).double()
    a = lin.lqer.a_q.double() * lin.lqer.a_scale.double()[:, None]
    b = lin.lqer.b_q.double() * lin.lqer.b_scale.double()[:, None]
    xa = xd @ a.T
    sa = xa.abs().amax(-1, keepdim=True) / 127
    lr = (torch.clamp(torch.round(xa / sa), -128, 127) * sa) @ b.T
    ref = xd @ lin.dequantized_weight().double().T + lr + lin.bias.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def _correlated_inputs(n=2048, k=64):
    mix = torch.randn(k, k, generator=G) / k ** 0.5
    return torch.randn(n, k, generator=G) @ mix + 0.1 * torch.randn(n, k, generator=G)


def test_gptq_beats_rtn_on_correlated_inputs():
    x = _correlated_inputs()
    w = torch.randn(32, 64, generator=G)
    scale = weight_scale(w, 4)
    h = x.double().T @ x.double()
    q_gptq = gptq_quantize(w, h, scale, (64,), (4,), block=16)
    q_rtn = quantize_sym(w, scale, 4)
    assert q_gptq.min() >= -8 and q_gptq.max() <= 7
    def err(q):
        return ((x.double() @ (q.double() * scale - w).T) ** 2).sum()

    assert err(q_gptq) < 0.8 * err(q_rtn)



def test_gptq_equals_textbook_out_of_place_sweep(monkeypatch):
    """The in-place factorisation, the reused update buffer and the batch update by row pieces change
    memory and speed only: codes equal a plain GPTQ (separate Cholesky, inverse, Cholesky; fresh
    temporaries; one GEMM per batch update)."""
    import resq_export.algo.gptq as gptq

    monkeypatch.setattr(gptq, "UPDATE_ROWS", 16)
    x = _correlated_inputs()
    w = torch.randn(40, 64, generator=G)
    group_scale = torch.cat([weight_scale(w[:, :56], 4), weight_scale(w[:, 56:], 8)], 1)
    scale = group_scale.repeat_interleave(torch.tensor([56, 8]), 1)  # per column
    bits = torch.tensor([4] * 56 + [8] * 8)
    h = x.double().T @ x.double()
    h[:, 5] = h[5, :] = 0.0  # a dead input channel
    got = gptq_quantize(w, [h.clone()], group_scale, (56, 8), (4, 8), block=16)
    assert got.dtype == torch.int8

    hd, dead = h.clone(), torch.diagonal(h) == 0
    hd[dead, dead] = 1.0
    hd += 0.01 * torch.diagonal(hd).mean() * torch.eye(64, dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hd)), upper=True)
    wd = w.double().clone()
    wd[:, dead] = 0.0
    want = torch.zeros_like(wd)
    for i1 in range(0, 64, 16):
        w1, err1 = wd[:, i1:i1 + 16].clone(), torch.zeros(40, 16, dtype=torch.float64)
        for i in range(16):
            s = scale[:, i1 + i].double()
            want[:, i1 + i] = quantize_sym(w1[:, i], s, int(bits[i1 + i]))
            err1[:, i] = (w1[:, i] - want[:, i1 + i] * s) / hinv[i1 + i, i1 + i]
            w1[:, i:] -= err1[:, i, None] * hinv[i1 + i, i1 + i:i1 + 16][None]
        wd[:, i1 + 16:] -= err1 @ hinv[i1:i1 + 16, i1 + 16:]
    assert torch.equal(got.double(), want)


def test_second_moment_column_blocks_equal_whole_product():
    from resq_export.calib.stats import SecondMoment

    x = torch.randn(3, 256, 80, generator=G) * torch.rand(80, generator=G) * 4
    m = SecondMoment(80)
    for window in x:
        m.add_batch(window, column_block=32)
    want = torch.zeros(80, 80, dtype=torch.float64)
    for window in x:
        want += window.double().T @ window.double()
    assert torch.equal(m.sum, want) and torch.equal(m.sum, m.sum.T)

@pytest.mark.parametrize("m,n,rank", [(96, 40, 8), (40, 96, 8), (30, 20, 25), (50, 60, 0)])
def test_top_singular_matches_svd(m, n, rank):
    """Tall, wide, k beyond the rank (3 of 20 components planted), and an exact zero: the rank-k
    approximation equals torch.linalg.svd's to float64 rounding, never NaN."""
    g = torch.Generator().manual_seed(m * n)
    e = torch.randn(m, n, generator=g, dtype=torch.float64) * torch.logspace(0, -3, n, dtype=torch.float64)
    if rank == 25:
        e = torch.randn(m, 3, generator=g, dtype=torch.float64) @ torch.randn(3, n, generator=g, dtype=torch.float64)
    if rank == 0:
        e = torch.zeros(m, n, dtype=torch.float64)
    k = max(rank, 1)
    u, sigma, vh = top_singular(e, k)
    assert u.shape == (m, min(k, m, n)) and vh.shape == (min(k, m, n), n) and torch.isfinite(u).all()
    uu, ss, vv = torch.linalg.svd(e, full_matrices=False)
    want = uu[:, :k] * ss[:k] @ vv[:k]
    torch.testing.assert_close(u * sigma @ vh, want, atol=1e-12 * max(ss[0].item(), 1.0), rtol=0)
    torch.testing.assert_close(sigma[sigma > 0], ss[: int((sigma > 0).sum())], atol=1e-12 * max(ss[0].item(), 1.0), rtol=0)


def test_lqer_full_rank_recovers_error_and_l2qer_helps_at_low_rank():
    x = _correlated_inputs() * torch.linspace(0.1, 5, 64)  # uneven channel magnitudes
    w = torch.randn(48, 64, generator=G)
    scale = weight_scale(w, 4)
    w_q = quantize_sym(w, scale, 4) * scale
    a, b = lqer_factors(w, w_q, 64)
    torch.testing.assert_close((w_q.double() + (a @ b).T), w.double(), atol=1e-10, rtol=0)
    def err(a, b):
        return ((x.double() @ (w_q.double() + (a @ b).T - w.double()).T) ** 2).sum()

    plain = err(*lqer_factors(w, w_q, 8))
    scaled = err(*lqer_factors(w, w_q, 8, act_scale=x.abs().mean(0)))
    assert scaled < plain < err(torch.zeros(64, 1, dtype=torch.float64), torch.zeros(1, 48, dtype=torch.float64))


@pytest.mark.parametrize("plant", ["indefinite", "nan", "inf"])
def test_gptq_refuses_a_hessian_damping_cannot_rescue(plant):
    from resq_export.algo.gptq import HessianError

    x = torch.randn(256, 32, dtype=torch.float64)
    h = x.T @ x
    if plant == "indefinite":
        h = -h
    else:
        h[3, 4] = float(plant)
    with pytest.raises(HessianError):
        gptq_quantize(torch.randn(8, 32), h, torch.full((8, 1), 0.1), (32,), (4,))


def test_all_finite_checks_every_piece():
    from resq_export.algo.finite import all_finite

    t = torch.randn(3, 100, 70, generator=G)
    assert all_finite(t, block=64) and all_finite(t.mT, block=64)
    for bad in (float("nan"), float("inf"), -float("inf")):
        u = t.clone()
        u[2, 99, 69] = bad  # in the last, partial piece
        assert not all_finite(u, block=64) and not all_finite(u.mT, block=64)


def test_down_group_size_groups_the_down_projection_alone(caplog):
    from resq_export.config import QuantConfig
    from resq_export.errors import ConfigError
    from resq_export.layout import role_layouts
    from resq_export.models.config import ModelConfig

    model = ModelConfig("llama", 256, 64, 2, 4, 2, 16, 192, 1e-5, 10000.0)
    plain = role_layouts(model, QuantConfig.for_method("resq", down_group_size=0, group_size=0))
    default = role_layouts(model, QuantConfig.for_method("resq"))
    assert plain["mlp_down"].group_sizes == (192,)
    assert default["mlp_down"].group_sizes == (64, 64, 64) and set(default["mlp_down"].a_bits) == {4}
    assert all(default[r] == plain[r] for r in ("attn_qkv", "attn_o", "mlp_gate_up"))
    assert role_layouts(model, QuantConfig.for_method("quarot"))["mlp_down"].group_sizes == (192,)
    # 96 channels (the tiny test models): groups of 64 do not fit, so the down input keeps one group
    small = ModelConfig("llama", 256, 64, 2, 4, 2, 16, 96, 1e-5, 10000.0)
    assert role_layouts(small, QuantConfig.for_method("resq"))["mlp_down"].group_sizes == (96,)
    assert "do not split into groups of 64" in caplog.text
    assert role_layouts(small, QuantConfig.for_method("resq", down_group_size=32))["mlp_down"].group_sizes == (32,) * 3
    with pytest.raises(ConfigError, match="--down-group-size"):
        QuantConfig.for_method("resq", down_group_size=3)


def test_auto_group_size_divides_both_parts_and_prefers_the_kernel_tile():
    from resq_export.config import QuantConfig
    from resq_export.layout import auto_group_size, role_layouts
    from resq_export.models.config import ModelConfig

    # hidden size -> the width ResQ's residual linears get (parts H - H/8 and H/8)
    expected = {576: 72, 4096: 128, 2048: 128, 896: 112, 1536: 64, 3584: 64, 64: 0}
    for hidden, width in expected.items():
        r = hidden // 8
        assert auto_group_size((hidden - r, r)) == width, hidden
        if width:  # the widest even divisor of both parts in [32, 128], a multiple of 64 where one fits
            fits = [w for w in range(32, 129, 2) if (hidden - r) % w == 0 and r % w == 0]
            assert width in fits and (width % 64 == 0 or not any(w % 64 == 0 for w in fits))
    smollm2 = ModelConfig("llama", 256, 576, 2, 9, 3, 64, 1536, 1e-5, 10000.0)
    lay = role_layouts(smollm2, QuantConfig.for_method("resq"))
    for role in ("attn_qkv", "mlp_gate_up"):
        assert lay[role].group_sizes == (72,) * 8 and lay[role].w_bits == (4,) * 7 + (8,)
        assert lay[role].op_parts().low_groups == 7 and lay[role].op_parts().high_groups == 1
    assert lay["mlp_down"].group_sizes == (64,) * 24
    # an explicit width stays exactly what was asked for; 0 keeps one group per part
    assert role_layouts(smollm2, QuantConfig.for_method("resq", group_size=0))["attn_qkv"].group_sizes == (504, 72)
    assert role_layouts(smollm2, QuantConfig.for_method("resq", group_size=36))["attn_qkv"].group_sizes == (36,) * 16
    assert role_layouts(smollm2, QuantConfig.for_method("quarot"))["attn_qkv"].group_sizes == (576,)


def test_lqer_whitened_by_the_second_moment_reaches_the_least_output_error():
    # sum ||x (E^T - A B)||^2 over the calibration rows is smallest, among all rank-k corrections, at the
    # SVD of the whitened error: its trailing singular values of X E^T (Eckart-Young on X E^T's column space)
    x = (_correlated_inputs() * torch.linspace(0.1, 5, 64)).double()
    w = torch.randn(48, 64, generator=G)
    scale = weight_scale(w, 4)
    w_q = quantize_sym(w, scale, 4) * scale
    err_t = (w.double() - w_q.double()).T

    def err(a, b):
        return float(((x @ (err_t - a @ b)) ** 2).sum())

    h = x.T @ x
    k = 8
    whitened = err(*lqer_factors(w, w_q, k, whitener=whitening_factor(h, 0.0)))
    optimum = float((torch.linalg.svdvals(x @ err_t)[k:] ** 2).sum())
    assert abs(whitened - optimum) <= 1e-9 * optimum
    assert whitened < 0.9 * err(*lqer_factors(w, w_q, k, act_scale=x.abs().mean(0)))  # L²QER's diagonal
    a, b = lqer_factors(w, w_q, 64, whitener=whitening_factor(h, 0.0))  # full rank: the whole error back
    torch.testing.assert_close(a @ b, err_t, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="positive definite"):
        whitening_factor(-h, 0.01)
    assert torch.equal(h, x.T @ x)  # left for GPTQ as it was
    with pytest.raises(ValueError, match="not both"):
        lqer_factors(w, w_q, k, act_scale=x.abs().mean(0), whitener=whitening_factor(h, 0.0))


def test_quantize_linear_whitens_lqer_by_the_hessian_it_is_handed():
    # the wiring of --lqer-scale: the 8-bit factors built from the Hessian (handed in a list, as pass 2
    # does, which GPTQ consumes) correct the output error on the calibration rows better than L²QER's
    from resq_export.config import QuantConfig
    from resq_export.decoder import FloatLinear
    from resq_export.quantize.linears import _effective_float, quantize_linear

    x = (_correlated_inputs() * torch.linspace(0.1, 5, 64)).float()
    lin = FloatLinear(torch.randn(48, 64, generator=G))
    layout = LinearLayout((32, 32), (4, 4), (8, 8))

    def output_err(scale, algo):
        quant = QuantConfig.for_method("lqer", lqer_rank=8, lqer_scale=scale, weight_algo=algo)
        h = (x.double().T @ x.double())
        q = quantize_linear(lin, layout, quant, [h], x.abs().mean(0))
        return float(((x.double() @ (_effective_float(q).weight - lin.weight).double().T) ** 2).sum())

    for algo in ("rtn", "gptq"):
        assert output_err("hessian", algo) < 0.9 * output_err("absmean", algo)
