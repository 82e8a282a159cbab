"""The activation quantiser kernel against the reference executor's quantize_groups, bit for bit:
codes (unpacked from the padded kernel layout), scales and zero points."""

import pytest
import torch
from kernel_cases import LAYOUTS
from helpers import activations

from resq_export.algo.quant import quantize_groups, unpack_int4
from resq_export.export.kernel_layout import PaddedLayout
from resq_export.kernels.launch import quantize_act


def padded_to_codes(q: torch.Tensor, groups: int, gw: int, gp: int, bits: int) -> torch.Tensor:
    """The kernel layout of one part back to one code per channel; padding must hold code 0."""
    codes = unpack_int4(q.view(torch.int8), signed=False) if bits == 4 else q.to(torch.int32)
    codes = codes[:, : groups * gp].reshape(len(q), groups, gp)
    assert not codes[:, :, gw:].any(), "padding channels must hold code 0"
    return codes[:, :, :gw].reshape(len(q), -1)


def run(lay, x):
    parts = lay.op_parts()
    pad = PaddedLayout(parts.k, parts.k_low, parts.low_groups, parts.high_groups)
    q_low, q_high, sx, zx = quantize_act(x, parts, pad)
    codes = []
    if pad.low_groups:
        codes.append(padded_to_codes(q_low, pad.low_groups, pad.gw_low, pad.gwp_low, parts.a_bits_low))
    if pad.high_groups:
        codes.append(padded_to_codes(q_high, pad.high_groups, pad.gw_high, pad.gwp_high, parts.a_bits_high))
    return torch.cat(codes, 1), sx, zx


@pytest.mark.parametrize("tokens", [1, 13])
@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_codes_scales_zeros_are_the_reference(name, lay, n, tokens):
    x = activations(tokens, lay.in_features, seed=tokens)
    q, sx, zx = run(lay, x)
    q_ref, s_ref, z_ref = quantize_groups(x, lay.group_sizes, lay.a_bits)
    assert torch.equal(q, q_ref)
    assert torch.equal(sx, s_ref)  # bit-exact floats
    assert torch.equal(zx, z_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_quantised_as_its_float32_value(dtype):
    lay = LAYOUTS[0][1]
    x = activations(5, lay.in_features, seed=2).to(dtype)
    q, sx, zx = run(lay, x)
    q_ref, s_ref, z_ref = quantize_groups(x.float(), lay.group_sizes, lay.a_bits)
    assert torch.equal(q, q_ref) and torch.equal(sx, s_ref) and torch.equal(zx, z_ref)


def test_4bit_codes_are_packed_low_nibble_first():
    lay = LAYOUTS[2][1]
    x = torch.zeros(1, lay.in_features)
    x[0, 0], x[0, 1] = -1.0, 14.0  # scale 1, zero point 1: codes 0 and 15, the rest of the group 1
    parts = lay.op_parts()
    q_low, _, sx, zx = quantize_act(x, parts, PaddedLayout(parts.k, parts.k_low, parts.low_groups, 0))
    assert (sx[0, 0].item(), zx[0, 0].item()) == (1.0, 1)
    assert q_low[0, 0].item() == 0xF0 and q_low[0, 1].item() == 0x11


def test_ties_round_half_to_even():
    """Codes exactly halfway between two integers (x / s = k + 0.5) round to the even one."""
    lay = LAYOUTS[2][1]
    x = torch.zeros(2, lay.in_features)
    x[:, 0] = 15.0  # scale 1, zero point 0 (the range is [0, 15])
    x[0, 2:10] = torch.tensor([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5])
    q, sx, _ = run(lay, x)
    assert sx[0, 0].item() == 1.0
    assert q[0, 2:10].tolist() == [0, 2, 2, 4, 4, 6, 6, 8]
    assert torch.equal(q, quantize_groups(x, lay.group_sizes, lay.a_bits)[0])
