"""The cases on which our Triton cubins are checked through our loader and launch seam against the
reference executor, shared by tools/triton_gpu_check.py (one command of tools/gpu_session.sh) and
test_gpu_kernels.py (pytest on a GPU): the linears of tests/kernels (every bit combination, LQER,
bias, SmolLM2's and Llama-3-8B's layer shapes with N cut to a few tiles) at the split decode, small
and prefill tiles, and the online Hadamard. Each check returns how many outputs differ."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# the interpreter tests' case tables live in tests/kernels (not a package): reachable from here too
_KERNEL_TESTS = str(Path(__file__).resolve().parents[1] / "kernels")
if _KERNEL_TESTS not in sys.path:
    sys.path.append(_KERNEL_TESTS)

from helpers import activations, random_linear  # noqa: E402
from kernel_cases import LAYOUTS  # noqa: E402
from test_kernel_mixed_gemm import MODEL_SHAPES  # noqa: E402

from resq_export.kernels import launch  # noqa: E402


def linear_cases(quick: bool = False) -> list[tuple[str, object, int, int]]:
    """(name, layout, N, LQER rank): the tests/kernels layouts with rank 5, the model shapes without."""
    cases = [(n, lay, k, 5) for n, lay, k in LAYOUTS] + [(n, lay, k, 0) for n, lay, k in MODEL_SHAPES]
    return cases[:2] if quick else cases


def token_counts(quick: bool = False) -> tuple[int, ...]:
    """One M per GEMM tile of launch.gemm_tile (split decode, small, prefill), none a multiple of a block."""
    if quick:
        return (1, launch.DECODE_MAX_M + 3)
    return (1, launch.SPLIT_MAX_M + 3, launch.DECODE_MAX_M + 3)


def hadamard_sizes(quick: bool = False) -> tuple[int, ...]:
    return (96,) if quick else (96, 1536, 14336)


def check_linear(lay, n: int, rank: int, m: int, device: str) -> tuple[int, int]:
    """(outputs that differ from QuantLinear.gpu_reference, outputs) of launch.mixed_linear on `device`."""
    lin = random_linear(lay, n, rank=rank, bias=True, seed=3)
    prep = launch.Prepared.from_linear(lin, device=device)
    x = activations(m, lay.in_features, seed=m)
    y = launch.mixed_linear(x.to(device), prep).cpu()
    return int((y != lin.gpu_reference(x)).sum()), y.numel()


def check_hadamard(n: int, device: str) -> tuple[int, int]:
    """(outputs that differ from reference.hadamard_gpu_reference, outputs) of launch.hadamard."""
    from resq_export.algo.hadamard import hadamard_left_factor
    from resq_export.reference import hadamard_gpu_reference

    left, _ = hadamard_left_factor(n)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    y = launch.hadamard(x.to(device), left.float().to(device)).cpu()
    return int((y != hadamard_gpu_reference(x, left.float())).sum()), y.numel()
