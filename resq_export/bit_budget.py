"""Bits per value of a quantised model, counted from its layouts and its shape (issue 32): what a
setting costs, without quantising anything.

Three averages, each with scales and zero points included, and each per role:
- weights: bits stored per weight of the quantised linears (codes, a float32 scale per output row and
  group, LQER's 8-bit factors with their float32 row scales), as the artifact and the ONNX
  contract op hold them;
- activations: bits per linear-input value and token (codes, a float32 scale and a zero point per
  group and token), weighted by each linear's input width since every linear quantises its own
  input (q/k/v share one input, gate/up another);
- KV cache: bits per cached K/V value (codes, a float32 scale and a uint8 zero point per group), as
  stored (docs/ops.md).
An activation's zero point lies in [0, 2^b - 1] (b <= 8), so it is counted as 8 bits, as the KV
cache stores it; the reference and the GPU kernels carry it in an int32, and the GPU's code buffers
pad every group to 64 channels: `gpu` gives those counts (the TensorRT flavour's weights with their
padding and int32 per-group code sums, and the activation buffers act_quant writes). Biases, the
embedding and the head are not quantised and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import QuantConfig
from .errors import ConfigError
from .export.kernel_layout import PaddedLayout
from .layout import KVQuantizer, LinearLayout, kv_quantizer
from .models.config import ModelConfig

SCALE_BITS = 32  # every scale is float32: weights per (row, group), activations and KV per (token, group), LQER rows
ZERO_BITS = 8  # a zero point in [0, 2^b - 1], b <= 8: one byte (the KV cache's uint8)
INT32_BITS = 32  # the GPU's activation zero points, and the prepared weights' per-group code sums
PARTS = ("codes", "scales", "zero_points", "sums", "lqer")


@dataclass(frozen=True)
class Count:
    """Bits of `values` values, by what holds them."""

    values: int
    codes: int
    scales: int
    zero_points: int = 0
    sums: int = 0  # the prepared weights' int32 code sums per row and group (the zero-point correction)
    lqer: int = 0

    @property
    def total(self) -> int:
        return self.codes + self.scales + self.zero_points + self.sums + self.lqer

    def __add__(self, other: "Count") -> "Count":
        return Count(self.values + other.values, self.codes + other.codes, self.scales + other.scales,
                     self.zero_points + other.zero_points, self.sums + other.sums, self.lqer + other.lqer)

    def per_value(self) -> dict[str, float]:
        """Bits per value, in total and by part (parts that hold nothing left out)."""
        out = {"bits": self.total / self.values}
        for part in PARTS:
            if getattr(self, part):
                out[part] = getattr(self, part) / self.values
        return out


def out_features(model: ModelConfig, role: str) -> int:
    """Output rows of a role's (fused) linear."""
    return {"attn_qkv": model.qkv_out, "attn_o": model.hidden_size, "mlp_gate_up": 2 * model.intermediate_size,
            "mlp_down": model.hidden_size}[role]


def _lqer(rank: int, bits: int, k: int, n: int) -> int:
    """Aᵀ [rank, K] and Bᵀ [N, rank] at `bits`, each row with a float32 scale (docs/ops.md)."""
    return rank * k * bits + rank * SCALE_BITS + n * rank * bits + n * SCALE_BITS if rank else 0


def weight_count(layout: LinearLayout, n: int, rank: int = 0, lqer_bits: int = 8) -> Count:
    """One linear's stored weights as the artifact and ResQMixedLinear hold them."""
    k = layout.in_features
    codes = n * sum(size * bits for size, bits in zip(layout.group_sizes, layout.w_bits))
    return Count(n * k, codes, n * len(layout.group_sizes) * SCALE_BITS, lqer=_lqer(rank, lqer_bits, k, n))


def activation_count(layout: LinearLayout) -> Count | None:
    """One token of a linear's input: its codes, and a float32 scale and a zero point per group. None
    where the activations stay float."""
    if layout.float_activations:
        return None
    groups = len(layout.group_sizes)
    return Count(layout.in_features, sum(s * b for s, b in zip(layout.group_sizes, layout.a_bits)),
                 groups * SCALE_BITS, groups * ZERO_BITS)


