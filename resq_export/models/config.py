"""The model hyper-parameters the quantiser and the executors need, parsed from an HF config dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ModelLoadError
from .arch import arch_of_hf_config
from .rope import SUPPORTED_ROPE_TYPES, rope_settings

__all__ = ["SUPPORTED_ROPE_TYPES", "ModelConfig", "check_hf_fields"]


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # RoPE on the first rotary_dim channels of each head (Phi-4-mini: 3/4), the rest passed through;
    # 0: the whole head (what artifacts written before this field mean)
    rotary_dim: int = 0
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (Qwen3), weights kept in the layer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kv_group(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    @property
    def rope_dim(self) -> int:
        """The channels of a head that RoPE turns (the first ones)."""
        return self.rotary_dim or self.head_dim

    @property
    def qkv_out(self) -> int:
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**d)

    @classmethod
    def from_hf(cls, hf: dict[str, Any], where: str = "config.json") -> "ModelConfig":
        """where: the file the settings came from, named in every refusal."""
        spec = arch_of_hf_config(hf)
        check_hf_fields(hf, where)
        try:
            hidden = int(hf["hidden_size"])
            n_heads = int(hf["num_attention_heads"])
            n_kv = int(hf.get("num_key_value_heads") or n_heads)
            head_dim = int(hf.get("head_dim") or hidden // n_heads)
            rope_theta, rope_scaling, rotary_dim = rope_settings(hf, head_dim, where, dict(spec.rope_aliases))
            if hf.get("mlp_bias"):
                raise ModelLoadError("models with biases on the MLP linears (mlp_bias=true) are not supported")
            act = hf.get("hidden_act", "silu")
            if act != "silu":
                raise ModelLoadError(f"hidden_act {act!r} is not supported (only 'silu')")
            sliding = hf.get("sliding_window") if hf.get("use_sliding_window", True) else None
            cfg = cls(
                architecture=spec.hf_architecture,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=n_heads,
                num_kv_heads=n_kv,
                head_dim=head_dim,
                intermediate_size=int(hf["intermediate_size"]),
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=rope_theta,
                rope_scaling=rope_scaling,
                qkv_bias=spec.qkv_bias_always or bool(hf.get("attention_bias", False)),
                o_bias=(not spec.qkv_bias_always) and bool(hf.get("attention_bias", False)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                sliding_window=int(sliding) if sliding else None,
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=hf.get("eos_token_id"),
                rotary_dim=rotary_dim,
                qk_norm=spec.qk_norm,
            )
        except KeyError as e:
            raise ModelLoadError(f"{where} lacks the field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"{where} has an invalid value: {e}") from None
        if n_heads % n_kv:
            raise ModelLoadError(f"{where}: \"num_attention_heads\" {n_heads} is not a multiple of "
                                 f"\"num_key_value_heads\" {n_kv}")
        if head_dim % 2:
            raise ModelLoadError(f"{where}: \"head_dim\" {head_dim} must be even for RoPE")
        return cfg


_COUNTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_OPTIONAL_COUNTS = ("num_key_value_heads", "head_dim", "max_position_embeddings")
_OPTIONAL_POSITIVE = ("rms_norm_eps", "rope_theta")


def _shown(value: Any) -> str:
    if type(value) is int:  # the kind is plain; the value is what is wrong
        return repr(value)
    kind = {str: "a string", bool: "true/false", float: "a number", type(None): "null", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def check_hf_fields(hf: dict[str, Any], where: str = "config.json") -> None:
    """The shape fields' types and ranges, before anything (the tokenizer included) reads them: a
    string "64" or a 0 head count is named with its file and field here, not as a division by zero
    later."""
    import math

    for name in _COUNTS + _OPTIONAL_COUNTS:
        if name not in hf or (name in _OPTIONAL_COUNTS and hf[name] is None):
            continue  # a missing required one is named by from_hf
        value = hf[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"{where}: \"{name}\" must be a positive integer, not {_shown(value)}")
    for name in _OPTIONAL_POSITIVE:
        value = hf.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ModelLoadError(f"{where}: \"{name}\" must be a positive number, not {_shown(value)}")
    hidden, heads = hf.get("hidden_size"), hf.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and not hf.get("head_dim") and hidden % heads:
        raise ModelLoadError(f"{where}: \"hidden_size\" {hidden} is not a multiple of \"num_attention_heads\" "
                             f"{heads} (and no \"head_dim\" is given)")
