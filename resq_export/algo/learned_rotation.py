"""Rotations learned inside one precision subspace (issue 32, `--rotation learned`).

A ResQ subspace (the 4-bit or the 8-bit part of a basis) is quantised per token in groups of
channels, each group with its own asymmetric range (algo/quant.py). Any rotation inside the subspace
is exact before quantisation, so it can be chosen freely; ResQ takes a random one. Here it is
learned, starting from that random one, R = R0 · cayley(A) with A skew-symmetric: the Cayley map
(I - A)^-1 (I + A) of a skew matrix is orthogonal for every A, so no step can leave the orthogonal
group and the final matrix, formed in float64, is orthogonal to float64 rounding.

The objective is the expected squared rounding error of the group quantiser under the usual
uniform-noise model: a group of width w whose range (forced to include 0) is hi - lo, quantised
to 2^b - 1 steps, carries w · ((hi - lo) / (2^b - 1))^2 / 12 of squared error per token. It is a
function of the per-group extremes only (differentiable almost everywhere), so no straight-through
rounding is needed, and it is divided by the samples' energy (rotation-invariant) to read as a
relative error. Layer-wise and cheap: one small matrix per subspace, on a few thousand collected
activation rows, which fits a 2-core CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .quant import dequantize_groups, group_bounds, quantize_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnSettings:
    steps: int = 150
    lr: float = 2e-3  # Adam on the generator; small steps keep the Cayley map far from its singular set
    batch: int = 1024  # activation rows per step (per problem)
    check_every: int = 25  # steps between evaluations on the held-out rows
    held_out_rows: int = 8192  # at most this many held-out rows are evaluated


def cayley(generator: torch.Tensor) -> torch.Tensor:
    """(I - A)^-1 (I + A) for A = G - G^T: orthogonal for every square G (identity at G = 0); batched
    over leading axes."""
    a = generator - generator.transpose(-1, -2)
    eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
    return torch.linalg.solve(eye - a, eye + a)


def range_error(y: torch.Tensor, group_sizes: Sequence[int], bits: int) -> torch.Tensor:
    """Expected relative squared error of per-token asymmetric group quantisation of y [..., N, d]
    (uniform-noise model, the range including 0), divided by the energy of y: one value per
    leading index."""
    qmax = 2 ** bits - 1
    total = y.new_zeros(y.shape[:-2])
    for a, b in group_bounds(group_sizes):
        part = y[..., a:b]
        spread = part.amax(-1).clamp(min=0) - part.amin(-1).clamp(max=0)
        total = total + (b - a) * (spread ** 2).sum(-1)
    return total / (12 * qmax ** 2) / y.pow(2).sum((-1, -2)).clamp(min=1e-30)


def quantised_error(y: torch.Tensor, group_sizes: Sequence[int], bits: int) -> float:
    """The real relative squared error of quantising y [N, d] (the contract's rounding), for reports."""
    sizes = list(group_sizes)
    q, scale, zero = quantize_groups(y.float(), sizes, [bits] * len(sizes))
    err = dequantize_groups(q, scale, zero, sizes) - y.float()
    return float(err.pow(2).sum() / y.float().pow(2).sum().clamp(min=1e-30))


def held_out_split(n_rows: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (fit, held out): the rows come in blocks (one observed batch of one layer each),
    every fourth block is held out, so the check is on other windows than the fit."""
    blocks = torch.arange(n_rows) // max(block, 1)
    held = blocks % 4 == 3
    if held.all() or not held.any():  # too few blocks to split: check on the fitted rows
        every = torch.arange(n_rows)
        return every, every
    return torch.nonzero(~held).squeeze(1), torch.nonzero(held).squeeze(1)


def learn_rotation(x: torch.Tensor, start: torch.Tensor, group_sizes: Sequence[int], bits: int, seed: int,
                   block: int, settings: LearnSettings = LearnSettings()) -> tuple[torch.Tensor, dict]:
    """An orthogonal R (float64, n x n) such that x @ R quantises with less error than x @ start.

    x [N, n]: activation rows already projected onto the subspace, in blocks of `block` rows (one
    observed batch each); start: the rotation the search begins at. Three quarters of the blocks
    are fitted (minibatches drawn with `seed`: the result is a function of the inputs), the rest
    choose among the start and the rotations reached every check_every steps (early stopping: with
    a few rows per parameter the fit alone would overfit). Returns (R, report: the objective and the
    real quantisation error on the held-out rows, at the start and at R)."""
    rot, reports = learn_rotations(x[None], start[None], group_sizes, bits, seed, block, settings)
    return rot[0], reports[0]


def learn_rotations(x: torch.Tensor, start: torch.Tensor, group_sizes: Sequence[int], bits: int, seed: int,
                    block: int, settings: LearnSettings = LearnSettings()) -> tuple[torch.Tensor, list[dict]]:
    """learn_rotation for P independent subspaces of one width at once: x [P, N, n], start [P, n, n]
    -> (R [P, n, n], P reports). The objective is their sum, whose gradient with respect to each
    problem's generator is that problem's own, and Adam acts element by element, so each result is
    what a search of its own would give with the same minibatch rows (one batched search instead
    of hundreds of small ones: U_B and U_C have one subspace pair per layer and head)."""
    # The quantiser's passes run in inference mode, whose tensors autograd cannot record: the search
    # works on plain copies of its inputs.
    with torch.inference_mode(False), torch.enable_grad():
        return _learn(x.clone(), start.clone(), group_sizes, bits, seed, block, settings)


def _learn(x: torch.Tensor, start: torch.Tensor, group_sizes: Sequence[int], bits: int, seed: int, block: int,
           settings: LearnSettings) -> tuple[torch.Tensor, list[dict]]:
    problems, n = start.shape[0], start.shape[-1]
    start = start.to(torch.float64)
    if n < 2 or x.shape[1] == 0:
        return start, [{} for _ in range(problems)]
    fit_rows, held_rows = held_out_split(x.shape[1], block)
    fit = x[:, fit_rows].to(torch.float32)
    held = x[:, held_rows[:settings.held_out_rows]].to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    g = torch.zeros(problems, n, n, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([g], lr=settings.lr)
    r0 = start.to(torch.float32)

    def held_objective(rot64: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return range_error(held @ rot64.to(torch.float32), group_sizes, bits)

    best_g, best = g.detach().clone(), held_objective(start)
    first = best.clone()
    for step in range(settings.steps):
        rows = torch.randint(0, fit.shape[1], (min(settings.batch, fit.shape[1]),), generator=gen)
        loss = range_error(fit[:, rows] @ (r0 @ cayley(g)), group_sizes, bits).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % settings.check_every == 0 or step + 1 == settings.steps:
            value = held_objective(start @ cayley(g.detach().to(torch.float64)))
            better = value < best
            best = torch.where(better, value, best)
            best_g[better] = g.detach()[better]
    rot = start @ cayley(best_g.to(torch.float64))
    reports = [{"objective_start": float(first[p]), "objective": float(best[p]),
                "quantised_error_start": quantised_error(held[p] @ r0[p], group_sizes, bits),
                "quantised_error": quantised_error(held[p] @ rot[p].to(torch.float32), group_sizes, bits)}
               for p in range(problems)]
    log.debug("learned %d rotation(s) n=%d bits=%d: %s", problems, n, bits, reports)
    return rot, reports
