import math

import pytest
import torch
from tolerances import FLOAT64_EXACT

from resq_export.algo.hadamard import apply_kron, hadamard_factors, paley, sylvester

HADAMARD_ORDERS = [1, 2, 4, 8, 12, 20, 24, 28, 36, 40, 44, 60]

# n -> (expected left order, expected is_hadamard)
FACTOR_CASES = {
    256: (1, True),
    1536: (12, True),  # 3 * 512 -> Paley I, q = 11
    2816: (44, True),  # 11 * 256 -> Paley I, q = 43
    4864: (76, True),  # 19 * 256 -> Paley II, q = 37
    5632: (44, True),  # 11 * 512
    8192: (1, True),
    11008: (43, False),  # 43 * 256 -> no Paley order within the cap
    14336: (28, True),  # 7 * 2048 -> Paley II, q = 13
    18944: (148, True),  # 37 * 512 -> Paley II, q = 73
}


def _assert_hadamard(h: torch.Tensor, order: int) -> None:
    assert h.dtype == torch.float64
    assert h.shape == (order, order)
    assert bool(((h == 1) | (h == -1)).all())
    assert torch.equal(h @ h.T, order * torch.eye(order, dtype=torch.float64))


@pytest.mark.parametrize("order", [o for o in HADAMARD_ORDERS if o & (o - 1) == 0])
def test_sylvester_is_hadamard(order):
    _assert_hadamard(sylvester(order), order)


@pytest.mark.parametrize("order", HADAMARD_ORDERS)
def test_paley_is_hadamard(order):
    h = paley(order)
    assert h is not None
    _assert_hadamard(h, order)


@pytest.mark.parametrize("order", [76, 108, 140, 148, 88])
def test_paley_larger_orders(order):
    # 76, 148: Paley II; 108, 140: Paley I; 88 = 2 * 44: doubled Paley I.
    h = paley(order)
    assert h is not None
    _assert_hadamard(h, order)


@pytest.mark.parametrize("order", [3, 6, 10, 43, 172, 344, 688])
def test_paley_unconstructible_returns_none(order):
    assert paley(order) is None


@pytest.mark.parametrize("order", [0, -4, 3, 6, 12])
def test_sylvester_rejects_bad_order(order):
    with pytest.raises(ValueError):
        sylvester(order)


@pytest.mark.parametrize("order", [0, -8])
def test_paley_rejects_nonpositive(order):
    with pytest.raises(ValueError):
        paley(order)


@pytest.mark.parametrize("n", sorted(FACTOR_CASES))
def test_hadamard_factors(n):
    expected_left, expected_had = FACTOR_CASES[n]
    left, right, is_had = hadamard_factors(n)
    a, b = left.shape[0], right.shape[0]
    assert left.shape == (a, a) and right.shape == (b, b)
    assert left.dtype == right.dtype == torch.float64
    assert a * b == n
    assert a == expected_left
    assert is_had is expected_had
    assert b & (b - 1) == 0

    torch.testing.assert_close(left @ left.T, torch.eye(a, dtype=torch.float64), **FLOAT64_EXACT)
    if is_had:
        _assert_hadamard(torch.round(left * math.sqrt(a)), a)
        torch.testing.assert_close(left * math.sqrt(a), torch.round(left * math.sqrt(a)))
    # right is a normalised Sylvester matrix: equal-magnitude entries and
    # orthonormal rows.  Only a few rows are checked, since full checks on the
    # 512 MiB matrix for b = 8192 would dominate the test time.
    rows = min(b, 16)
    assert bool((right[:rows].abs() == 1 / math.sqrt(b)).all())
    torch.testing.assert_close(
        right[:rows] @ right.T, torch.eye(rows, b, dtype=torch.float64), **FLOAT64_EXACT
    )
    assert torch.equal(torch.round(right[:rows, :rows] * math.sqrt(b)), sylvester(rows))

    if n <= 2048:
        m = apply_kron(torch.eye(n, dtype=torch.float64), left, right)
        torch.testing.assert_close(m @ m.T, torch.eye(n, dtype=torch.float64), atol=1e-10, rtol=0)
    x = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = apply_kron(x, left, right)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-10, rtol=0)


