"""The CUDA GEMM's layout of a quantised linear's weights (plugins/common/resq_layout.h), made at
export time for the TensorRT flavour (op ResQMixedLinearPrepared, docs/ops.md).

The GEMM walks K in 64-channel tiles that must not straddle a group, so every group is zero-padded
to a multiple of 64 channels, and the zero-point correction needs each group's sum of weight codes.
Doing this here rather than in the plugin means the engine's constant weights are the kernel's
operands: nothing is allocated or prepared at inference, one copy serves every execution context,
and the first call can be captured into a CUDA graph. The C++ CPU reference
(`resq_cpu_prepare_weights`, `resq_cpu_prepare_lqer_a`) is the oracle of this module in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..algo.quant import unpack_int4

KTILE = 64  # RESQ_KTILE


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


@dataclass(frozen=True)
class PaddedLayout:
    """resq_linear_layout() for the weight side: group widths before and after padding."""

    k: int
    k_low: int
    low_groups: int
    high_groups: int

    def __post_init__(self):
        kh = self.k - self.k_low
        if (self.k <= 0 or not 0 <= self.k_low <= self.k or (self.k_low > 0) != (self.low_groups > 0)
                or (kh > 0) != (self.high_groups > 0) or (self.low_groups and self.k_low % (2 * self.low_groups))
                or (self.high_groups and kh % self.high_groups)):
            raise ValueError(f"no kernel layout for K={self.k}, K_low={self.k_low}, {self.low_groups} low groups "
                             f"(even widths), {self.high_groups} high groups")

    @property
    def groups(self) -> int:
        return self.low_groups + self.high_groups

    @property
    def gw_low(self) -> int:
        return self.k_low // self.low_groups if self.low_groups else 0

    @property
    def gw_high(self) -> int:
        return (self.k - self.k_low) // self.high_groups if self.high_groups else 0

    @property
    def gwp_low(self) -> int:
        return _round_up(self.gw_low, KTILE)

    @property
    def gwp_high(self) -> int:
        return _round_up(self.gw_high, KTILE)

    @property
    def w_low_pitch(self) -> int:
        return self.low_groups * self.gwp_low // 2

    @property
    def w_high_pitch(self) -> int:
        return self.high_groups * self.gwp_high

    @property
    def a8_pitch(self) -> int:
        return self.low_groups * self.gwp_low + self.high_groups * self.gwp_high


def _pad_groups(rows: np.ndarray, groups: int, width: int, padded: int) -> np.ndarray:
    """[R, groups * width] -> [R, groups * padded], zeros after each group."""
    out = np.zeros((rows.shape[0], groups, padded), rows.dtype)
    out[:, :, :width] = rows.reshape(rows.shape[0], groups, width)
    return out.reshape(rows.shape[0], groups * padded)


def _group_sums(codes: np.ndarray, groups: int) -> np.ndarray:
    return codes.reshape(codes.shape[0], groups, -1).sum(axis=2, dtype=np.int64).astype(np.int32)


def prepare_weights(lay: PaddedLayout, qweight_low: np.ndarray | None, qweight_high: np.ndarray | None):
    """Contract weights (qweight_low int8 [N, K_low/2] packed, qweight_high int8 [N, K-K_low]) ->
    (weight_low int8 [N, w_low_pitch], weight_high int8 [N, w_high_pitch] or None, weight_sums int32 [N, G])."""
    n = (qweight_low if qweight_low is not None else qweight_high).shape[0]
    sums, w_low, w_high = [], np.zeros((n, 0), np.int8), None
    if lay.low_groups:
        _check(qweight_low, (n, lay.k_low // 2), "qweight_low")
        # whole bytes: a group of even width is whole bytes, and padding byte 0 is two zero codes
        w_low = _pad_groups(qweight_low.astype(np.int8, copy=False), lay.low_groups, lay.gw_low // 2, lay.gwp_low // 2)
        sums.append(_group_sums(unpack_int4(torch.from_numpy(qweight_low), signed=True).numpy(), lay.low_groups))
    if lay.high_groups:
        _check(qweight_high, (n, lay.k - lay.k_low), "qweight_high")
        w_high = _pad_groups(qweight_high.astype(np.int8, copy=False), lay.high_groups, lay.gw_high, lay.gwp_high)
        sums.append(_group_sums(qweight_high, lay.high_groups))
    return w_low, w_high, np.concatenate(sums, axis=1)


def prepare_lqer_a(lay: PaddedLayout, lqer_a: np.ndarray):
    """LQER's A^T int8 [R, K] -> (all-8-bit padded [R, a8_pitch], sums [R, G])."""
    _check(lqer_a, (lqer_a.shape[0], lay.k), "lqer_a")
    a = lqer_a.astype(np.int8, copy=False)
    low, high = a[:, : lay.k_low], a[:, lay.k_low:]
    parts, sums = [], []
    if lay.low_groups:
        parts.append(_pad_groups(low, lay.low_groups, lay.gw_low, lay.gwp_low))
        sums.append(_group_sums(low, lay.low_groups))
    if lay.high_groups:
        parts.append(_pad_groups(high, lay.high_groups, lay.gw_high, lay.gwp_high))
        sums.append(_group_sums(high, lay.high_groups))
    return np.concatenate(parts, axis=1), np.concatenate(sums, axis=1)


def _check(a: np.ndarray | None, shape: tuple[int, int], name: str) -> None:
    if a is None or tuple(a.shape) != shape or a.dtype != np.int8:
        got = None if a is None else f"{a.dtype} {tuple(a.shape)}"
        raise ValueError(f"{name}: expected int8 {shape}, got {got}")
