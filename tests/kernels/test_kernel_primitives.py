"""The rounding helpers every kernel relies on, against torch (round half to even)."""

import torch
import triton
import triton.language as tl

from resq_export.kernels.primitives import div_rn, rne, to_bf16_rne


@triton.jit
def _apply(x, y, z, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    v = tl.load(x + i, mask=i < n)
    if OP == 0:
        tl.store(y + i, rne(v), mask=i < n)
    elif OP == 1:
        tl.store(y + i, to_bf16_rne(v), mask=i < n)
    else:
        tl.store(y + i, div_rn(v, tl.load(z + i, mask=i < n, other=1.0)), mask=i < n)


def run(op, x, out_dtype, z=None):
    y = torch.empty(x.shape, dtype=out_dtype)
    _apply[(1,)](x, y, x if z is None else z, x.numel(), OP=op, BLOCK=triton.next_power_of_2(x.numel()))
    return y


def test_rne_rounds_ties_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 254.5, 255.5, 3.49999976, -7.5000005, 0.0, 17.0])
    assert torch.equal(run(0, x, torch.float32), torch.round(x))


def test_bf16_rounding_is_torchs_including_ties():
    ties = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 255 + 0.5, 2**-130, 3.0e38])
    x = torch.cat([ties, torch.randn(200, generator=torch.Generator().manual_seed(0)) * 100])
    assert torch.equal(run(1, x, torch.bfloat16), x.to(torch.bfloat16))


def test_division_is_correctly_rounded():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(256, generator=g), torch.rand(256, generator=g) + 0.1
    assert torch.equal(run(2, a, torch.float32, b), a / b)
