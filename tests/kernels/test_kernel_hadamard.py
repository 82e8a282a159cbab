"""The online Hadamard kernels against the reference: the butterflies bit for bit against fwht, the
whole op bit for bit against hadamard_gpu_reference (its float32 order), and within float32 rounding
of the executor's float64 apply_down_hadamard."""

import pytest
import torch

from resq_export.algo.hadamard import apply_down_hadamard, fwht, hadamard_left_factor
from resq_export.kernels.launch import hadamard
from resq_export.reference import hadamard_gpu_reference

# float32 against the float64 transform, relative to max |y| of a row: log2(b) butterfly stages and a
# products and sums in float32, each within 2^-24 of the magnitudes involved; measured below 1e-6.
F32_VS_F64 = 1e-5


@pytest.mark.parametrize("n", [2, 64, 512, 2048])
def test_walsh_hadamard_is_fwht(n):
    x = torch.randn(7, n, generator=torch.Generator().manual_seed(n))
    assert torch.equal(hadamard(x, torch.ones(1, 1)), fwht(x))


# 96 = 12 x 8 (Paley, the tiny models' intermediate size), 1536 = 12 x 128 (SmolLM2), 640 = 5 x 128 (a
# random orthogonal left factor), 14336 = 28 x 512 (Llama-3-8B), 18944 = 148 x 128 (Qwen2-7B)
@pytest.mark.parametrize("n,rows", [(96, 5), (1536, 3), (640, 3), (14336, 1), (18944, 1)])
def test_kron_hadamard_matches_reference(n, rows):
    left, _ = hadamard_left_factor(n)
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(n))
    y = hadamard(x, left.float())
    assert torch.equal(y, hadamard_gpu_reference(x, left.float()))
    a = left.shape[0]
    blocks = hadamard(x, torch.eye(a)).reshape(rows, a, n // a)
    assert torch.equal(blocks, fwht(x.reshape(rows, a, n // a)))  # the butterflies alone, exact
    exact = apply_down_hadamard(x.double(), left)
    assert ((y.double() - exact).abs().amax(-1) / exact.abs().amax(-1)).max().item() < F32_VS_F64


def test_leading_dimensions_and_empty_input():
    left, _ = hadamard_left_factor(96)
    x = torch.randn(2, 3, 96)
    assert torch.equal(hadamard(x, left.float()), hadamard_gpu_reference(x, left.float()))
    assert hadamard(torch.zeros(0, 96), left.float()).shape == (0, 96)


@pytest.mark.parametrize("n,a", [(96, 1), (100, 3), (3 * 2**15, 3), (2050 * 4, 2050)])
def test_refuses_sizes_without_a_kernel(n, a):
    with pytest.raises(ValueError, match="no Hadamard kernel"):
        hadamard(torch.zeros(1, n), torch.eye(a))