def test_hadamard_factors_explicit_kron_small():
    # 96 = 12 * 8 and 264 = 132 * 2 (Paley I, q = 131) are Hadamard;
    # 172 = 43 * 4 takes the random-orthogonal fallback.
    for n, expected_had in ((96, True), (264, True), (172, False)):
        left, right, is_had = hadamard_factors(n)
        assert is_had is expected_had
        dense = torch.kron(left, right)
        torch.testing.assert_close(dense @ dense.T, torch.eye(n, dtype=torch.float64), **FLOAT64_EXACT)
        x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(apply_kron(x, left, right), x @ dense, **FLOAT64_EXACT)


@pytest.mark.parametrize(
    "n, left_order, is_had",
    [(1, 1, True), (2, 1, True), (3, 3, False), (12, 12, True), (45, 45, False), (2 * 45, 45, False)],
)
def test_hadamard_factors_edge_cases(n, left_order, is_had):
    left, right, had = hadamard_factors(n)
    assert left.shape[0] == left_order
    assert left.shape[0] * right.shape[0] == n
    assert had is is_had
    dense = torch.kron(left, right)
    torch.testing.assert_close(dense @ dense.T, torch.eye(n, dtype=torch.float64), **FLOAT64_EXACT)


def test_fallback_is_seeded():
    l0, r0, h0 = hadamard_factors(11008, seed=0)
    l0b, r0b, _ = hadamard_factors(11008, seed=0)
    l1, r1, _ = hadamard_factors(11008, seed=1)
    assert not h0
    assert torch.equal(l0, l0b) and torch.equal(r0, r0b)
    assert not torch.allclose(l0, l1)
    assert torch.equal(r0, r1)


def test_hadamard_path_ignores_seed():
    l0, r0, _ = hadamard_factors(1536, seed=0)
    l1, r1, _ = hadamard_factors(1536, seed=7)
    assert torch.equal(l0, l1) and torch.equal(r0, r1)


@pytest.mark.parametrize("n", [0, -1])
def test_hadamard_factors_rejects_bad_n(n):
    with pytest.raises(ValueError):
        hadamard_factors(n)


@pytest.mark.parametrize("n", [24, 48, 96])
def test_apply_kron_matches_dense(n):
    left, right, _ = hadamard_factors(n)
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(2, 3, n, dtype=torch.float64, generator=gen)
    expected = x @ torch.kron(left, right)
    out = apply_kron(x, left, right)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, expected, **FLOAT64_EXACT)


def test_apply_kron_arbitrary_factors():
    # Non-symmetric factors catch a transposed contraction.
    gen = torch.Generator().manual_seed(3)
    left = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    right = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    x = torch.randn(4, 15, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(apply_kron(x, left, right), x @ torch.kron(left, right), **FLOAT64_EXACT)
    v = x[0]
    torch.testing.assert_close(apply_kron(v, left, right), v @ torch.kron(left, right), **FLOAT64_EXACT)


def test_apply_kron_casts_to_input_dtype():
    left, right, _ = hadamard_factors(48)
    x = torch.randn(5, 48, dtype=torch.float32)
    out = apply_kron(x, left, right)
    assert out.dtype == torch.float32
    expected = (x.double() @ torch.kron(left, right)).float()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    xb = x.to(torch.bfloat16)
    assert apply_kron(xb, left, right).dtype == torch.bfloat16


def test_apply_kron_rejects_bad_shapes():
    left, right, _ = hadamard_factors(24)
    with pytest.raises(ValueError):
        apply_kron(torch.randn(2, 25), left, right)
    with pytest.raises(ValueError):
        apply_kron(torch.randn(2, 24), left[:, :2], right)
    with pytest.raises(ValueError):
        apply_kron(torch.randn(2, 24), left, right.flatten())
    with pytest.raises(ValueError):
        apply_kron(torch.tensor(1.0), left, right)


@pytest.mark.parametrize("n", [1, 2, 64, 1024])
def test_fwht_equals_sylvester_matmul(n):
    from resq_export.algo.hadamard import fwht

    x = torch.randn(3, 5, n, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), x @ sylvester(n) / n ** 0.5, **FLOAT64_EXACT)


@pytest.mark.parametrize("n", [96, 1536, 2816, 11008 // 8])
def test_apply_down_hadamard_equals_dense_kron(n):
    from resq_export.algo.hadamard import apply_down_hadamard, hadamard_left_factor

    left, _ = hadamard_left_factor(n, seed=3)
    l2, right, _ = hadamard_factors(n, seed=3)
    assert torch.equal(left, l2)
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(apply_down_hadamard(x, left), apply_kron(x, left, right), atol=1e-10, rtol=0)