def _padded(layout: LinearLayout) -> tuple[PaddedLayout, int, int] | None:
    """The kernels' layout and the two parts' activation bits, or None where the op cannot hold it."""
    try:
        parts = layout.op_parts()
    except ConfigError:
        return None
    return PaddedLayout(parts.k, parts.k_low, parts.low_groups, parts.high_groups), parts.a_bits_low, parts.a_bits_high


def prepared_weight_count(layout: LinearLayout, n: int, rank: int = 0, lqer_bits: int = 8) -> Count | None:
    """One linear's weights as the TensorRT flavour (ResQMixedLinearPrepared) holds them: every group
    padded to a multiple of 64 channels, an int32 code sum per row and group; LQER's Aᵀ padded alike
    with its own sums. None where the op cannot hold the layout."""
    padded = _padded(layout)
    if padded is None:
        return None
    p, groups = padded[0], len(layout.group_sizes)
    lqer = (_lqer(rank, lqer_bits, p.a8_pitch, n) + rank * groups * INT32_BITS) if rank else 0
    return Count(n * layout.in_features, n * (p.w_low_pitch + p.w_high_pitch) * 8, n * groups * SCALE_BITS,
                 sums=n * groups * INT32_BITS, lqer=lqer)


def gpu_activation_count(layout: LinearLayout) -> Count | None:
    """One token of a linear's input as the GPU's act_quant writes it: codes with every group padded
    to a multiple of 64 channels, a float32 scale and an int32 zero point per group."""
    padded = _padded(layout) if not layout.float_activations else None
    if padded is None:
        return None
    p, a_low, a_high = padded
    codes = p.low_groups * p.gwp_low * a_low + p.high_groups * p.gwp_high * a_high
    return Count(layout.in_features, codes, p.groups * SCALE_BITS, p.groups * INT32_BITS)


def kv_count(kvq: KVQuantizer) -> Count:
    """One cached row (one token, one KV head): codes, a float32 scale and a uint8 zero point per group."""
    groups = len(kvq.group_sizes)
    return Count(sum(kvq.group_sizes), kvq.row_bytes * 8, groups * SCALE_BITS, groups * ZERO_BITS)


def _summary(counts: dict[str, Count | None]) -> dict | None:
    """The average over roles (by value counts) and each role's; None where some role has no count."""
    if not counts or any(c is None for c in counts.values()):
        return None
    total = sum(counts.values(), Count(0, 0, 0))
    return {**_rounded(total.per_value()), "per_role": {r: _rounded(c.per_value()) for r, c in counts.items()}}


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in d.items()}


def bit_budget(model: ModelConfig, quant: QuantConfig, layouts: dict[str, LinearLayout]) -> dict:
    """Bits per weight, per activation value and per cached K/V value (module docstring), each
    averaged over the roles and per role; a section is None where that part stays float. Every layer
    has the same layouts, so one layer's counts are the model's averages."""
    rank, lqer_bits = quant.lqer_rank, quant.lqer_bits
    quantised = layouts if quant.quantizes_weights else {}
    kvq = kv_quantizer(model, quant) if quant.quantizes_weights else None
    gpu = {
        "weights": _summary({r: prepared_weight_count(lay, out_features(model, r), rank, lqer_bits)
                             for r, lay in quantised.items()}),
        "activations": _summary({r: gpu_activation_count(lay) for r, lay in quantised.items()}),
    }
    return {
        "weights": _summary({r: weight_count(lay, out_features(model, r), rank, lqer_bits)
                             for r, lay in quantised.items()}),
        "activations": _summary({r: activation_count(lay) for r, lay in quantised.items()}),
        "kv_cache": _rounded(kv_count(kvq).per_value()) if kvq is not None else None,
        "gpu": gpu,
    }
