"""What `resq-export models` lists: the families of the ArchSpec registry and the built-in models,
with what each takes, and the families refused with the reason."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .arch import _REFUSED_TYPES, ARCHITECTURES, REFUSED, ArchSpec, refusal_reason
from .config import SUPPORTED_ROPE_TYPES
from .loader import BUILTIN_INFO, BUILTIN_MODELS

# families whose GGUF files a test here has read: llama (the built-in SmolLM2 file), qwen3 and phi3
# (tiny files written by tests/unit/test_gguf_families.py, read with models/gguf_config.py's fixes)
_GGUF_TESTED = {"llama", "qwen3", "phi3"}


def _features(spec: ArchSpec) -> list[str]:
    out = ["grouped-query attention", "tied or separate LM head (as config.json's tie_word_embeddings says)",
           "explicit head_dim"]
    if spec.qk_norm:
        out.append("per-head q/k RMSNorm before RoPE (kept in the graph as a float island)")
    if spec.fused_qkv:
        out.append("fused qkv_proj (split by the config's head counts)")
    if spec.fused_gate_up:
        out.append("fused gate_up_proj")
    out.append("partial rotary (partial_rotary_factor)")
    return out


def catalog(methods: Sequence[str]) -> dict:
    families = [{"architecture": name, "model_type": spec.model_type,
                 "qkv_bias": "always" if spec.qkv_bias_always else "as config.json's attention_bias says",
                 "features": _features(spec), "rope_types": list(SUPPORTED_ROPE_TYPES), "methods": list(methods),
                 "sources": ["Hugging Face folder (safetensors)",
                             ".gguf file" + ("" if spec.model_type in _GGUF_TESTED else " (not tested here)")]}
                for name, spec in sorted(ARCHITECTURES.items())]
    types = {arch: t for t, arch in _REFUSED_TYPES.items()}
    refused = [{"architecture": name, "model_type": types.get(name, "-"), "reason": REFUSED[name]}
               for name in sorted(REFUSED)]
    refused.append({"architecture": "*ForConditionalGeneration", "model_type": "-",
                    "reason": refusal_reason("AnyForConditionalGeneration")})
    builtin = [{"name": name, "architecture": BUILTIN_INFO[name][0], "description": BUILTIN_INFO[name][1],
                "requirement": requirement, "installed": importlib.util.find_spec(module) is not None}
               for name, (module, _, requirement) in BUILTIN_MODELS.items()]
    return {"families": families, "refused": refused, "builtin": builtin}
