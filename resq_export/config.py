"""Frozen settings of the quantise stage, with per-method defaults and a schema version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

SCHEMA_VERSION = 1
METHODS = ("resq", "quarot", "rtn", "lqer", "fp")
WEIGHT_ALGOS = ("gptq", "rtn")
GPTQ_ORDERS = ("natural", "act", "act-in-parts")  # the order GPTQ rounds input columns in (algo/gptq.py)
ROTATIONS = ("pca", "learned", "random", "none")
LQER_SCALES = ("absmean", "hessian")  # how LQER weighs the weight error's input channels (algo/lqer.py)
AUTO_GROUP_SIZE = -1  # --group-size auto: a width per model that divides its parts (layout.auto_group_size)


@dataclass(frozen=True)
class QuantConfig:
    method: str = "resq"
    w_bits: int = 4
    a_bits: int = 4  # 16: activations stay float (weight-only quantisation)
    kv_bits: int = 4  # 16: float KV cache
    high_bits: int = 8  # bits of the high-variance subspace (weights, activations, KV)
    high_fraction: float = 0.125  # share of channels kept at high_bits (0: uniform)
    # mlp_gate_up's input alone keeps this larger share at high_bits (issue 32): the next most
    # variance after attn_qkv's high part. None: high_fraction (for_method records the number).
    gate_up_high_fraction: float | None = None
    rotation: str = "pca"  # pca (ResQ), learned (ResQ with learned subspace rotations, issue 32), random (QuaRot), none
    online_hadamard: bool = True  # U_D on the down_proj input
    weight_algo: str = "gptq"
    group_size: int = 0  # channels per scale group along the input axis; 0: one group per precision part;
    # AUTO_GROUP_SIZE: the model's widest fitting width up to 128 (the ResQ default)
    down_group_size: int = 0  # groups of the down_proj input (all 4-bit after the Hadamard); 0: group_size.
    # Where it does not divide the intermediate size, group_size applies (a warning says so).
    lqer_rank: int = 0
    lqer_bits: int = 8
    lqer_scale: str = "absmean"  # absmean: L²QER's per-channel mean |x|; hessian: whitened by the inputs' x^T x
    clip_search: bool = True
    gptq_damp: float = 0.01
    gptq_block: int = 128
    gptq_order: str = "natural"  # natural, act (descending diag(H)) or act-in-parts (the same within each
    # precision part, 4-bit part first); static groups, so the layout is the same (issue 32)
    nsamples: int = 64
    seqlen: int = 512
    seed: int = 0

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> "QuantConfig":
        """The method's defaults (the paper settings), then the given overrides (None means: default)."""
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        presets: dict[str, dict[str, Any]] = {
            # issue 18 (docs/results.md): out of domain 1.320x -> 1.246x FP (down 64) -> 1.184x (auto: 72 on SmolLM2)
            "resq": {"down_group_size": 64, "group_size": AUTO_GROUP_SIZE},
            "quarot": {"rotation": "random", "high_fraction": 0.0},
            "rtn": {"rotation": "none", "high_fraction": 0.0, "online_hadamard": False, "weight_algo": "rtn"},
            "lqer": {"rotation": "none", "high_fraction": 0.0, "online_hadamard": False, "weight_algo": "rtn",
                     "a_bits": 8, "kv_bits": 16, "lqer_rank": 32, "group_size": 64},
            "fp": {"rotation": "none", "high_fraction": 0.0, "online_hadamard": False,
                   "w_bits": 16, "a_bits": 16, "kv_bits": 16},
        }
        values = {"method": method, **presets[method]}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("gate_up_high_fraction") is None:  # config.json records the fraction used
            values["gate_up_high_fraction"] = values.get("high_fraction", cls.high_fraction)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @property
    def quantizes_weights(self) -> bool:
        return self.w_bits != 16

    @property
    def gate_up_fraction(self) -> float:
        """The share of mlp_gate_up's input at high_bits (high_fraction unless set larger)."""
        return self.high_fraction if self.gate_up_high_fraction is None else self.gate_up_high_fraction

    @property
    def transforms(self) -> bool:
        """Rotations or the online Hadamard (also with float weights: then exact)."""
        return self.rotation != "none" or self.online_hadamard

    def validate(self) -> None:
        self._validate_gate_up_fraction()
        if self.method == "fp":
            if (self.w_bits, self.a_bits, self.kv_bits) != (16, 16, 16) or self.lqer_rank:
                raise ConfigError("--method fp quantises nothing: leave the bit widths and --lqer-rank unset")
            return
        if self.w_bits == 16:  # the transforms alone (exact: the logits stay the float model's)
            if (self.a_bits, self.kv_bits) != (16, 16) or self.lqer_rank:
                raise ConfigError("--w-bits 16 keeps the model float: it needs --a-bits 16 --kv-bits 16 and no "
                                  "--lqer-rank")
        elif self.w_bits not in (4, 8):
            raise ConfigError(f"unsupported weight bit width {self.w_bits}; supported: 4, 8 (16: float)")
        if self.a_bits not in (4, 8, 16):
            raise ConfigError(f"unsupported activation bit width {self.a_bits}; supported: 4, 8, 16 (float)")
        if self.kv_bits not in (4, 8, 16):
            raise ConfigError(f"unsupported KV-cache bit width {self.kv_bits}; supported: 4, 8, 16 (float)")
        if self.high_bits != 8:
            raise ConfigError(f"unsupported high-precision bit width {self.high_bits}; supported: 8")
        if not 0.0 <= self.high_fraction < 1.0:
            raise ConfigError(f"--high-fraction must be in [0, 1), got {self.high_fraction}")
        if self.rotation not in ROTATIONS:
            raise ConfigError(f"unknown rotation {self.rotation!r}; choose one of {', '.join(ROTATIONS)}")
        if self.weight_algo not in WEIGHT_ALGOS:
            raise ConfigError(f"unknown weight algorithm {self.weight_algo!r}; choose gptq or rtn")
        if self.gptq_order not in GPTQ_ORDERS:
            raise ConfigError(f"unknown GPTQ order {self.gptq_order!r}; choose one of {', '.join(GPTQ_ORDERS)}")
        if self.gptq_order != "natural" and (self.weight_algo != "gptq" or not self.quantizes_weights):
            raise ConfigError(f"--gptq-order {self.gptq_order} orders GPTQ's rounding: it needs --weight-algo gptq "
                              "and quantised weights")
        if self.lqer_rank < 0 or self.lqer_bits != 8:
            raise ConfigError("--lqer-rank must be >= 0 and the LQER factors are 8-bit")
        if self.lqer_scale not in LQER_SCALES:
            raise ConfigError(f"unknown LQER scale {self.lqer_scale!r}; choose one of {', '.join(LQER_SCALES)}")
        if self.group_size != AUTO_GROUP_SIZE and (self.group_size < 0 or self.group_size % 2):
            raise ConfigError(f"--group-size must be auto, 0 or a positive even number, got {self.group_size}")
        if self.down_group_size < 0 or self.down_group_size % 2:
            raise ConfigError(f"--down-group-size must be 0 or a positive even number, got {self.down_group_size}")
        if self.nsamples < 1 or self.seqlen < 2:
            raise ConfigError("--nsamples must be >= 1 and --seqlen >= 2")

    def _validate_gate_up_fraction(self) -> None:
        f = self.gate_up_fraction
        if f == self.high_fraction:
            return
        if not self.high_fraction <= f < 1.0:
            raise ConfigError(f"--gate-up-high-fraction {f:g} must be in [--high-fraction, 1) = "
                              f"[{self.high_fraction:g}, 1): mlp_gate_up's input keeps at least attn_qkv's 8-bit "
                              "channels")
        # the extra 8-bit channels are the next principal components of ResQ's U_A: no PCA, no meaning
        if self.rotation not in ("pca", "learned"):
            raise ConfigError(f"--gate-up-high-fraction {f:g} needs ResQ's PCA bases (--method resq with --rotation "
                              f"pca or learned), not --rotation {self.rotation}; leave it unset")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown quantisation settings: {', '.join(sorted(unknown))}")
        return cls(**d)
