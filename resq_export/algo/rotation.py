"""Orthogonal bases: PCA of a second moment, Haar-random rotations, the ResQ block rotation."""

from __future__ import annotations

import torch


def haar_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed), float64."""
    if n == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    return (q * torch.sign(torch.diagonal(r))[None]).contiguous()


def pca_basis(sigma: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors of sigma + damp * mean(diag) * I, eigenvalues ascending (the last columns carry
    the most variance). Returns (eigenvalues, basis) in float64."""
    sigma = sigma.to(torch.float64)
    sigma = sigma + damp * torch.diagonal(sigma).mean() * torch.eye(sigma.shape[0], dtype=torch.float64)
    return torch.linalg.eigh(sigma)


def subspace_rotations(dim: int, n_high: int, generator: torch.Generator) -> torch.Tensor:
    """diag(R_low, R_high): independent Haar rotations of the low (dim - n_high) and high subspaces."""
    return block_rotations((dim - n_high, n_high), generator)


def block_rotations(sizes: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """diag(R_1, R_2, ...): an independent Haar rotation per block, drawn in order. An empty block
    draws nothing, so (a, 0, b) gives exactly what (a, b) gives (the same generator state too)."""
    blocks = [haar_orthogonal(n, generator) for n in sizes if n]
    if not blocks:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.block_diag(*blocks) if len(blocks) > 1 else blocks[0]
