"""Every fold and rotation is exact without quantisation: logits unchanged (fp32, tight tolerance)."""

import copy

import pytest
import torch

from resq_export.algo.rotation import haar_orthogonal, pca_basis, subspace_rotations
from resq_export.config import QuantConfig
from resq_export.models.loader import load_model
from resq_export.quantize import CalibrationSet, apply_bases, collect_basis_statistics
from resq_export.transforms import rotate
from tiny_models import FAMILIES


def _ids(seed, shape=(2, 48)):
    return torch.randint(0, 400, shape, generator=torch.Generator().manual_seed(seed))


def _assert_same_logits(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * b.abs().max().item())


def test_haar_and_pca_bases_are_orthogonal():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 64):
        q = haar_orthogonal(n, gen)
        torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    x = torch.randn(500, 32, dtype=torch.float64)
    eig, basis = pca_basis(x.T @ x / 500)
    assert torch.all(eig[1:] >= eig[:-1])
    torch.testing.assert_close(basis.T @ basis, torch.eye(32, dtype=torch.float64), atol=1e-12, rtol=0)
    r = subspace_rotations(32, 4, gen)
    assert torch.count_nonzero(r[:28, 28:]) == 0 and torch.count_nonzero(r[28:, :28]) == 0


def test_basis_statistics_bases_orthogonal(tiny_dirs):
    model = load_model(tiny_dirs["llama"]).decoder
    rotate.fold_norms(model)
    stats = collect_basis_statistics(model, CalibrationSet(_ids(3, (4, 32))), progress=False)
    for sigma in [stats.residual.finalize(), stats.values_[1][0].finalize(), stats.keys_[0].finalize()]:
        _, u = pca_basis(sigma)
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[0], dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", ["resq", "quarot"])
def test_all_transforms_leave_logits_unchanged(tiny_dirs, family, method):
    model = load_model(tiny_dirs[family]).decoder
    ids = _ids(5)
    with torch.no_grad():
        before = model(ids)
        rotated = copy.deepcopy(model)
        rotate.fold_norms(rotated)
        _assert_same_logits(rotated(ids), before)
        apply_bases(rotated, QuantConfig.for_method(method), CalibrationSet(_ids(6, (4, 32))), progress=False)
        after = rotated(ids)
    layer = rotated.layers[0]
    assert layer.key_rotation is not None and layer.down_rotation is not None
    assert (layer.o_input_perm is not None) == (method == "resq")
    assert not torch.equal(rotated.embed, model.embed)
    _assert_same_logits(after, before)


def test_float64_transforms_by_blocks_equal_whole_matrix(monkeypatch):
    """The transforms work on float64 blocks of rows or columns to bound memory; with blocks of 3
    rows/columns (and a ragged last one) every result equals the whole-matrix float64 arithmetic."""
    from resq_export.algo.hadamard import apply_down_hadamard
    from resq_export.transforms import rotate

    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 64, generator=g)
    u_in = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))[0]
    u_out = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    left = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=torch.float64))[0]
    norm = torch.rand(64, generator=g) + 0.5
    monkeypatch.setattr(rotate, "F64_BLOCK_ELEMENTS", 3 * 64)
    assert torch.equal(rotate.rotate_rows(w, u_in), (w.double() @ u_in).float())
    assert torch.equal(rotate._by_rows(w, lambda b: b * norm.double()), (w.double() * norm.double()).float())
    assert torch.equal(rotate._by_rows(w, lambda b: apply_down_hadamard(b, left)),
                       apply_down_hadamard(w.double(), left).float())
    monkeypatch.setattr(rotate, "F64_BLOCK_ELEMENTS", 3 * 40)
    assert torch.equal(rotate._by_columns(w, lambda b: u_out.T @ b), (u_out.T @ w.double()).float())
