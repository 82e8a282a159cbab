"""LQER / L²QER (Zhang et al. 2024): a low-rank correction of the weight quantisation error.

W ~ Q(W) + (A B)^T with A [in, k], B [k, out]: y = x Q(W)^T + (x A) B.
"""

from __future__ import annotations

import torch


def lqer_factors(
    weight: torch.Tensor, weight_q: torch.Tensor, rank: int, act_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SVD of the (activation-scaled) error E^T = (W - Q(W))^T. With act_scale (L²QER) the rows of
    E^T (input channels) are weighted by s before the SVD and un-weighted in A afterwards."""
    err_t = (weight.to(torch.float64) - weight_q.to(torch.float64)).T  # [in, out]
    if act_scale is None:
        s = torch.ones(err_t.shape[0], dtype=torch.float64)
    else:
        s = act_scale.to(torch.float64).clamp(min=1e-4)
        s = s / torch.sqrt(s.min() * s.max())
    u, sv, vh = torch.linalg.svd(s[:, None] * err_t, full_matrices=False)
    rank = min(rank, sv.numel())
    a = u[:, :rank] / s[:, None]
    b = sv[:rank, None] * vh[:rank]
    return a, b
