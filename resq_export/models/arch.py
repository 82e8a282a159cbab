"""Architectures as data: one ArchSpec per Hugging Face architecture name.

The rest of the code speaks of roles (attn_q, mlp_down, ...) and never tests model names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelLoadError

@dataclass(frozen=True)
class ArchSpec:
    hf_architecture: str
    # HF tensor name of each per-layer role, with {i} for the layer index (".weight"/".bias" appended).
    # Either attn_q/attn_k/attn_v or the fused attn_qkv (rows q, k, v); either mlp_gate/mlp_up or the
    # fused mlp_gate_up (rows gate, up): the loader fuses the separate ones in that same order.
    layer_names: dict[str, str]
    embed_name: str
    final_norm_name: str
    lm_head_name: str
    model_type: str  # config.json's model_type (what a GGUF-derived config carries instead of architectures)
    # q/k/v carry a bias whatever the config says (Qwen2); otherwise the config's attention_bias decides.
    qkv_bias_always: bool = False
    # per-head RMSNorm of q and k before RoPE (Qwen3): layer_names has attn_q_norm and attn_k_norm
    qk_norm: bool = False
    # RoPE type names the family's config class reads as another type ((old, new) pairs): Phi-3's
    # early long-context configs say "su" or "yarn" for what transformers runs as longrope
    rope_aliases: tuple[tuple[str, str], ...] = ()

    @property
    def fused_qkv(self) -> bool:
        return "attn_qkv" in self.layer_names

    @property
    def fused_gate_up(self) -> bool:
        return "mlp_gate_up" in self.layer_names


_LLAMA_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm",
    "attn_q": "model.layers.{i}.self_attn.q_proj",
    "attn_k": "model.layers.{i}.self_attn.k_proj",
    "attn_v": "model.layers.{i}.self_attn.v_proj",
    "attn_o": "model.layers.{i}.self_attn.o_proj",
    "mlp_norm": "model.layers.{i}.post_attention_layernorm",
    "mlp_gate": "model.layers.{i}.mlp.gate_proj",
    "mlp_up": "model.layers.{i}.mlp.up_proj",
    "mlp_down": "model.layers.{i}.mlp.down_proj",
}

_QWEN3_LAYER = {**_LLAMA_LAYER, "attn_q_norm": "model.layers.{i}.self_attn.q_norm",
                "attn_k_norm": "model.layers.{i}.self_attn.k_norm"}

_PHI3_LAYER = {
    "attn_norm": "model.layers.{i}.input_layernorm",
    "attn_qkv": "model.layers.{i}.self_attn.qkv_proj",
    "attn_o": "model.layers.{i}.self_attn.o_proj",
    "mlp_norm": "model.layers.{i}.post_attention_layernorm",
    "mlp_gate_up": "model.layers.{i}.mlp.gate_up_proj",
    "mlp_down": "model.layers.{i}.mlp.down_proj",
}


def _decoder_spec(name: str, model_type: str, layer_names: dict[str, str] = _LLAMA_LAYER, **kw) -> ArchSpec:
    return ArchSpec(hf_architecture=name, layer_names=layer_names, embed_name="model.embed_tokens",
                    final_norm_name="model.norm", lm_head_name="lm_head", model_type=model_type, **kw)


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.hf_architecture: spec
    for spec in (
        _decoder_spec("LlamaForCausalLM", "llama"),
        _decoder_spec("MistralForCausalLM", "mistral"),
        _decoder_spec("Qwen2ForCausalLM", "qwen2", qkv_bias_always=True),
        _decoder_spec("Qwen3ForCausalLM", "qwen3", _QWEN3_LAYER, qk_norm=True),
        _decoder_spec("Phi3ForCausalLM", "phi3", _PHI3_LAYER, rope_aliases=(("su", "longrope"), ("yarn", "longrope"))),
    )
}

_MODEL_TYPES = {spec.model_type: name for name, spec in ARCHITECTURES.items()}

# Families that rotations cannot serve as they are, with the reason (said instead of "unsupported").
_NORM_AFTER = ("it normalises the outputs of attention and of the MLP before adding them to the residual stream "
               "(post-norms); such a norm does not commute with the rotation U_A of the residual stream, so the "
               "rotation cannot be folded into the weights")
_MOE = ("it is a mixture-of-experts model: the router and the experts' MLPs are not handled (the rotations, "
        "the Hadamard on each expert's down_proj input and the per-expert calibration are not implemented)")
_MULTIMODAL = ("it is a multimodal wrapper (a vision or audio encoder beside the language model): only "
               "text-only causal LMs are read; give the language model alone, as a *ForCausalLM folder")
REFUSED: dict[str, str] = {
    **{a: _NORM_AFTER for a in ("Gemma2ForCausalLM", "Gemma3ForCausalLM",
                                "Olmo2ForCausalLM", "Olmo3ForCausalLM")},
    **{a: _MOE for a in ("MixtralForCausalLM", "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "PhimoeForCausalLM",
                         "OlmoeForCausalLM", "DeepseekV3ForCausalLM", "GptOssForCausalLM")},
}
_REFUSED_TYPES = {"gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForConditionalGeneration",
                  "gemma3_text": "Gemma3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "olmo3": "Olmo3ForCausalLM",
                  "mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                  "qwen2_moe": "Qwen2MoeForCausalLM", "phimoe": "PhimoeForCausalLM"}


def refusal_reason(name: str) -> str | None:
    """Why a known architecture is refused, or None for one we know nothing of."""
    if name in REFUSED:
        return REFUSED[name]
    if name.endswith("ForConditionalGeneration"):  # the transformers naming of every vision/audio-language wrapper
        return _MULTIMODAL
    return None


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        reason = refusal_reason(name)
        if reason is not None:
            raise ModelLoadError(f"{name} is not supported: {reason}; supported architectures: {supported}") from None
        raise ModelLoadError(
            f"unsupported architecture {name!r}; supported architectures: {supported}"
        ) from None


def arch_of_hf_config(hf: dict) -> ArchSpec:
    """The spec for an HF config dict: its `architectures` entry, else its `model_type` (GGUF configs)."""
    archs = hf.get("architectures") or []
    if isinstance(archs, str):  # a hand-written config; HF writes a list
        archs = [archs]
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ModelLoadError(f"config.json: \"architectures\" should be a list of names, not {archs!r}")
    if archs:
        return get_arch(archs[0])
    model_type = hf.get("model_type")
    return get_arch(_MODEL_TYPES.get(model_type) or _REFUSED_TYPES.get(model_type) or model_type or "<none given>")
