"""What `resq-export models` lists: the families of the ArchSpec registry and the built-in models,
with what each takes."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .arch import _MODEL_TYPES, ARCHITECTURES
from .config import SUPPORTED_ROPE_TYPES
from .loader import BUILTIN_INFO, BUILTIN_MODELS


def catalog(methods: Sequence[str]) -> dict:
    model_types = {arch: t for t, arch in _MODEL_TYPES.items()}
    families = [{"architecture": name, "model_type": model_types.get(name, "-"),
                 "qkv_bias": "always" if spec.qkv_bias_always else "as config.json's attention_bias says",
                 "rope_types": list(SUPPORTED_ROPE_TYPES), "methods": list(methods),
                 "sources": ["Hugging Face folder (safetensors)", ".gguf file"]}
                for name, spec in sorted(ARCHITECTURES.items())]
    builtin = [{"name": name, "architecture": BUILTIN_INFO[name][0], "description": BUILTIN_INFO[name][1],
                "requirement": requirement, "installed": importlib.util.find_spec(module) is not None}
               for name, (module, _, requirement) in BUILTIN_MODELS.items()]
    return {"families": families, "builtin": builtin}
