"""GPTQ (Frantar et al. 2022) with fixed per-(row, group) scales and per-column bit widths.

Scales are chosen before the sweep from the original weights (MSE clip search), so error feedback
flows freely across group and precision boundaries (4-bit columns feed their error into the 8-bit
ones, as ResQ does).

Act-order (`order`): the columns are rounded in descending diag(H) instead of left to right, so the
columns whose error costs most are rounded first, while many columns remain to absorb it. Since the
scales are fixed beforehand (AutoGPTQ's "static groups"), the order changes where the error flows,
never the layout. "act-in-parts" sorts within each precision part and keeps the 4-bit part first: a
global order would round the high-variance 8-bit columns (the largest diag(H)) first and leave them
no 4-bit error to absorb.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import HessianError
from .finite import all_finite
from .quant import group_bounds, quantize_sym

UPDATE_ROWS = 512  # rows per piece of the lazy batch update (the same products as one GEMM, tested)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor | list[torch.Tensor],
    scale: torch.Tensor,
    group_sizes: Sequence[int],
    group_bits: Sequence[int],
    damp: float = 0.01,
    block: int = 128,
    order: str = "natural",
) -> torch.Tensor:
    """weight [out, K], hessian [K, K] (sum of x^T x), scale [out, G] (each input group's scales),
    group_sizes and group_bits [G] -> integer codes [out, K], int8.

    hessian given as a one-element list hands it over: it is emptied, the float64 Hessian is then
    damped in place and freed once factorised instead of copied (an 8B model's down_proj Hessian,
    14336², is 1.6 GB a copy).

    order: natural (left to right), act or act-in-parts (column_order); the codes come back in the
    original column order either way. The permutation is done in place: it adds one block of
    UPDATE_ROWS rows of the Hessian (512 x 14336 float64 = 59 MB at 8B) to the peak, not a copy."""
    if isinstance(hessian, list):
        h = hessian.pop()
        h = h if h.dtype == torch.float64 else h.to(torch.float64)
    else:
        h = hessian.to(torch.float64).clone()
    del hessian
    if not all_finite(h):  # Cholesky may return NaN factors instead of failing
        raise HessianError("Hessian contains NaN/Inf")
    k = weight.shape[1]
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    col_group = [g for g, (a, b) in enumerate(group_bounds(group_sizes)) for _ in range(a, b)]
    if len(col_group) != k:
        raise ValueError(f"group sizes {tuple(group_sizes)} do not add up to the {k} input channels")
    perm = column_order(torch.diagonal(h), torch.tensor([int(group_bits[g]) for g in col_group]), order)
    if perm is not None:  # sweep position i is input column perm[i]
        _permute_symmetric_inplace(h, perm)
        dead = dead[perm]
        col_group = [col_group[c] for c in perm.tolist()]
    torch.diagonal(h).add_(damp * torch.diagonal(h).mean())  # = h + damp * mean * I, no k x k identity
    try:
        hinv = _upper_cholesky_of_inverse_inplace(h)
    except torch.linalg.LinAlgError as e:
        raise HessianError(f"Hessian not positive definite after damping {damp}: {e}") from None
    # The float64 weight only now: the factorisation above is the memory peak for wide inputs.
    w = weight.to(torch.float64, copy=True)  # one copy (.to().clone() briefly made two)
    if perm is not None:
        _permute_columns_inplace(w, perm)
    w[:, dead] = 0.0
    # Codes fit int8 (at most 8 bits); columns' scales are widened one at a time. Both keep the
    # sweep's memory near one float64 copy of the weight (an 8B model's MLP is 117 M weights).
    q = torch.zeros(w.shape, dtype=torch.int8)
    out_col = perm.tolist() if perm is not None else range(k)  # codes written straight to their own column
    scale = scale.to(torch.float64)
    outer = torch.empty((w.shape[0], block), dtype=torch.float64)  # err x hinv row, reused per column
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = col_group[col]
            s = scale[:, g]
            qc = quantize_sym(w1[:, i], s, int(group_bits[g]))
            q[:, out_col[col]] = qc
            err = (w1[:, i] - qc * s) / hinv1[i, i]
            update = outer[:, : i2 - i1 - i]
            torch.mul(err[:, None], hinv1[i, i:][None], out=update)  # rounded, then subtracted: no FMA
            w1[:, i:] -= update
            err1[:, i] = err
        for r in range(0, w.shape[0], UPDATE_ROWS):  # the lazy batch update, without an [out, K] temporary
            w[r:r + UPDATE_ROWS, i2:] -= err1[r:r + UPDATE_ROWS] @ hinv[i1:i2, i2:]
    del w
    return q


def column_order(diag: torch.Tensor, col_bits: torch.Tensor, order: str) -> torch.Tensor | None:
    """The order GPTQ rounds the input columns in, as a permutation (position -> column), or None for
    natural (left to right). act: descending diag (the Hessian's, i.e. the input's energy per
    channel); act-in-parts: the same within each precision part (col_bits: each column's weight
    bits), the parts in ascending bits (4-bit first, as the layout stores them). Stable sorts: equal
    diagonals keep their left-to-right order, so the result is deterministic."""
    if order == "natural":
        return None
    if order == "act":
        return torch.sort(diag, descending=True, stable=True).indices
    if order == "act-in-parts":
        parts = []
        for bits in torch.unique(col_bits).tolist():  # ascending
            cols = torch.nonzero(col_bits == bits).flatten()
            parts.append(cols[torch.sort(diag[cols], descending=True, stable=True).indices])
        return torch.cat(parts)
    raise ValueError(f"unknown GPTQ column order {order!r}")


def _permute_columns_inplace(m: torch.Tensor, perm: torch.Tensor) -> None:
    """m[:, i] = m[:, perm[i]] for every i, UPDATE_ROWS rows at a time (the temporary is one block)."""
    for r in range(0, m.shape[0], UPDATE_ROWS):
        m[r:r + UPDATE_ROWS] = m[r:r + UPDATE_ROWS, perm]


def _permute_symmetric_inplace(h: torch.Tensor, perm: torch.Tensor) -> None:
    """h = h[perm][:, perm] without a second k x k matrix: the columns by row blocks, then the rows by
    following the permutation's cycles (the temporary is one row)."""
    _permute_columns_inplace(h, perm)
    target = perm.tolist()
    done = [False] * len(target)
    for start in range(len(target)):
        if done[start] or target[start] == start:
            continue
        first = h[start].clone()
        i = start
        while target[i] != start:  # row i takes the row that belongs there, then moves on to that one
            h[i] = h[target[i]]
            done[i] = True
            i = target[i]
        h[i] = first
        done[i] = True


def _upper_cholesky_of_inverse_inplace(h: torch.Tensor) -> torch.Tensor:
    """GPTQ's Cholesky(H^-1, upper) computed in h's own storage: LAPACK potrf, potri and potrf
    again on the column-major view of the symmetric h (the same calls and results as out-of-place,
    without a second k x k float64 matrix: 1.6 GB for an 8B model's down_proj). Returns a
    column-major view of h."""
    col_major = h.mT
    torch.linalg.cholesky(col_major, out=col_major)
    torch.cholesky_inverse(col_major, out=col_major)
    torch.linalg.cholesky(col_major, upper=True, out=col_major)
    return col_major
