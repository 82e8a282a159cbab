"""LQER's projection on the kernels: xa by the grouped GEMM with A as an 8-bit weight, then the per-token
8-bit quantiser, bit for bit against the reference executor's GPU variant."""

import pytest
import torch
from kernel_cases import LAYOUTS
from helpers import activations, random_linear

from resq_export.algo.quant import quantize_groups, quantize_sym_per_token
from resq_export.kernels.launch import Prepared, lqer_project, quantize_act
from resq_export.reference import gpu_chunks


@pytest.mark.parametrize("tile", ["decode", "prefill"])
@pytest.mark.parametrize("name,lay,n", [LAYOUTS[i] for i in (0, 2, 3, 5, 7)], ids=[LAYOUTS[i][0] for i in (0, 2, 3, 5, 7)])
def test_qa_sa_equal_the_reference(name, lay, n, tile):
    lin = random_linear(lay, n, rank=37, seed=5)
    x = activations(6, lay.in_features, seed=6)
    prep = Prepared.from_linear(lin)
    qa, sa = lqer_project(quantize_act(x, prep.parts, prep.pad), prep, tile)
    qx, sx, zx = quantize_groups(x, lay.group_sizes, lay.a_bits)
    qa_ref, sa_ref = quantize_sym_per_token(lin._lqer_a.matmul_gpu(qx, sx, zx, gpu_chunks(lay)), 8)
    assert torch.equal(qa.to(torch.int32), qa_ref)
    assert torch.equal(sa, sa_ref[:, 0])
    assert (qa_ref.abs() == 127).any() or (qa_ref == -128).any()  # the scale's maximum is reached
