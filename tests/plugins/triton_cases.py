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


def kv_layouts(quick: bool = False) -> list:
    """(name, KVAttrs): the interpreter tests' KV layouts (tests/kernels/kv_cases.py); quick: the tiny
    models' only (the interpreter's speed)."""
    from kv_cases import LAYOUTS as KV_LAYOUTS

    return KV_LAYOUTS[:1] if quick else KV_LAYOUTS


def kv_calls() -> list[tuple[list[int], int]]:
    """(past lengths, new rows) on a capacity of KV_CAPACITY: the first token, a batch with the last
    row and a length inside a tile, a prefill of 37 rows after 0 and 5 cached ones."""
    return [([0], 1), ([KV_CAPACITY - 1, 45], 1), ([0, 5], 37)]


KV_CAPACITY = 200


def check_kv(a, lengths: list[int], seq: int, device: str) -> tuple[int, float, float]:
    """(cache entries that differ from the reference's, max |Y - reference|, the tolerance) of
    kv_launch.kv_attention on `device` (U_C included)."""
    from kv_cases import cache, make_call, op_atol, reference
    from test_kernel_kv_decode import ATOL

    from resq_export.kernels.kv_launch import kv_attention

    call = make_call(a, lengths, seq, seed=seq + len(lengths))
    k_cache, v_cache = cache(a, len(lengths), KV_CAPACITY, 1), cache(a, len(lengths), KV_CAPACITY, 2)
    k_ref, v_ref, y_ref = reference(call, k_cache, v_cache)
    k_dev, v_dev = [t.to(device) for t in k_cache], [t.to(device) for t in v_cache]
    y = kv_attention(a, call.q.to(device), call.k.to(device), call.v.to(device), k_dev, v_dev,
                     call.past_length.to(device), call.key_rotation.to(device)).cpu()
    differ = sum(int((got.cpu() != want).sum()) for got, want in zip(k_dev + v_dev, k_ref + v_ref))
    return differ, float((y - y_ref).abs().max()), op_atol(call, k_ref, v_ref, ATOL[torch.float32])
