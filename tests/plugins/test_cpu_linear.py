"""The C++ CPU references of activation quantisation, weight preparation and the mixed GEMM (with
LQER and bias) against the reference executor, bit for bit."""

import numpy as np
import pytest
import torch
from helpers import LAYOUTS, activations, contract_weights, exported_nodes, layout, random_linear

from resq_export.algo.quant import quantize_groups, unpack_int4
from resq_export.errors import NativeError
from resq_export.export.kernel_layout import (
    PaddedLayout,
    prepare_lqer_a,
    prepare_weights,
)
from resq_export.native.loader import layout_of, linear_shape
from resq_export.native.params import LinearShape
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


@pytest.mark.parametrize("rank", [0, 5])
@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_export_time_preparation_is_the_cpu_reference(cpu_ref, name, lay, n, rank):
    """The TensorRT flavour's weights, prepared in numpy at export, byte for byte what the C++
    preparation (the GPU tests' oracle for the CUDA one) makes, padding included."""
    lin = random_linear(lay, n, rank=max(rank, 1), seed=8)
    shape = linear_shape(lay)
    w_low, w_high = contract_weights(lin)
    padded = PaddedLayout(shape.k, shape.k_low, shape.low_groups, shape.high_groups)
    got_low, got_high, got_sums = prepare_weights(padded, w_low, w_high)
    ref_low, ref_high, ref_sums = cpu_ref.prepare_weights(shape, w_low, w_high, n)
    lay_c = layout_of(shape)
    np.testing.assert_array_equal(got_low, ref_low[:, : lay_c.w_low_pitch])
    assert (got_high is None) == (lay_c.w_high_pitch == 0)
    if got_high is not None:
        np.testing.assert_array_equal(got_high, ref_high)
    np.testing.assert_array_equal(got_sums, ref_sums)
    a = lin.lqer.a_q.to(torch.int8).numpy()[:rank] if rank else lin.lqer.a_q.to(torch.int8).numpy()
    for got, ref in zip(prepare_lqer_a(padded, a), cpu_ref.prepare_lqer_a(shape, a)):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("artifact", ["resq", "resq_lqer", "quarot", "lqer", "w8a8"])
def test_tensorrt_flavour_linears_equal_the_reference_executor(cpu_ref, artifacts, artifact):
    """The real export path: every ResQMixedLinearPrepared node of a tiny model's TensorRT flavour
    (per-head o_proj groups, LQER rank 4, q/k/v bias, all-4-bit QuaRot, 8-bit-activation LQER,
    all-8-bit RTN without a 4-bit part), run
    by the CPU references straight from the graph's own initializers, equals the reference
    executor's linear bit for bit."""
    nodes = [n for n in exported_nodes(artifacts[artifact]) if n.op == "ResQMixedLinearPrepared"]
    layers = {node.name.split("/layers.")[1].split("/")[0] for node in nodes}
    assert len(nodes) == 4 * len(layers)  # every linear of every layer: qkv, o, gate_up, down
    for node in nodes:
        given, lin, attrs = node.inputs, node.reference, node.attrs
        shape = LinearShape(lin.in_features, attrs["k_low"], attrs["low_groups"], attrs["high_groups"],
                            attrs["a_bits_low"], attrs["a_bits_high"])
        absent = np.zeros((lin.out_features, 1), np.int8)
        w_low, w_high = given.get("weight_low", absent), given.get("weight_high", absent)
        wscale, sums, bias = given["wscale"], given["weight_sums"], given["bias"]
        x = activations(6, lin.in_features, seed=7)
        act = cpu_ref.quantize_act(shape, x.numpy())
        lqer = None
        if attrs["lqer_rank"]:
            a_p, asum, a_scale, b, b_scale = (given[k] for k in ("lqer_a", "lqer_a_sums", "lqer_a_scale", "lqer_b",
                                                                   "lqer_b_scale"))
            qa, sa = cpu_ref.lqer_project(shape, act, a_p, asum, a_scale)
            lqer = (qa, sa, b, b_scale)
        y = cpu_ref.mixed_gemm(shape, act, (w_low, w_high, sums), wscale, lqer, bias)
        np.testing.assert_array_equal(y, lin(x).numpy(), err_msg=node.name)


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
