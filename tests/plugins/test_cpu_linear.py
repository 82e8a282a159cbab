"""The C++ CPU references of activation quantisation, weight preparation and the mixed GEMM (with
LQER and bias) against the reference executor, bit for bit."""

import numpy as np
import pytest
import torch
from helpers import LAYOUTS, activations, contract_weights, layout, random_linear

from resq_export.algo.quant import quantize_groups, unpack_int4
from resq_export.native.loader import LinearShape, NativeError, layout_of, linear_shape
from resq_export.reference import group_sums


def padded_codes(shape, lay_c, q_low, q_high) -> np.ndarray:
    """The padded kernel layout back to one code per contract channel [T, K]."""
    parts = []
    for groups, gw, gwp, bits, q in ((shape.low_groups, lay_c.gw_low, lay_c.gwp_low, shape.a_bits_low, q_low),
                                     (shape.high_groups, lay_c.gw_high, lay_c.gwp_high, shape.a_bits_high, q_high)):
        if not groups:
            continue
        codes = unpack_int4(torch.from_numpy(q.view(np.int8)), signed=False).numpy() if bits == 4 else q.astype(np.int32)
        codes = codes[:, : groups * gwp].reshape(len(q), groups, gwp)
        assert not codes[:, :, gw:].any(), "padding must hold code 0"
        parts.append(codes[:, :, :gw].reshape(len(q), -1))
    return np.concatenate(parts, 1)


@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_quantize_act_matches_reference(cpu_ref, name, lay, n):
    shape = linear_shape(lay)
    x = activations(9, lay.in_features)
    q_low, q_high, sx, zx = cpu_ref.quantize_act(shape, x.numpy())
    q_ref, s_ref, z_ref = quantize_groups(x, lay.group_sizes, lay.a_bits)
    np.testing.assert_array_equal(padded_codes(shape, layout_of(shape), q_low, q_high), q_ref.numpy())
    np.testing.assert_array_equal(sx, s_ref.numpy())  # bit-exact floats
    np.testing.assert_array_equal(zx, z_ref.numpy())


def test_4bit_codes_are_packed_low_nibble_first(cpu_ref):
    shape = linear_shape(layout([(1, 64, 4, 4)]))
    x = torch.zeros(1, 64)
    x[0, 0], x[0, 1] = -1.0, 14.0  # scale 1, zero point 1: codes 0 and 15, the rest 1
    q_low, _, sx, zx = cpu_ref.quantize_act(shape, x.numpy())
    assert (sx[0, 0], zx[0, 0]) == (1.0, 1)
    assert q_low[0, 0] == 0xF0 and q_low[0, 1] == 0x11


@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_prepare_weights_sums(cpu_ref, name, lay, n):
    lin = random_linear(lay, n)
    shape = linear_shape(lay)
    _wl, _wh, wsum = cpu_ref.prepare_weights(shape, *contract_weights(lin), n)
    np.testing.assert_array_equal(wsum, group_sums(lin.qweight, lay.group_sizes).numpy())


@pytest.mark.parametrize("rank", [0, 5])
@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_mixed_gemm_matches_quant_linear(cpu_ref, name, lay, n, rank):
    lin = random_linear(lay, n, rank=rank, bias=True, seed=3)
    x = activations(7, lay.in_features, seed=4)
    expected = lin(x).numpy()
    shape = linear_shape(lay)
    act = cpu_ref.quantize_act(shape, x.numpy())
    weights = cpu_ref.prepare_weights(shape, *contract_weights(lin), n)
    lqer = None
    if rank:
        a_p, asum = cpu_ref.prepare_lqer_a(shape, lin.lqer.a_q.to(torch.int8).numpy())
        qa, sa = cpu_ref.lqer_project(shape, act, a_p, asum, lin.lqer.a_scale.numpy())
        lqer = (qa, sa, lin.lqer.b_q.to(torch.int8).numpy(), lin.lqer.b_scale.numpy())
    y = cpu_ref.mixed_gemm(shape, act, weights, lin.wscale.numpy(), lqer, lin.bias.numpy())
    np.testing.assert_array_equal(y, expected)


def test_lqer_projection_matches_reference(cpu_ref):
    from resq_export.algo.quant import quantize_sym_per_token

    lay = LAYOUTS[1][1]
    lin = random_linear(lay, 8, rank=6, seed=5)
    x = activations(5, lay.in_features, seed=6)
    qx, sx, zx = quantize_groups(x, lay.group_sizes, lay.a_bits)
    qa_ref, sa_ref = quantize_sym_per_token(lin._lqer_a.matmul(qx, sx, zx).float(), 8)  # as QuantLinear._lqer_int
    shape = linear_shape(lay)
    a_p, asum = cpu_ref.prepare_lqer_a(shape, lin.lqer.a_q.to(torch.int8).numpy())
    qa, sa = cpu_ref.lqer_project(shape, cpu_ref.quantize_act(shape, x.numpy()), a_p, asum, lin.lqer.a_scale.numpy())
    np.testing.assert_array_equal(qa, qa_ref.numpy())
    np.testing.assert_array_equal(sa, sa_ref[:, 0].numpy())


def test_artifact_linears_match(cpu_ref, artifacts):
    """The real packing path: linears of a quantised tiny Qwen2 (LQER rank 4, q/k/v bias) read
    back from its artifact, as the exporter and the plugins see them."""
    from resq_export.artifact import linear_tensors, load_artifact

    model, _, _ = load_artifact(artifacts["resq_lqer"])
    for role in ("qkv", "o", "gate_up", "down"):
        lin = getattr(model.layers[0], role)
        t = {k.split(".")[-1]: v for k, v in linear_tensors("x.", lin).items()}
        shape = linear_shape(lin.layout)
        n = lin.out_features
        x = activations(6, lin.in_features, seed=7)
        act = cpu_ref.quantize_act(shape, x.numpy())
        weights = cpu_ref.prepare_weights(shape, t.get("qweight_low", torch.empty(0)).numpy(),
                                          t.get("qweight_high", torch.empty(0)).numpy(), n)
        a_p, asum = cpu_ref.prepare_lqer_a(shape, t["lqer_a"].numpy())
        qa, sa = cpu_ref.lqer_project(shape, act, a_p, asum, t["lqer_a_scale"].numpy())
        bias = t["bias"].numpy() if "bias" in t else None
        y = cpu_ref.mixed_gemm(shape, act, weights, t["wscale"].numpy(),
                               (qa, sa, t["lqer_b"].numpy(), t["lqer_b_scale"].numpy()), bias)
        np.testing.assert_array_equal(y, lin(x).numpy(), err_msg=role)


@pytest.mark.parametrize("fields", [
    {"k": 64, "k_low": 63, "low_groups": 1, "high_groups": 1, "a_bits_low": 4, "a_bits_high": 8},  # odd 4-bit part
    {"k": 64, "k_low": 64, "low_groups": 3, "high_groups": 0, "a_bits_low": 4, "a_bits_high": 8},  # 64 / 3
    {"k": 64, "k_low": 64, "low_groups": 1, "high_groups": 0, "a_bits_low": 3, "a_bits_high": 8},  # 3 bits
    {"k": 64, "k_low": 32, "low_groups": 1, "high_groups": 0, "a_bits_low": 4, "a_bits_high": 8},  # high part without groups
])
def test_bad_shapes_are_refused(cpu_ref, fields):
    shape = LinearShape(*fields.values())
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.quantize_act(shape, np.zeros((2, 64), np.float32))
