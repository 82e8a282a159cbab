"""GPTQ act-order with static groups (issue 32, item 2): `--gptq-order natural|act|act-in-parts`
changes the order columns are rounded in, never the scales or the layout; codes come back in the
original column order."""

from __future__ import annotations

import pytest
import torch

from resq_export.algo.gptq import _permute_symmetric_inplace, column_order, gptq_quantize
from resq_export.algo.quant import group_bounds, quantize_sym, weight_scale
from resq_export.config import QuantConfig
from resq_export.errors import ConfigError

SIZES, BITS = (32, 32, 32, 32), (4, 4, 4, 8)  # a ResQ-like input: a 4-bit part, then an 8-bit one


def _problem(seed: int, energy: torch.Tensor, n: int = 32):
    """Correlated inputs whose channels carry the given energies, their Hessian, random weights and
    each group's scales."""
    g = torch.Generator().manual_seed(seed)
    k = energy.numel()
    mix = torch.randn(k, k, generator=g) / k ** 0.5
    x = (torch.randn(2048, k, generator=g) @ mix + 0.1 * torch.randn(2048, k, generator=g)) * energy
    w = torch.randn(n, k, generator=g)
    scale = torch.cat([weight_scale(w[:, a:b], nb) for (a, b), nb in zip(group_bounds(SIZES), BITS)], 1)
    return x.double().T @ x.double(), w, scale


def _hessian_error(w, q, scale, h) -> float:
    """tr((W - Q) H (W - Q)^T): the layer output's squared error over the calibration inputs."""
    e = w.double() - q.double() * scale.double().repeat_interleave(torch.tensor(SIZES), 1)
    return float(torch.einsum("ij,jk,ik->", e, h, e))


def _textbook(w, h, scale, perm, block=16):
    """A plain GPTQ on out-of-place permuted inputs (h[perm][:, perm], w[:, perm], the per-column
    scales and bits permuted alike), fresh temporaries everywhere; the codes put back with
    out[:, perm] = codes."""
    k = w.shape[1]
    col_scale = scale.double().repeat_interleave(torch.tensor(SIZES), 1)[:, perm]
    col_bits = torch.tensor(BITS).repeat_interleave(torch.tensor(SIZES))[perm]
    hp = h.clone()
    dead = torch.diagonal(hp) == 0
    hp[dead, dead] = 1.0
    hp = hp[perm][:, perm]
    hp += 0.01 * torch.diagonal(hp).mean() * torch.eye(k, dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hp)), upper=True)
    wd = w.double()[:, perm].clone()
    wd[:, dead[perm]] = 0.0
    codes = torch.zeros_like(wd)
    for i1 in range(0, k, block):
        w1, err1 = wd[:, i1:i1 + block].clone(), torch.zeros(w.shape[0], block, dtype=torch.float64)
        for i in range(block):
            s = col_scale[:, i1 + i]
            codes[:, i1 + i] = quantize_sym(w1[:, i], s, int(col_bits[i1 + i]))
            err1[:, i] = (w1[:, i] - codes[:, i1 + i] * s) / hinv[i1 + i, i1 + i]
            w1[:, i:] -= err1[:, i, None] * hinv[i1 + i, i1 + i:i1 + block][None]
        wd[:, i1 + block:] -= err1 @ hinv[i1:i1 + block, i1 + block:]
    out = torch.zeros_like(codes)
    out[:, perm] = codes
    return out


@pytest.mark.parametrize("order", ["natural", "act", "act-in-parts"])
def test_codes_equal_a_textbook_sweep_on_permuted_inputs(order, monkeypatch):
    """The in-place permutation of H and W, and codes written straight to their own columns, equal a
    plain GPTQ run on the permuted problem with its codes unpermuted, bit for bit (natural: the
    identity, i.e. today's sweep). A dead channel included; UPDATE_ROWS small so that the in-place
    permutation works by several row blocks."""
    import resq_export.algo.gptq as gptq

    monkeypatch.setattr(gptq, "UPDATE_ROWS", 24)
    energy = torch.logspace(-1.5, 1.5, 128)[torch.randperm(128, generator=torch.Generator().manual_seed(1))]
    h, w, scale = _problem(0, energy, n=40)
    h[:, 5] = h[5, :] = 0.0
    got = gptq_quantize(w, [h.clone()], scale, SIZES, BITS, block=16, order=order)
    diag = torch.diagonal(h).clone()
    diag[5] = 1.0  # a dead channel is ordered as GPTQ sees it: diagonal 1
    perm = column_order(diag, torch.tensor(BITS).repeat_interleave(torch.tensor(SIZES)), order)
    perm = torch.arange(128) if perm is None else perm
    assert (order == "natural") == torch.equal(perm, torch.arange(128))
    assert torch.equal(got.double(), _textbook(w, h, scale, perm))
    assert (got[:, 5] == 0).all()


