"""Kronecker-factored Hadamard / orthogonal transforms for the online U_D rotation.

ResQ rotates the input of every MLP down_proj by an orthogonal U_D of size
n = intermediate size.  A dense n x n matrix would be far too expensive at
runtime, so U_D is kept as kron(left, right): ``right`` is a Sylvester
(Walsh-Hadamard) matrix of order 2^k, ``left`` a small Hadamard matrix from a
Paley construction, or a seeded Haar-random orthogonal matrix when no such
Hadamard matrix can be built.
"""

from __future__ import annotations

import math
import operator

import torch

from .rotation import haar_orthogonal

__all__ = ["sylvester", "paley", "hadamard_factors", "apply_kron"]

# Largest Hadamard `left` factor hadamard_factors will try.  Applying `left`
# costs n * order per token and building it is O(order^2); past this size the
# random-orthogonal fallback of odd order m is far cheaper (e.g. n = 43*256:
# Paley I can make order 5504 = 5503 + 1, but a dense 5504 x 5504 factor would
# defeat the point of the factorisation).
_MAX_LEFT_ORDER = 1024


def _as_order(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def _is_prime(q: int) -> bool:
    # Orders of interest are a few thousand at most, so trial division suffices.
    if q < 2:
        return False
    if q % 2 == 0:
        return q == 2
    d = 3
    while d * d <= q:
        if q % d == 0:
            return False
        d += 2
    return True


def sylvester(order: int) -> torch.Tensor:
    """Unnormalised Sylvester Hadamard matrix (float64, +-1) of a power-of-two order."""
    order = _as_order(order, "order")
    if not _is_power_of_two(order):
        raise ValueError(f"Sylvester order must be a power of two, got {order}")
    # Doubling in place inside one buffer avoids the chain of ever larger
    # kron temporaries (the final matrix alone can be 512 MiB).
    h = torch.empty(order, order, dtype=torch.float64)
    h[0, 0] = 1.0
    size = 1
    while size < order:
        block = h[:size, :size]
        h[:size, size : 2 * size] = block
        h[size : 2 * size, :size] = block
        torch.neg(block, out=h[size : 2 * size, size : 2 * size])
        size *= 2
    return h


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = chi(j - i) with chi the quadratic character mod prime q."""
    chi = -torch.ones(q, dtype=torch.float64)
    squares = (torch.arange(1, q, dtype=torch.int64) ** 2) % q
    chi[squares] = 1.0
    chi[0] = 0.0
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def _conference_core(q: int, sign: float) -> torch.Tensor:
    """[[0, 1^T], [sign * 1, Q]] of order q + 1."""
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1.0
    c[1:, 0] = sign
    c[1:, 1:] = _jacobsthal(q)
    return c


def _paley1(q: int) -> torch.Tensor:
    # q = 3 mod 4 makes Q (hence S) skew, and S S^T = q I, so (I + S)(I + S)^T = (q + 1) I.
    s = _conference_core(q, -1.0)
    return torch.eye(q + 1, dtype=torch.float64) + s


def _paley2(q: int) -> torch.Tensor:
    # q = 1 mod 4 makes C a symmetric conference matrix (C C^T = q I); the two
    # 2x2 blocks are chosen so the cross terms cancel and the zeros of C are filled.
    c = _conference_core(q, 1.0)
    a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


def _paley_plan(order: int) -> tuple[str, int, int] | None:
    """How to build a Hadamard matrix of `order`: (kind, q, doublings), or None.

    Planning is arithmetic only, so probing many orders never builds a matrix.
    """
    doublings = 0
    while True:
        if _is_power_of_two(order):
            return ("sylvester", order, doublings)
        if order % 4 != 0:
            return None
        q = order - 1
        if q % 4 == 3 and _is_prime(q):
            return ("paley1", q, doublings)
        q = order // 2 - 1
        if q % 4 == 1 and _is_prime(q):
            return ("paley2", q, doublings)
        if order % 8 != 0:
            return None
        order //= 2
        doublings += 1


def paley(order: int) -> torch.Tensor | None:
    """Unnormalised Hadamard matrix (float64, +-1) of `order`, or None.

    Uses Sylvester (powers of two), Paley I (q + 1, q prime = 3 mod 4),
    Paley II (2(q + 1), q prime = 1 mod 4), each optionally doubled by
    Kronecker products with the order-2 Sylvester matrix.
    """
    order = _as_order(order, "order")
    plan = _paley_plan(order)
    if plan is None:
        return None
    kind, param, doublings = plan
    if kind == "sylvester":
        base = sylvester(param)
    elif kind == "paley1":
        base = _paley1(param)
    else:
        base = _paley2(param)
    if doublings:
        base = torch.kron(sylvester(2 ** doublings), base)
    return base


def hadamard_left_factor(n: int, seed: int = 0) -> tuple[torch.Tensor, bool]:
    """The small factor of U_D = kron(left, S) / norms, S the Sylvester matrix of order n / len(left).

    `left` (float64, normalised) is the smallest constructible Hadamard matrix of order m * 2^j
    (n = m * 2^k, m odd) or, when none exists within _MAX_LEFT_ORDER, a Haar-random orthogonal
    matrix of order m seeded by `seed` (is_hadamard False). The Sylvester part is never stored:
    apply_down_hadamard runs it as a fast Walsh-Hadamard transform.
    """
    n = _as_order(n, "n")
    k = (n & -n).bit_length() - 1
    m = n >> k
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64), True
    for j in range(k + 1):
        order = m << j
        if order > _MAX_LEFT_ORDER:
            break
        if _paley_plan(order) is not None:
            return paley(order).div_(math.sqrt(order)), True
    return haar_orthogonal(m, torch.Generator().manual_seed(seed)), False


def hadamard_factors(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(left, right, is_hadamard) with kron(left, right) = U_D, right the dense normalised Sylvester
    matrix (for tests and small sizes; the runtime uses apply_down_hadamard)."""
    left, is_hadamard = hadamard_left_factor(n, seed)
    right_order = n // left.shape[0]
    # In place: right can be 2^13 x 2^13 (512 MiB in float64).
    return left, sylvester(right_order).div_(math.sqrt(right_order)), is_hadamard


def fwht(x: torch.Tensor) -> torch.Tensor:
    """x @ S / sqrt(n) along the last axis (S the Sylvester matrix of order n, a power of two),
    in n log n butterflies."""
    n = x.shape[-1]
    if not _is_power_of_two(n):
        raise ValueError(f"the fast Walsh-Hadamard transform needs a power-of-two size, got {n}")
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        y = torch.stack([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], dim=2)
        h *= 2
    return y.reshape(x.shape) / math.sqrt(n)


def apply_down_hadamard(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """x @ kron(left, S/sqrt(b)) with b = n / len(left): the Walsh-Hadamard part by fwht."""
    a = left.shape[0]
    n = x.shape[-1]
    if n % a:
        raise ValueError(f"last dimension {n} is not a multiple of the left factor's order {a}")
    y = fwht(x.reshape(*x.shape[:-1], a, n // a))
    if a > 1:
        y = torch.einsum("...pq,pi->...iq", y, left.to(x.dtype))
    return y.reshape(x.shape)


def apply_kron(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Return x @ kron(left, right) without materialising the Kronecker product."""
    if left.dim() != 2 or left.shape[0] != left.shape[1]:
        raise ValueError(f"left must be a square matrix, got shape {tuple(left.shape)}")
    if right.dim() != 2 or right.shape[0] != right.shape[1]:
        raise ValueError(f"right must be a square matrix, got shape {tuple(right.shape)}")
    a, b = left.shape[0], right.shape[0]
    if x.dim() < 1 or x.shape[-1] != a * b:
        raise ValueError(
            f"last dim of x must be {a} * {b} = {a * b}, got shape {tuple(x.shape)}"
        )
    left = left.to(device=x.device, dtype=x.dtype)
    right = right.to(device=x.device, dtype=x.dtype)
    # Row-major (a, b) reshape matches kron's index (p, q) -> p * b + q, so
    # x @ kron(L, R) becomes L^T X R on each (a, b) block.
    xr = x.reshape(*x.shape[:-1], a, b)
    out = torch.matmul(torch.matmul(left.transpose(0, 1), xr), right)
    return out.reshape(x.shape)
