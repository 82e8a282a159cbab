"""The reference executor's quantised linear: the exact integer semantics every exported op and
kernel must reproduce (docs/ops.md). Everything else of the executor is decoder.py with these
linears and a quantising KV cache.

y[t, o] = sum_g ((acc_g[t, o] - zx[t, g] * wsum_g[o]) * sx[t, g]) * sw[o, g]      (+ LQER) (+ bias)
acc_g = sum_{c in g} qx[t, c] * qw[o, c]  (exact integers, int32 range), wsum_g[o] = sum_{c in g} qw[o, c].
The float epilogue is a float island (decoder.py): float64, rounded to float32 once at the end, so
the order in which a runtime sums the groups cannot change the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .algo.hadamard import fwht
from .algo.quant import (dequantize_weight, exact_float_dtype, group_bounds, int_matmul, pack_int4, quantize_groups,
                         quantize_sym_per_token, unpack_int4)
from .layout import LinearLayout

LQER_BITS = 8

# The GPU epilogue (docs/ops.md "ResQMixedLinear on the GPU"): float32, groups summed in runs of this
# many consecutive groups of one part, the runs then summed in order. A contract constant, not a
# tuning knob: a decode kernel splits K at these boundaries, so the order of every float addition is
# fixed by the layout alone, whatever the GPU or the tile.
GPU_CHUNK_GROUPS = 8


def group_sums(q: torch.Tensor, group_sizes: tuple[int, ...]) -> torch.Tensor:
    """[out, K] integers -> [out, G] int64 sums per input group."""
    return torch.stack([q[:, a:b].sum(-1, dtype=torch.int64) for a, b in group_bounds(group_sizes)], -1)


class GroupedIntWeights:
    """Integer weight codes prepared for the grouped GEMM: per group, the codes transposed in a float
    dtype that holds the whole accumulation exactly, and their sums for the zero-point correction."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, layout: LinearLayout):
        self.layout = layout
        self.scale = scale.to(torch.float32).double()  # [out, G]
        sums = group_sums(codes, layout.group_sizes)
        self.groups = []
        for g, (a, b) in enumerate(group_bounds(layout.group_sizes)):
            dtype = exact_float_dtype(b - a, 2 ** layout.a_bits[g] - 1, 2 ** (layout.w_bits[g] - 1))
            self.groups.append((a, b, codes[:, a:b].T.to(dtype).contiguous(), sums[:, g].to(dtype)))

    def matmul(self, qx: torch.Tensor, sx: torch.Tensor, zx: torch.Tensor) -> torch.Tensor:
        """y[t, o] = sum_g (acc_g - zx * wsum_g) * sx[t, g] * scale[o, g], in float64."""
        y = None
        qx = qx.to(torch.float32)
        sx = sx.double()
        for g, (a, b, w_t, wsum) in enumerate(self.groups):
            acc = qx[:, a:b].to(w_t.dtype) @ w_t - zx[:, g:g + 1].to(w_t.dtype) * wsum
            part = (acc.double() * sx[:, g:g + 1]) * self.scale[None, :, g]
            y = part if y is None else y + part
        return y

    def matmul_gpu(self, qx: torch.Tensor, sx: torch.Tensor, zx: torch.Tensor, runs: list[list[int]]) -> torch.Tensor:
        """The GPU kernels' float32 epilogue, exactly: part_g = (float32(acc_g - zx * wsum_g) * sx) *
        wscale, each product rounded to float32; within a run of GPU_CHUNK_GROUPS groups of one weight
        part, chunk = ((0 + part_a) + part_a+1) + ...; y = ((0 + chunk_0) + chunk_1) + ... . Every
        operation one float32 rounding (no fused multiply-add). runs: gpu_chunks of the linear's layout."""
        sx = sx.to(torch.float32)
        scale = self.scale.float()
        y = torch.zeros(qx.shape[0], scale.shape[0], dtype=torch.float32)
        for run in runs:
            chunk = torch.zeros_like(y)
            for g in run:
                a, b, w_t, wsum = self.groups[g]
                acc = qx[:, a:b].to(w_t.dtype) @ w_t - zx[:, g:g + 1].to(w_t.dtype) * wsum  # exact integers
                chunk = chunk + (acc.float() * sx[:, g:g + 1]) * scale[None, :, g]
            y = y + chunk
        return y


def gpu_chunks(layout: LinearLayout) -> list[list[int]]:
    """The runs of the GPU epilogue: the 4-bit-weight groups in runs of GPU_CHUNK_GROUPS, then the
    8-bit-weight groups likewise (a run never spans the two parts; LQER's A follows its linear's runs)."""
    runs = []
    for part in ([g for g, w in enumerate(layout.w_bits) if w == 4], [g for g, w in enumerate(layout.w_bits) if w != 4]):
        runs += [part[i:i + GPU_CHUNK_GROUPS] for i in range(0, len(part), GPU_CHUNK_GROUPS)]
    return runs


@dataclass
class LqerBranch:
    """(x A) B with A^T [rank, in] and B^T [out, rank] in symmetric 8-bit, per-row scales."""

    a_q: torch.Tensor  # int32 [rank, in]
    a_scale: torch.Tensor  # float32 [rank]
    b_q: torch.Tensor  # int32 [out, rank]
    b_scale: torch.Tensor  # float32 [out]


