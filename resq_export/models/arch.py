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
    layer_names: dict[str, str]
    embed_name: str
    final_norm_name: str
    lm_head_name: str
    # q/k/v carry a bias whatever the config says (Qwen2); otherwise the config's attention_bias decides.
    qkv_bias_always: bool = False


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


def _decoder_spec(name: str, qkv_bias_always: bool = False) -> ArchSpec:
    return ArchSpec(
        hf_architecture=name,
        layer_names=_LLAMA_LAYER,
        embed_name="model.embed_tokens",
        final_norm_name="model.norm",
        lm_head_name="lm_head",
        qkv_bias_always=qkv_bias_always,
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.hf_architecture: spec
    for spec in (
        _decoder_spec("LlamaForCausalLM"),
        _decoder_spec("MistralForCausalLM"),
        _decoder_spec("Qwen2ForCausalLM", qkv_bias_always=True),
    )
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise ModelLoadError(
            f"unsupported architecture {name!r}; supported architectures: {supported}"
        ) from None


_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


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
    return get_arch(_MODEL_TYPES.get(model_type, model_type or "<none given>"))
