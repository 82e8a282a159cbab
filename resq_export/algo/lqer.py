"""LQER / L²QER (Zhang et al. 2024): a low-rank correction of the weight quantisation error.

W ~ Q(W) + (A B)^T with A [in, k], B [k, out]: y = x Q(W)^T + (x A) B.
"""

from __future__ import annotations

import torch

# Singular values below this fraction of the largest are not resolved by the Gram matrix (its
# eigenvalues carry absolute errors near eps * sigma_1^2): such components are set to zero.
RESOLVED = 1e-6


def top_singular(e: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest singular triplets (u [m, k], sigma [k], vh [k, n]) of a float64 matrix, from the
    eigendecomposition of its smaller Gram matrix: faster than a full SVD at LLM shapes and none of its
    m x n copies (docs/architecture.md, "Measured design choices"); the rank-k approximation agrees
    with torch.linalg.svd's to float64 rounding (tested)."""
    m, n = e.shape
    tall = m >= n
    gram = e.T @ e if tall else e @ e.T
    lam, vec = torch.linalg.eigh(gram)
    del gram
    k = min(k, lam.numel())
    lam, vec = lam.flip(0)[:k], vec.flip(1)[:, :k]
    sigma = lam.clamp(min=0).sqrt()
    resolved = sigma > sigma[:1].clamp(min=0) * RESOLVED if k else sigma > 0
    inv = torch.where(resolved, 1.0 / torch.where(resolved, sigma, 1.0), 0.0)
    sigma = torch.where(resolved, sigma, 0.0)
    if tall:  # vec holds right singular vectors: u = e v / sigma
        return (e @ vec) * inv, sigma, vec.T * (inv > 0)[:, None]
    return vec * (inv > 0), sigma, ((e.T @ vec) * inv).T


def lqer_factors(
    weight: torch.Tensor, weight_q: torch.Tensor, rank: int, act_scale: torch.Tensor | None = None,
    whitener: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-rank singular components of the (activation-scaled) error E^T = (W - Q(W))^T. With
    act_scale (L²QER) the rows of E^T (input channels) are weighted by s before the decomposition
    and un-weighted in A afterwards. With whitener L (whitening_factor: L L^T = the calibration inputs'
    damped second moment H) instead, the SVD of L^T E^T gives the rank-k correction with the least output
    error sum ||x (E^T - A B)||^2 on those inputs (the same objective as GPTQ's; L²QER's diagonal s is
    its uncorrelated special case): A = L^-T U_k, B = S_k V_k^T."""
    if act_scale is not None and whitener is not None:
        raise ValueError("lqer_factors takes act_scale or whitener, not both")
    # In place on one float64 copy: at the 8B down_proj shape each [out, in] float64 temporary is 470 MB.
    err_t = weight.to(torch.float64, copy=True).sub_(weight_q).T  # [in, out]
    if whitener is not None:
        u, sv, vh = top_singular(whitener.T @ err_t, rank)
        return torch.linalg.solve_triangular(whitener.T, u, upper=True), sv[:, None] * vh
    if act_scale is None:
        s = torch.ones(err_t.shape[0], dtype=torch.float64)
    else:
        s = act_scale.to(torch.float64).clamp(min=1e-4)
        s = s / torch.sqrt(s.min() * s.max())
        err_t.mul_(s[:, None])
    u, sv, vh = top_singular(err_t, rank)
    del err_t
    return u / s[:, None], sv[:, None] * vh


def whitening_factor(second_moment: torch.Tensor, damp: float) -> torch.Tensor:
    """Lower-triangular L with L L^T = H + damp * mean(diag H) * I (float64; H, the sum of x^T x over the
    calibration inputs, is left as it is: GPTQ still needs it)."""
    h = second_moment.to(torch.float64, copy=True)
    torch.diagonal(h).add_(damp * torch.diagonal(h).mean())
    chol, info = torch.linalg.cholesky_ex(h)
    del h
    if int(info) != 0 or not torch.isfinite(chol).all():
        raise ValueError(f"the inputs' second moment is not positive definite after damping {damp}")
    return chol