@dataclass
class QuantLinear:
    """Stored as the artifact and the ONNX contract store it (docs/ops.md), so that writing and
    exporting pass the bytes through; the codes are unpacked only to be computed with."""

    layout: LinearLayout
    qweight_low: torch.Tensor | None  # int8 [out, low_channels / 2]: the 4-bit codes, two per byte
    qweight_high: torch.Tensor | None  # int8 [out, in - low_channels]: the 8-bit codes
    wscale: torch.Tensor  # float32 [out, G]
    bias: torch.Tensor | None = None
    lqer: LqerBranch | None = None

    @classmethod
    def from_codes(cls, layout: LinearLayout, codes: torch.Tensor, wscale: torch.Tensor,
                   bias: torch.Tensor | None = None, lqer: LqerBranch | None = None) -> QuantLinear:
        """From integer codes [out, in] (the quantiser's)."""
        low = layout.low_channels
        return cls(layout, pack_int4(codes[:, :low]) if low else None,
                   codes[:, low:].to(torch.int8) if low < codes.shape[1] else None, wscale, bias, lqer)

    @property
    def qweight(self) -> torch.Tensor:
        """int8 codes [out, in], unpacked on each call (not kept: the quantiser only stores linears)."""
        parts = [unpack_int4(self.qweight_low, signed=True).to(torch.int8)] if self.qweight_low is not None else []
        if self.qweight_high is not None:
            parts.append(self.qweight_high)
        return torch.cat(parts, 1)

    # The GEMM copies (4-8 bytes per weight) are made on the first call only: the quantiser packs a
    # QuantLinear and takes its effective float weight without ever running it.
    @cached_property
    def _weights(self) -> GroupedIntWeights:
        return GroupedIntWeights(self.qweight, self.wscale, self.layout)

    @cached_property
    def _lqer_a(self) -> GroupedIntWeights:
        # x A: A's codes act as an 8-bit weight with one scale per rank component
        n_groups = len(self.layout.group_sizes)
        a_layout = LinearLayout(self.layout.group_sizes, (LQER_BITS,) * n_groups, self.layout.a_bits)
        a_scale = self.lqer.a_scale[:, None].expand(-1, n_groups)
        return GroupedIntWeights(self.lqer.a_q, a_scale, a_layout)

    @property
    def in_features(self) -> int:
        return self.layout.in_features

    @property
    def out_features(self) -> int:
        return self.wscale.shape[0]

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_weight(self.qweight, self.wscale, self.layout.group_sizes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        if self.layout.float_activations:
            x = x.double()
            y = x @ self.dequantized_weight().double().T
            if self.lqer is not None:
                a = self.lqer.a_q.to(torch.float32) * self.lqer.a_scale[:, None]
                b = self.lqer.b_q.to(torch.float32) * self.lqer.b_scale[:, None]
                y = y + (x @ a.double().T) @ b.double().T
        else:
            qx, sx, zx = quantize_groups(x, self.layout.group_sizes, self.layout.a_bits)
            y = self._weights.matmul(qx, sx, zx)
            if self.lqer is not None:
                y = y + self._lqer_int(qx, sx, zx)
        if self.bias is not None:
            y = y + self.bias.double()
        return y.float().reshape(*lead, -1)

    def gpu_reference(self, x: torch.Tensor) -> torch.Tensor:
        """What the GPU kernels compute (float32 out, bit for bit): the integer parts of __call__ with
        the float32 epilogue of GroupedIntWeights.matmul_gpu; LQER's xa by the same epilogue, its
        8-bit quantiser as in __call__, then y = y + float32(float32(acc_b) * s_a) * lqer_b_scale,
        then y = y + bias (zeros where there is none). Quantised activations only."""
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        qx, sx, zx = quantize_groups(x, self.layout.group_sizes, self.layout.a_bits)
        runs = gpu_chunks(self.layout)
        y = self._weights.matmul_gpu(qx, sx, zx, runs)
        if self.lqer is not None:
            acc, sa = self._lqer_b(self._lqer_a.matmul_gpu(qx, sx, zx, runs))
            y = y + (acc.float() * sa) * self.lqer.b_scale.float()[None]
        bias = self.bias.float() if self.bias is not None else torch.zeros(y.shape[1])
        return (y + bias).reshape(*lead, -1)

    def _lqer_int(self, qx: torch.Tensor, sx: torch.Tensor, zx: torch.Tensor) -> torch.Tensor:
        """x A from the already-quantised x (A as an 8-bit 'weight', rounded to float32), re-quantised to
        8-bit per token, times B; float64."""
        acc, sa = self._lqer_b(self._lqer_a.matmul(qx, sx, zx).float())
        return (acc.double() * sa.double()) * self.lqer.b_scale.double()[None]

    def _lqer_b(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xa (float32) quantised to 8 bits per token, times B's codes: the exact integer product and
        the per-token scale, shared by the float64 (__call__) and the GPU (float32) epilogues."""
        qa, sa = quantize_sym_per_token(xa, LQER_BITS)
        return int_matmul(qa, self.lqer.b_q, 2 ** (LQER_BITS - 1), 2 ** (LQER_BITS - 1)), sa


def hadamard_gpu_reference(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """ResQHadamard as the GPU kernels compute it, bit for bit: x @ kron(left, S / sqrt(b)) in float32,
    the Walsh-Hadamard butterflies of fwht (the same additions in the same order, then the division by
    float32(sqrt(b))), then y_i = ((0 + left[0, i] * z_0) + left[1, i] * z_1) + ... over the a blocks z_p
    of b channels, each product and sum rounded to float32 (no fused multiply-add)."""
    a = left.shape[0]
    n = x.shape[-1]
    z = fwht(x.to(torch.float32).reshape(-1, a, n // a))
    if a == 1:
        return z.reshape(x.shape)
    left = left.to(torch.float32)
    y = torch.zeros_like(z)
    for p in range(a):
        y = y + left[p][None, :, None] * z[:, p:p + 1, :]
    return y.reshape(x.shape)
