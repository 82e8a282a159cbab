"""Every fold and rotation is exact without quantisation: logits unchanged (fp32, tight tolerance)."""

import pytest
import torch
from tiny_models import FAMILIES
from tolerances import FLOAT64_EXACT, TRANSFORMS_ATOL_REL, TRANSFORMS_RTOL

from resq_export.algo.rotation import haar_orthogonal, pca_basis, subspace_rotations
from resq_export.artifact import load_artifact
from resq_export.config import QuantConfig
from resq_export.models.loader import load_model
from resq_export.quantize import quantize


def _ids(seed, shape=(2, 48)):
    return torch.randint(0, 400, shape, generator=torch.Generator().manual_seed(seed))


def _assert_same_logits(a, b):
    torch.testing.assert_close(a, b, rtol=TRANSFORMS_RTOL, atol=TRANSFORMS_ATOL_REL * b.abs().max().item())


def test_haar_and_pca_bases_are_orthogonal():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 64):
        q = haar_orthogonal(n, gen)
        torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=torch.float64), **FLOAT64_EXACT)
    x = torch.randn(500, 32, dtype=torch.float64)
    eig, basis = pca_basis(x.T @ x / 500)
    assert torch.all(eig[1:] >= eig[:-1])
    torch.testing.assert_close(basis.T @ basis, torch.eye(32, dtype=torch.float64), **FLOAT64_EXACT)
    r = subspace_rotations(32, 4, gen)
    assert torch.count_nonzero(r[:28, 28:]) == 0 and torch.count_nonzero(r[28:, :28]) == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", ["resq", "quarot"])
def test_all_transforms_leave_logits_unchanged(tiny_dirs, calib_file, tmp_path, family, method):
    """The production pipeline (quantize) with float weights, activations and KV cache: every fold,
    rotation, permutation and the online Hadamard applied, nothing rounded -> the source's logits."""
    cfg = QuantConfig.for_method(method, w_bits=16, a_bits=16, kv_bits=16, nsamples=4, seqlen=32)
    quantize(str(tiny_dirs[family]), cfg, tmp_path / "art", [str(calib_file)], progress=False)
    rotated, _, _ = load_artifact(tmp_path / "art")
    source = load_model(tiny_dirs[family]).decoder
    ids = _ids(5)
    with torch.no_grad():
        _assert_same_logits(rotated(ids), source(ids))
    layer = rotated.layers[0]
    assert layer.key_rotation is not None and layer.down_rotation is not None
    assert (layer.o_input_perm is not None) == (method == "resq")
    assert rotated.final_norm is None and not torch.equal(rotated.embed, source.embed)
    for u in (layer.key_rotation, layer.down_rotation):  # U_C and U_D's left factor, orthogonal
        torch.testing.assert_close(u.double() @ u.double().T, torch.eye(u.shape[0], dtype=torch.float64),
                                   atol=1e-6, rtol=0)


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
