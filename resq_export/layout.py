"""Where each quantised linear's precision groups lie, and the KV-cache groups, for a model and settings.

A linear's input channels are split into contiguous groups; each group has one weight scale per
output channel and one activation scale/zero point per token. All 4-bit weight groups come first,
then the 8-bit ones (the high-variance subspace is the last channels, see transforms/rotate.py).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from .algo.quant import dequantize_groups, group_bounds, pack_int4, quantize_groups, unpack_int4
from .config import AUTO_GROUP_SIZE, QuantConfig
from .errors import ConfigError
from .models.config import ModelConfig

logger = logging.getLogger(__name__)

AUTO_GROUP_MIN, AUTO_GROUP_MAX = 32, 128


@dataclass(frozen=True)
class OpParts:
    """A linear's shape as the op and the kernels see it (resq_layout.h's ResQLinearShape)."""

    k: int
    k_low: int
    low_groups: int
    high_groups: int
    a_bits_low: int
    a_bits_high: int


@dataclass(frozen=True)
class LinearLayout:
    group_sizes: tuple[int, ...]
    w_bits: tuple[int, ...]
    a_bits: tuple[int, ...]  # all 16 when activations stay float

    def __post_init__(self) -> None:
        if not (len(self.group_sizes) == len(self.w_bits) == len(self.a_bits)):
            raise ConfigError("layout lists differ in length")
        seen_8 = False
        for bits in self.w_bits:
            seen_8 |= bits == 8
            if seen_8 and bits == 4:
                raise ConfigError("4-bit weight groups must precede 8-bit ones")
        if self.low_channels % 2:
            raise ConfigError(f"{self.low_channels} 4-bit input channels cannot be packed two per byte")

    @property
    def in_features(self) -> int:
        return sum(self.group_sizes)

    @property
    def low_channels(self) -> int:
        """Input channels with 4-bit weights (a prefix of the input)."""
        return sum(s for s, b in zip(self.group_sizes, self.w_bits) if b == 4)

    @property
    def float_activations(self) -> bool:
        return all(b == 16 for b in self.a_bits)

    def op_parts(self, name: str = "this linear") -> "OpParts":
        """The layout as ResQMixedLinear and the kernels hold it: a 4-bit-weight part then an 8-bit
        one, each of equal groups with one activation width. ConfigError where it does not fit."""
        low = [(s, a) for s, w, a in zip(self.group_sizes, self.w_bits, self.a_bits) if w == 4]
        high = [(s, a) for s, w, a in zip(self.group_sizes, self.w_bits, self.a_bits) if w != 4]
        for part in (low, high):
            if len({s for s, _ in part}) > 1 or len({a for _, a in part}) > 1:
                raise ConfigError(
                    f"{name}: ResQMixedLinear holds a 4-bit-weight part and an 8-bit one, each of equal groups with "
                    f"one activation width; this layout (group sizes {list(self.group_sizes)}, weight bits "
                    f"{list(self.w_bits)}, activation bits {list(self.a_bits)}) does not fit. 8-bit weights export "
                    "without a high-precision part (--high-fraction 0, or --method rtn/quarot/lqer)")
        return OpParts(self.in_features, self.low_channels, len(low), len(high), low[0][1] if low else 4,
                       high[0][1] if high else 8)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinearLayout":
        return cls(**{k: tuple(int(x) for x in v) for k, v in d.items()})


def high_channels(dim: int, cfg: QuantConfig) -> int:
    return int(dim * cfg.high_fraction)


def gate_up_high_channels(dim: int, cfg: QuantConfig) -> int:
    """mlp_gate_up's 8-bit input channels (the last ones): at least attn_qkv's (`--gate-up-high-fraction`)."""
    return max(int(dim * cfg.gate_up_fraction), high_channels(dim, cfg))


def residual_blocks(dim: int, cfg: QuantConfig) -> tuple[int, int, int]:
    """U_A's rotation blocks (low, mid, high): channels 4-bit in both residual-stream linears, then
    those 8-bit in mlp_gate_up's input alone, then those 8-bit in both. mid is 0 by default."""
    r, r_gate = high_channels(dim, cfg), gate_up_high_channels(dim, cfg)
    return dim - r_gate, r_gate - r, r


