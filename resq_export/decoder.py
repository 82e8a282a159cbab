"""Our own small decoder: the one forward pass used for the float model, the rotated model, calibration
and the quantised reference executor. What differs between them is data (which linear objects, which
online rotations, whether the KV cache quantises), never the code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F

from .algo.hadamard import apply_down_hadamard
from .layout import KVQuantizer
from .models import rope
from .models.config import ModelConfig


class Linear(Protocol):
    in_features: int
    out_features: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FloatLinear:
    """y = x W^T + b in float32."""

    weight: torch.Tensor  # [out, in]
    bias: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


@dataclass
class TiedHead:
    """The lm_head of a model that ties it to the embedding: head weight = embed @ factor, logits
    (x factor^T) embed^T. The embedding is stored once; the [hidden, hidden] factor carries what the
    transforms did to the head alone (the final norm's weight, U_A^T . U_A)."""

    factor: torch.Tensor  # [hidden, hidden] float32

    def logits(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        return (x @ self.factor.T) @ embed.to(torch.float32).T


class Observer(Protocol):
    """Calibration hooks; any method may raise StopForward to end the pass early."""

    def linear_input(self, layer: int, role: str, x: torch.Tensor) -> None: ...
    def values(self, layer: int, v: torch.Tensor) -> None: ...
    def keys(self, layer: int, k: torch.Tensor) -> None: ...


class StopForward(Exception):
    """Raised by an observer that has seen what it needs."""


@dataclass
class Layer:
    qkv: Linear
    o: Linear
    gate_up: Linear
    down: Linear
    attn_norm: torch.Tensor | None = None  # None once folded into the linears
    mlp_norm: torch.Tensor | None = None
    key_rotation: torch.Tensor | None = None  # U_C [head_dim, head_dim], applied online to q and k after RoPE
    down_rotation: torch.Tensor | None = None  # left factor of U_D = kron(left, Sylvester), online
    o_input_perm: torch.Tensor | None = None  # column order of the o_proj input
    # per-head RMSNorm weights [head_dim] of q and k, before RoPE (Qwen3); never folded: RoPE follows
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None


@dataclass
class KVCache:
    """Per layer: float K/V, or integer codes with scales and zero points. Shapes [B, n_kv, T, ...]."""

    quantizer: KVQuantizer | None = None
    keys: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # by layer index
    values: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return next(iter(self.keys.values()))[0].shape[2] if self.keys else 0

    def _store(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x] if self.quantizer is None else list(self.quantizer.quantize(x))

    def _load(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] if self.quantizer is None else self.quantizer.dequantize(*parts)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (quantised) K/V and return the whole (dequantised) K/V of this layer."""
        new_k, new_v = self._store(k), self._store(v)
        if layer not in self.keys:
            self.keys[layer] = new_k
            self.values[layer] = new_v
        else:
            self.keys[layer] = [torch.cat([a, b], 2) for a, b in zip(self.keys[layer], new_k)]
            self.values[layer] = [torch.cat([a, b], 2) for a, b in zip(self.values[layer], new_v)]
        return self._load(self.keys[layer]), self._load(self.values[layer])


def rope_inv_freq(config: ModelConfig, long: bool = False) -> torch.Tensor:
    """[rope_dim / 2] float32 inverse frequencies (long: LongRoPE's set past the original context)."""
    return rope.inv_freq(config.rope_theta, config.rope_dim, config.rope_scaling, long)


# Float islands: every float computation that feeds a quantiser and involves a reduction or a
# transcendental function runs in the island dtype and is rounded to float32 once. With float64
# (the reference executor: Decoder.float_islands) its float32 result no longer depends on the
# summation order or the libm of the runtime (torch, ONNX Runtime), so a value next to a 4-bit
# rounding boundary gets the same code everywhere; in float32 one-ulp differences flip codes and
# the flips cascade through attention (docs/onnx.md). Calibration needs no such agreement and runs
# the islands in float32, about twice as fast.


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, island: torch.dtype) -> torch.Tensor:
    x = x.to(island)
    y = x * (1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))
    return (y if weight is None else y * weight.to(island)).float()


def silu_mul(gate: torch.Tensor, up: torch.Tensor, island: torch.dtype) -> torch.Tensor:
    g = gate.to(island)
    return (g * torch.sigmoid(g) * up.to(island)).float()


def rotate_keys(x: torch.Tensor, rotation: torch.Tensor, island: torch.dtype) -> torch.Tensor:
    return (x.to(island) @ rotation.to(island)).float()


def rotate_keys_gpu(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """U_C as the GPU kernel computes it (ops.json's gpu_semantics of ResQKVCacheAttention), bit for bit:
    y[..., j] = ((0 + x[..., 0] u[0, j]) + x[..., 1] u[1, j]) + ..., every product and sum one float32
    rounding. The appended codes depend on k's bits, so the order is part of the contract."""
    x, u = x.to(torch.float32), rotation.to(torch.float32)
    y = torch.zeros_like(x)
    for k in range(u.shape[0]):
        y = y + x[..., k:k + 1] * u[k]
    return y


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first cos.shape[-1] channels of each head; the rest (partial rotary) pass unchanged."""
    dim = cos.shape[-1]
    if dim == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    turned, kept = x[..., :dim], x[..., dim:]
    return torch.cat([turned * cos + _rotate_half(turned) * sin, kept], dim=-1)


@dataclass
class Decoder:
    config: ModelConfig
    embed: torch.Tensor  # [vocab, hidden]
    layers: list[Layer]
    lm_head: Linear | TiedHead
    final_norm: torch.Tensor | None = None
    kv_quantizer: KVQuantizer | None = None
    float_islands: bool = False  # float64 islands: on for the reference executor of an artifact

    @property
    def island(self) -> torch.dtype:
        return torch.float64 if self.float_islands else torch.float32

    def __post_init__(self) -> None:
        self.inv_freq = rope_inv_freq(self.config)
        self.long_after = rope.long_after(self.config.rope_scaling)
        self.long_inv_freq = rope_inv_freq(self.config, long=True) if self.long_after is not None else None
        self.rope_scale = rope.attention_factor(self.config.rope_scaling)

    def new_cache(self) -> KVCache:
        return KVCache(self.kv_quantizer)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed[input_ids].to(torch.float32)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, S, rope_dim] of a call's positions. LongRoPE picks its set per call, by the
        call's last position (as transformers does), so a call at or past the original context uses
        the long factors for all its tokens."""
        inv_freq = self.inv_freq
        if self.long_after is not None and positions.numel() and int(positions.max()) + 1 > self.long_after:
            inv_freq = self.long_inv_freq
        freqs = positions[..., None].double() * inv_freq.double()
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.rope_scale != 1.0:
            cos, sin = cos * self.rope_scale, sin * self.rope_scale
        return cos.float()[:, None], sin.float()[:, None]

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        observer: Observer | None = None,
    ) -> torch.Tensor:
        """input_ids [B, S] continuing the sequences held in `cache` (a fresh one if None) -> logits [B, S, V]."""
        h = self.hidden_states(input_ids, cache, observer)
        x = rms_norm(h, self.final_norm, self.config.rms_norm_eps, self.island)
        return self.lm_head.logits(x, self.embed) if isinstance(self.lm_head, TiedHead) else self.lm_head(x)

    __call__ = forward

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        observer: Observer | None = None,
    ) -> torch.Tensor:
        """The residual stream after the last layer (no head: calibration needs no logits)."""
        cache = self.new_cache() if cache is None else cache
        past = cache.length
        seq = input_ids.shape[1]
        if self.config.sliding_window and past + seq > self.config.sliding_window:
            raise ValueError(f"sequence of {past + seq} tokens exceeds the sliding window {self.config.sliding_window}")
        positions = torch.arange(past, past + seq)[None].expand(input_ids.shape[0], -1)
        h = self.embed_tokens(input_ids)
        rope = self.rope(positions)
        for i, layer in enumerate(self.layers):
            h = self.layer_forward(i, layer, h, rope, cache, observer)
        return h

    def layer_forward(
        self,
        i: int,
        layer: Layer,
        h: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache,
        observer: Observer | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        bsz, seq, _ = h.shape
        x = rms_norm(h, layer.attn_norm, cfg.rms_norm_eps, self.island)
        if observer:
            observer.linear_input(i, "attn_qkv", x)
        qkv = layer.qkv(x)
        nq, nkv, hd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.head_dim
        q = qkv[..., :nq].view(bsz, seq, cfg.num_heads, hd).transpose(1, 2)
        k = qkv[..., nq:nq + nkv].view(bsz, seq, cfg.num_kv_heads, hd).transpose(1, 2)
        v = qkv[..., nq + nkv:].view(bsz, seq, cfg.num_kv_heads, hd).transpose(1, 2)
        if observer:
            observer.values(i, v)
        if layer.q_norm is not None:  # per head, on the projections' outputs: U_A never reaches them
            q = rms_norm(q, layer.q_norm, cfg.rms_norm_eps, self.island)
            k = rms_norm(k, layer.k_norm, cfg.rms_norm_eps, self.island)
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if observer:
            observer.keys(i, k)
        if layer.key_rotation is not None:
            q = rotate_keys(q, layer.key_rotation, self.island)
            k = rotate_keys(k, layer.key_rotation, self.island)
        k_all, v_all = cache.append(i, k, v)
        attn = _attention(q, k_all, v_all, cfg.kv_group, self.island)
        attn = attn.transpose(1, 2).reshape(bsz, seq, cfg.num_heads * hd)
        if layer.o_input_perm is not None:
            attn = attn[..., layer.o_input_perm]
        if observer:
            observer.linear_input(i, "attn_o", attn)
        h = h + layer.o(attn)
        x = rms_norm(h, layer.mlp_norm, cfg.rms_norm_eps, self.island)
        if observer:
            observer.linear_input(i, "mlp_gate_up", x)
        gate, up = layer.gate_up(x).chunk(2, dim=-1)
        act = silu_mul(gate, up, self.island)
        if layer.down_rotation is not None:
            act = apply_down_hadamard(act.to(self.island), layer.down_rotation).float()
        if observer:
            observer.linear_input(i, "mlp_down", act)
        return h + layer.down(act)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, island: torch.dtype) -> torch.Tensor:
    """Causal attention of the last S positions over all T cached positions (GQA: query head j reads
    KV head j // group), a float island."""
    seq, total = q.shape[2], k.shape[2]
    mask = torch.ones(seq, total, dtype=torch.bool).tril(diagonal=total - seq)
    return F.scaled_dot_product_attention(q.to(island), k.to(island), v.to(island), attn_mask=mask,
                                          enable_gqa=group > 1).float()


# The quantised linears of a layer: role name (used in artifacts, layouts and logs) -> Layer attribute.
LINEAR_ROLES = {"attn_qkv": "qkv", "attn_o": "o", "mlp_gate_up": "gate_up", "mlp_down": "down"}
