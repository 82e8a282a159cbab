"""NaN/Inf checks that stay within a small memory budget."""

from __future__ import annotations

import torch

from ..errors import NumericalError


def all_finite(t: torch.Tensor, block: int = 1 << 20) -> bool:
    """No NaN/Inf, checked by pieces: torch.isfinite of a whole tensor makes temporaries several times
    its size (2 GB for an 8B model's 14336^2 float64 Hessian)."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[a:a + block]).all()) for a in range(0, flat.numel(), block))


def check_finite(x: torch.Tensor, where: str) -> None:
    if not all_finite(x):
        raise NumericalError(f"non-finite values (NaN/Inf) in {where}")
