"""RoPE settings: read from an HF config dict into one resolved dict per model (every default filled
in, so the artifact's config.json says all that the angles depend on), and the inverse frequencies
and cos/sin scale they give. Types: default, linear, llama3, yarn, longrope; each checked against
transformers' own initialisation in tests/unit/test_families_hf.py."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ModelLoadError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "longrope")

# what each type reads besides its name, and the defaults transformers gives the optional ones
_REQUIRED = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
             "yarn": (), "longrope": ("short_factor", "long_factor")}


def rope_settings(hf: dict[str, Any], head_dim: int, where: str, aliases: dict[str, str] | None = None
                  ) -> tuple[float, dict[str, Any] | None, int]:
    """(theta, resolved scaling or None for plain RoPE, rotary dim) from the transformers-5
    `rope_parameters` or the older `rope_theta` / `rope_scaling` / `partial_rotary_factor` fields.
    aliases: type names the family reads as another type (ArchSpec.rope_aliases)."""
    params = hf.get("rope_parameters")
    if params:
        theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(hf.get("rope_theta", 10000.0))
        scaling = dict(hf.get("rope_scaling") or {})
    partial = scaling.pop("partial_rotary_factor", None)
    partial = float(hf.get("partial_rotary_factor", 1.0) if partial is None else partial)
    rotary_dim = int(head_dim * partial)
    if partial != 1.0 and (not 0 < partial < 1 or rotary_dim < 2 or rotary_dim % 2):
        raise ModelLoadError(f"{where}: \"partial_rotary_factor\" {partial} gives a rotary part of {rotary_dim} of the "
                             f"{head_dim} channels of a head; it must be an even number of at least 2")
    kind = scaling.pop("type", None)
    rope_type = scaling.pop("rope_type", None) or kind or "default"
    rope_type = (aliases or {}).get(rope_type, rope_type)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(
            f"RoPE type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return theta, None, rotary_dim
    missing = [k for k in _REQUIRED[rope_type] if scaling.get(k) is None]
    if missing:
        raise ModelLoadError(f"{where}: RoPE type {rope_type!r} needs {', '.join(repr(m) for m in missing)}")
    context = hf.get("max_position_embeddings")
    # transformers gives a top-level original_max_position_embeddings precedence (Phi-3 writes it there)
    original = hf.get("original_max_position_embeddings") or scaling.get("original_max_position_embeddings") or context
    if rope_type == "linear":
        return theta, {"rope_type": "linear", "factor": float(scaling["factor"])}, rotary_dim
    if original is None:
        raise ModelLoadError(f"{where}: RoPE type {rope_type!r} needs \"original_max_position_embeddings\"")
    out: dict[str, Any] = {"rope_type": rope_type, "original_max_position_embeddings": int(original)}
    if rope_type == "llama3":
        out.update({k: float(scaling[k]) for k in _REQUIRED["llama3"]})
    elif rope_type == "yarn":
        factor = scaling.get("factor") or (context / original if context else None)
        if factor is None:
            raise ModelLoadError(f"{where}: RoPE type 'yarn' needs \"factor\"")
        out.update(factor=float(factor), beta_fast=float(scaling.get("beta_fast") or 32),
                   beta_slow=float(scaling.get("beta_slow") or 1), truncate=bool(scaling.get("truncate", True)),
                   attention_factor=_yarn_attention_factor(float(factor), scaling))
    else:
        short, long = list(map(float, scaling["short_factor"])), list(map(float, scaling["long_factor"]))
        if len(short) != rotary_dim // 2 or len(long) != rotary_dim // 2:
            raise ModelLoadError(f"{where}: LongRoPE's short_factor and long_factor need {rotary_dim // 2} values each "
                                 f"(half the rotary dim {rotary_dim}), not {len(short)} and {len(long)}")
        factor = scaling.get("factor") or (context / int(original) if context else 1.0)
        attention = scaling.get("attention_factor")
        if attention is None:
            attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(int(original)))
        out.update(short_factor=short, long_factor=long, attention_factor=float(attention))
    return theta, out, rotary_dim


def _yarn_scale(factor: float, m: float = 1.0) -> float:
    # YaRN's temperature for a context `factor` times the original: 0.1 m ln(factor) + 1 (1 below factor 1)
    return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0


def _yarn_attention_factor(factor: float, scaling: dict[str, Any]) -> float:
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    mscale, mscale_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all:
        return _yarn_scale(factor, float(mscale)) / _yarn_scale(factor, float(mscale_all))
    return _yarn_scale(factor)


def _plain(theta: float, dim: int) -> torch.Tensor:
    """theta^(-2j/dim), j < dim/2, in float32 (the exponents exact, the power rounded once)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def inv_freq(theta: float, dim: int, scaling: dict[str, Any] | None, long: bool = False) -> torch.Tensor:
    """The [dim / 2] float32 inverse frequencies; long: LongRoPE's set for sequences past the original
    context (the other types have one set)."""
    base = _plain(theta, dim)
    if scaling is None:
        return base
    kind = scaling["rope_type"]
    if kind == "linear":
        return base / scaling["factor"]
    if kind == "longrope":
        factors = torch.tensor(scaling["long_factor" if long else "short_factor"], dtype=torch.float32)
        return 1.0 / (factors * theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if kind == "yarn":
        return _yarn(theta, dim, scaling)
    return _llama3(base, scaling)


def _llama3(base: torch.Tensor, s: dict[str, Any]) -> torch.Tensor:
    # long wavelengths scaled by `factor`, short ones kept, a smooth blend between
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_ctx = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / base
    scaled = torch.where(wavelen > old_ctx / low, base / factor, base)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return torch.where(medium, blended, scaled)


def _yarn(theta: float, dim: int, s: dict[str, Any]) -> torch.Tensor:
    """Frequencies that turn fewer than beta_slow times over the original context are interpolated
    (divided by factor), those turning more than beta_fast times kept, a linear ramp over the
    channel index between (YaRN's "NTK-by-parts")."""
    powers = theta ** (torch.arange(0, dim, 2).float() / dim)
    ctx = s["original_max_position_embeddings"]

    def channel(turns: float) -> float:  # the channel whose frequency turns `turns` times over ctx
        return dim * math.log(ctx / (turns * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = channel(s["beta_fast"]), channel(s["beta_slow"])
    if s["truncate"]:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001  # a ramp of zero width would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    keep = 1 - ramp  # 1: the original frequency (high ones), 0: interpolated (low ones)
    return (1.0 / (s["factor"] * powers)) * (1 - keep) + (1.0 / powers) * keep


def attention_factor(scaling: dict[str, Any] | None) -> float:
    """What cos and sin are multiplied by (YaRN's and LongRoPE's attention temperature; 1 otherwise)."""
    return float(scaling.get("attention_factor", 1.0)) if scaling else 1.0


def long_after(scaling: dict[str, Any] | None) -> int | None:
    """LongRoPE: a call whose last position is at or past this many tokens uses the long factors
    (transformers: max(position_ids) + 1 > original_max_position_embeddings); None for other types."""
    if scaling and scaling["rope_type"] == "longrope":
        return int(scaling["original_max_position_embeddings"])
    return None