def test_order_that_is_already_natural_changes_nothing():
    """Energies already descending: act's order is the identity, and its code path (permutations and
    all) gives today's codes bit for bit."""
    h, w, _ = _problem(2, torch.logspace(1.5, -1.5, 128))
    first = torch.sort(torch.diagonal(h), descending=True).indices  # the mixing leaves a few out of order
    h, w = h[first][:, first], w[:, first]
    scale = torch.cat([weight_scale(w[:, a:b], 4) for a, b in group_bounds(SIZES)], 1)
    natural = gptq_quantize(w, h, scale, SIZES, (4, 4, 4, 4), block=32)
    assert torch.equal(column_order(torch.diagonal(h), torch.full((128,), 4), "act"), torch.arange(128))
    assert torch.equal(gptq_quantize(w, h, scale, SIZES, (4, 4, 4, 4), block=32, order="act"), natural)


def test_column_order_sorts_within_parts_and_keeps_ties_in_place():
    diag = torch.tensor([1.0, 3.0, 3.0, 2.0, 5.0, 0.5, 5.0, 9.0])
    bits = torch.tensor([4, 4, 4, 4, 4, 4, 8, 8])
    assert column_order(diag, bits, "natural") is None
    assert column_order(diag, bits, "act").tolist() == [7, 4, 6, 1, 2, 3, 0, 5]
    # the 4-bit part first, each part in descending diag, equal ones left to right
    assert column_order(diag, bits, "act-in-parts").tolist() == [4, 1, 2, 3, 0, 5, 7, 6]
    with pytest.raises(ValueError, match="unknown GPTQ column order"):
        column_order(diag, bits, "random")


@pytest.mark.parametrize("seed", range(4))
def test_permute_symmetric_inplace_equals_indexing(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(37, 37, generator=g, dtype=torch.float64)
    h = a + a.T
    perm = torch.randperm(37, generator=g)
    want = h[perm][:, perm]
    _permute_symmetric_inplace(h, perm)
    assert torch.equal(h, want)


@pytest.mark.parametrize("seed", range(4))
def test_act_order_lowers_the_hessian_weighted_error(seed):
    """Channel energies spread over three decades in no particular order, all weights 4-bit: rounding
    the strongest channels first leaves the weakest to absorb the error, so act-order's output error
    over the calibration inputs is lower than the natural order's."""
    energy = torch.logspace(-1.5, 1.5, 128)[torch.randperm(128, generator=torch.Generator().manual_seed(seed + 10))]
    h, w, scale = _problem(seed, energy)
    bits = (4, 4, 4, 4)
    err = {o: _hessian_error(w, gptq_quantize(w, h, scale, SIZES, bits, block=32, order=o), scale, h)
           for o in ("natural", "act")}
    assert err["act"] < err["natural"]


@pytest.mark.parametrize("seed", range(4))
def test_act_in_parts_beats_both_on_a_resq_like_input(seed):
    """ResQ's layout: energies rising towards the last channels, the strongest quarter 8-bit. Sorting
    within each part and keeping the 4-bit part first lowers the output error below the natural order
    and below a global act-order (which would round the 8-bit part first and leave it no 4-bit error
    to absorb)."""
    h, w, scale = _problem(seed, torch.logspace(-1.5, 1.5, 128))
    err = {o: _hessian_error(w, gptq_quantize(w, h, scale, SIZES, BITS, block=32, order=o), scale, h)
           for o in ("natural", "act", "act-in-parts")}
    assert err["act-in-parts"] < min(err["natural"], err["act"])


def test_config_records_and_checks_the_order():
    assert QuantConfig.for_method("resq").gptq_order == "natural"
    cfg = QuantConfig.for_method("resq", gptq_order="act-in-parts")
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["gptq_order"] == "act-in-parts"
    with pytest.raises(ConfigError, match="unknown GPTQ order"):
        QuantConfig.for_method("resq", gptq_order="reverse")
    with pytest.raises(ConfigError, match="needs --weight-algo gptq"):
        QuantConfig.for_method("lqer", gptq_order="act")  # LQER's preset rounds by RTN
    assert QuantConfig.for_method("lqer", weight_algo="gptq", gptq_order="act").gptq_order == "act"