def _split(size: int, group_size: int, what: str = "", flag: str = "--group-size") -> list[int]:
    """`size` channels in groups of `group_size` (a part narrower than a group is one group). what:
    the input, for the message (e.g. "mlp_down's input in every layer")."""
    if group_size <= 0 or size <= group_size:
        return [size] if size else []
    if size % group_size:
        fits = [w for w in range(2, min(size, 256) + 1, 2) if size % w == 0 and w != size]
        hint = f"{', '.join(map(str, fits[-4:]))} divide it" if fits else "no even width divides it"
        raise ConfigError(f"{what + ': ' if what else ''}{size} channels do not split into groups of {group_size}: "
                          f"choose another {flag} ({hint}; 0 keeps one group per precision part)")
    return [group_size] * (size // group_size)


def _part_layout(parts: list[tuple[list[int], bool]], cfg: QuantConfig) -> LinearLayout:
    sizes, w_bits, a_bits = [], [], []
    for groups, high in parts:
        for g in groups:
            sizes.append(g)
            w_bits.append(cfg.high_bits if high else cfg.w_bits)
            a_bits.append(16 if cfg.a_bits == 16 else (max(cfg.high_bits, cfg.a_bits) if high else cfg.a_bits))
    return LinearLayout(tuple(sizes), tuple(w_bits), tuple(a_bits))


def auto_group_size(parts: tuple[int, ...]) -> int:
    """The group width `--group-size auto` gives channels split into these parts: the widest that
    divides every part, up to 128, preferring multiples of 64 (the kernels' K tile: no padding) and at
    least 32 (a float32 scale per group then costs at most 1 bit per weight); 0 (one group per part)
    where none does. Llama-3-8B's 3584 + 512 -> 128, SmolLM2's 504 + 72 -> 72."""
    fits = [w for w in range(AUTO_GROUP_MIN, AUTO_GROUP_MAX + 1, 2) if all(p % w == 0 for p in parts if p)]
    tiled = [w for w in fits if w % 64 == 0]
    return max(tiled or fits or [0])


def _group_size(parts: tuple[int, ...], cfg: QuantConfig) -> int:
    """--group-size for a linear whose input splits into these parts (auto resolved for them)."""
    return auto_group_size(parts) if cfg.group_size == AUTO_GROUP_SIZE else cfg.group_size


def _down_group_size(model: ModelConfig, cfg: QuantConfig, warn: bool = True) -> int:
    size, other = cfg.down_group_size, _group_size((model.intermediate_size,), cfg)
    if size and model.intermediate_size > size and model.intermediate_size % size:
        if warn:
                logger.warning("the down projection's %d input channels do not split into groups of %d: grouping "
                           "them by --group-size (%s)", model.intermediate_size, size,
                           f"groups of {other}" if 0 < other < model.intermediate_size else "one group")
        return other
    return size or other


def role_layouts(model: ModelConfig, cfg: QuantConfig, warn: bool = True) -> dict[str, LinearLayout]:
    """Every quantised role's layout, and the KV quantiser checked too; settings that do not fit the
    model are refused naming the flag to change. warn: say where the down projection's grouping
    falls back (once per run: the stage's first call; later calls pass False)."""
    _check_group_sizes(model, cfg)
    try:
        layouts = _role_layouts(model, cfg, warn)
        kv_quantizer(model, cfg)
    except ConfigError as e:
        same = replace(cfg, gate_up_high_fraction=cfg.high_fraction)
        if cfg.gate_up_fraction != cfg.high_fraction and _fits(model, same):
            raise ConfigError(_gate_up_fraction_message(model, cfg, e)) from None
        if cfg.high_fraction and _fits(model, _with_high_fraction(cfg, 0.0)):
            raise ConfigError(_high_fraction_message(model, cfg, e)) from None
        raise
    return layouts


def _with_high_fraction(cfg: QuantConfig, fraction: float) -> QuantConfig:
    """cfg at another --high-fraction; mlp_gate_up's share follows it where it was the same."""
    gate_up = fraction if cfg.gate_up_fraction == cfg.high_fraction else cfg.gate_up_high_fraction
    return replace(cfg, high_fraction=fraction, gate_up_high_fraction=gate_up)


def _fits(model: ModelConfig, cfg: QuantConfig) -> bool:
    try:
        _role_layouts(model, cfg, warn=False)
        kv_quantizer(model, cfg)
    except ConfigError:
        return False
    return True


def _high_fraction_message(model: ModelConfig, cfg: QuantConfig, cause: ConfigError) -> str:
    """--high-fraction is what breaks the layout: say so, with values that fit this model."""
    top = 1.0 if cfg.gate_up_fraction == cfg.high_fraction else cfg.gate_up_fraction
    fit = [f"{k / 16:g}" for k in range(16) if k / 16 <= top and _fits(model, _with_high_fraction(cfg, k / 16))]
    return (f"--high-fraction {cfg.high_fraction:g} does not fit this model (hidden size {model.hidden_size}, "
            f"head size {model.head_dim}): {cause}; it must leave an even number of 4-bit channels in both. "
            f"Values in [0, {top:g}{')' if top == 1.0 else ']'} that fit: {', '.join(fit) if fit else 'none but 0'}")


def _gate_up_fraction_message(model: ModelConfig, cfg: QuantConfig, cause: ConfigError) -> str:
    """--gate-up-high-fraction is what breaks the layout: say so, with values that fit."""
    fit = [f"{k / 16:g}" for k in range(16)
           if k / 16 >= cfg.high_fraction and _fits(model, replace(cfg, gate_up_high_fraction=k / 16))]
    return (f"--gate-up-high-fraction {cfg.gate_up_fraction:g} does not fit this model (hidden size "
            f"{model.hidden_size}) with these settings: {cause}. Values in [{cfg.high_fraction:g}, 1) that fit: "
            f"{', '.join(fit) if fit else 'none'}")


def _check_group_sizes(model: ModelConfig, cfg: QuantConfig) -> None:
    """A group wider than every input it applies to would be recorded as asked but used as one group
    per part (clamped): refused instead, so that config.json never records a width that is not used."""
    widest = max(model.hidden_size, model.intermediate_size)
    if cfg.group_size > widest:
        raise ConfigError(f"--group-size {cfg.group_size} is wider than every input of this model's linears "
                          f"(the widest has {widest} channels): give at most {widest}, or 0 for one group per "
                          "precision part")
    if cfg.down_group_size > model.intermediate_size:
        raise ConfigError(f"--down-group-size {cfg.down_group_size} is wider than the down projection's input "
                          f"({model.intermediate_size} channels): give at most {model.intermediate_size}, or 0 to "
                          "use --group-size")


def _role_layouts(model: ModelConfig, cfg: QuantConfig, warn: bool) -> dict[str, LinearLayout]:
    hid, hd, nh = model.hidden_size, model.head_dim, model.num_heads
    r_res, r_gate, r_head = high_channels(hid, cfg), gate_up_high_channels(hid, cfg), high_channels(hd, cfg)
    # one group width for both residual-stream linears (auto: one that divides all their parts), so
    # that U_A's blocks are whole groups in both
    g = _group_size((hid - r_res, r_res, hid - r_gate, r_gate), cfg)
    if cfg.group_size == AUTO_GROUP_SIZE and g != (g_qkv := auto_group_size((hid - r_res, r_res))):
        # the option must not change attn_qkv's layout behind the user's back (nor its bit cost)
        raise ConfigError(f"--group-size auto groups attn_qkv's input ({hid - r_res} + {r_res} channels) by "
                          f"{g_qkv or 'one group per part'}, which does not also split mlp_gate_up's "
                          f"({hid - r_gate} + {r_gate}; a width for both: {g or 'none, one group per part'}); give "
                          "--group-size explicitly to accept that")

    def residual(r: int, what: str) -> LinearLayout:
        return _part_layout([(_split(hid - r, g, f"{what} (4-bit part)"), False),
                             (_split(r, g, f"{what} (8-bit part)"), True)], cfg)

    if r_gate == r_res:
        qkv = gate_up = residual(r_res, "the residual stream's input to attn_qkv and mlp_gate_up in every layer")
    else:
        qkv = residual(r_res, "attn_qkv's input (the residual stream) in every layer")
        gate_up = residual(r_gate, "mlp_gate_up's input (the residual stream) in every layer")
    # o_proj input, permuted: the low part of every head, then the high part of every head; one
    # activation group per head part (per token per head quantisation).
    o_parts = [([hd - r_head], False)] * nh + ([([r_head], True)] * nh if r_head else [])
    down = _down_group_size(model, cfg, warn)
    return {
        "attn_qkv": qkv,
        "attn_o": _part_layout(o_parts, cfg),
        "mlp_gate_up": gate_up,
        "mlp_down": _part_layout([(_split(model.intermediate_size, down, "mlp_down's input (the intermediate size) "
                                          "in every layer", "--down-group-size" if down == cfg.down_group_size
                                          else "--group-size"), False)], cfg),
    }


@dataclass(frozen=True)
class KVQuantizer:
    """Per token per head asymmetric quantisation of K and V: the head_dim channels split into groups."""

    group_sizes: tuple[int, ...]
    bits: tuple[int, ...]

    def __post_init__(self):
        if any(bits == 4 and width % 2 for width, bits in zip(self.group_sizes, self.bits)):
            raise ConfigError(f"a 4-bit KV group needs an even width (packed two per byte), got {self.group_sizes}")

    @property
    def row_bytes(self) -> int:
        """Bytes of one cached row (one token, one KV head): ops.json's C."""
        return sum(width * bits // 8 for width, bits in zip(self.group_sizes, self.bits))

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [..., head_dim] -> the stored form (docs/ops.md): codes uint8 [..., row_bytes] (each group's
        4-bit codes packed two per byte), scales float32 [..., G], zero points uint8 [..., G]."""
        return self.pack(*quantize_groups(x, self.group_sizes, self.bits))

    def pack(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """quantize_groups' codes, scales and zero points -> the stored form."""
        parts = []
        for (a, b), bits in zip(group_bounds(self.group_sizes), self.bits):
            parts.append(pack_int4(q[..., a:b]).view(torch.uint8) if bits == 4 else q[..., a:b].to(torch.uint8))
        return torch.cat(parts, -1), scale, zero.to(torch.uint8)

    def codes(self, packed: torch.Tensor) -> torch.Tensor:
        """The stored bytes [..., row_bytes] -> int32 codes [..., head_dim]."""
        parts, at = [], 0
        for width, bits in zip(self.group_sizes, self.bits):
            n = width * bits // 8
            part = packed[..., at:at + n]
            parts.append(unpack_int4(part, signed=False) if bits == 4 else part.to(torch.int32))
            at += n
        return torch.cat(parts, -1)

    def dequantize(self, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return dequantize_groups(self.codes(packed), scale, zero.to(torch.int32), self.group_sizes)


def kv_quantizer(model: ModelConfig, cfg: QuantConfig) -> KVQuantizer | None:
    if cfg.kv_bits == 16:
        return None
    r = high_channels(model.head_dim, cfg)
    sizes = (model.head_dim - r, r) if r else (model.head_dim,)
    bits = (cfg.kv_bits, cfg.high_bits) if r else (cfg.kv_bits,)
    return KVQuantizer(sizes, bits)
