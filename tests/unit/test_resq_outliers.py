"""ResQ (PCA basis, 1/8 of channels at 8-bit, subspace rotations) beats uniform 4-bit, with and
without a random rotation, on activations with planted outlier channels. Same data, same weights,
the real quantise_linear + reference executor path."""

import torch

from resq_export.algo.rotation import haar_orthogonal, pca_basis, subspace_rotations
from resq_export.config import QuantConfig
from resq_export.decoder import FloatLinear
from resq_export.layout import LinearLayout
from resq_export.quantize.linears import quantize_linear

D, OUT, N = 128, 96, 4096


def _data():
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(N, 24, generator=g) @ torch.randn(24, D, generator=g)  # correlated channels
    x = latent + 0.3 * torch.randn(N, D, generator=g)
    x[:, [3, 50, 97]] *= 40.0  # planted outlier channels
    w = torch.randn(OUT, D, generator=g) / D ** 0.5
    return x, w


def _output_error(x, w, u, layout):
    cfg = QuantConfig.for_method("rtn")
    lin = quantize_linear(FloatLinear((w.double() @ u).float()), layout, cfg, None, None)
    y = lin((x.double() @ u).float())
    ref = x @ w.T
    return ((y - ref) ** 2).sum() / (ref ** 2).sum()


def test_resq_beats_uniform_4bit_on_planted_outliers():
    x, w = _data()
    gen = torch.Generator().manual_seed(1)
    uniform = LinearLayout((D,), (4,), (4,))
    r = D // 8
    mixed = LinearLayout((D - r, r), (4, 8), (4, 8))
    err_rtn = _output_error(x, w, torch.eye(D, dtype=torch.float64), uniform)
    err_quarot = _output_error(x, w, haar_orthogonal(D, gen), uniform)
    _, basis = pca_basis(x.double().T @ x.double() / N)
    err_resq = _output_error(x, w, basis @ subspace_rotations(D, r, gen), mixed)
    assert err_resq < 0.5 * err_quarot < 0.5 * err_rtn, (err_resq, err_quarot, err_rtn)
