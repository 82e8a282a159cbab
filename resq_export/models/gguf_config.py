"""What a GGUF file says about the model's shape that transformers' GGUF loader does not carry into
the config it builds, put back, or refused with the reason.

transformers maps a fixed list of `<arch>.*` metadata keys per family (integrations/ggml.py). For the
families here it leaves out, as of transformers 5.25:

- `attention.key_length` (head_dim) for qwen3: its config then keeps Qwen3Config's default 128, right
  for the released Qwen3 models by coincidence and wrong for any other head size;
- `rope.dimension_count` for phi3: Phi-4-mini's RoPE on 96 of 128 channels would become full RoPE;
- every `rope.scaling.*` key and the `rope_factors_long/short` tensors: YaRN and LongRoPE would be
  read as unscaled RoPE, silently giving another model;
- `rope_freqs` (llama.cpp's per-frequency divisors, how Llama-3.1/3.2 GGUFs hold their `llama3`
  scaling): dropped as well, and the llama3 parameters cannot be recovered from it exactly.

`config_fixes` returns the settings to rebuild the config with, or raises ModelLoadError naming what
the file holds that cannot be carried over. The file's metadata is read with the gguf package's
reader (memory-mapped; tensor data is touched only for the small rope factor tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

# llama.cpp's per-frequency RoPE tensors (no ".weight" suffix in some writers' names)
_LONG, _SHORT, _FREQS = "rope_factors_long", "rope_factors_short", "rope_freqs"
# YaRN keys whose llama.cpp meaning has no one-to-one transformers field
_YARN_UNMAPPED = ("yarn_ext_factor", "yarn_attn_factor", "yarn_log_multiplier")
# families whose head size transformers' mapping leaves out, and those with RoPE on part of a head
_HEAD_DIM_UNMAPPED = {"qwen3"}
_PARTIAL_ROTARY = {"phi3"}


@dataclass
class GGUFMeta:
    arch: str  # general.architecture
    fields: dict[str, object]  # scalar and string fields (arrays left out but for the rope factor tensors)
    tensors: dict[str, list[float]]  # the rope factor tensors' values, by name without ".weight"
    tensor_names: set[str]


def read_gguf_meta(path: Path) -> GGUFMeta:
    try:
        from gguf import GGUFReader, GGUFValueType

        reader = GGUFReader(str(path), "r")
        fields = {}
        for name, field in reader.fields.items():
            if not field.types or field.types[0] == GGUFValueType.ARRAY:
                continue
            value = field.contents()
            fields[name] = value
        names = {t.name for t in reader.tensors}
        tensors = {t.name.removesuffix(".weight"): [float(x) for x in t.data.reshape(-1)] for t in reader.tensors
                   if t.name.removesuffix(".weight") in (_LONG, _SHORT)}
    except Exception as e:
        raise ModelLoadError(f"cannot read GGUF file {path}: {e}") from None
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelLoadError(f"cannot read GGUF file {path}: it has no general.architecture")
    return GGUFMeta(arch, fields, tensors, {n.removesuffix(".weight") for n in names})


_DROPPED = "transformers' GGUF loader does not carry it into the model (it would be read as another model)"


def _refuse(path: Path, what: str, why: str = _DROPPED) -> ModelLoadError:
    return ModelLoadError(f"the GGUF file {path} holds {what}: {why}; quantise the model's Hugging Face folder instead")


def config_fixes(meta: GGUFMeta, hf_config: dict, path: Path) -> dict:
    """Settings (legacy config.json keys: head_dim, partial_rotary_factor, rope_scaling, pad_token_id)
    that make transformers' config of this file the model the file describes; {} when none is needed."""
    arch, f = meta.arch, meta.fields
    key = f"{arch}."
    fixes: dict = {}
    head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // hf_config["num_attention_heads"]
    key_length = f.get(key + "attention.key_length")
    if key_length is not None and int(key_length) != head_dim:
        if arch not in _HEAD_DIM_UNMAPPED:
            raise _refuse(path, f"a head size of {key_length} (attention.key_length) where its config says {head_dim}")
        head_dim = fixes["head_dim"] = int(key_length)
    rope_dims = f.get(key + "rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != head_dim:
        if arch not in _PARTIAL_ROTARY:
            raise _refuse(path, f"RoPE on {rope_dims} of {head_dim} channels per head (rope.dimension_count)",
                          f"the {arch} family has no partial rotary, in transformers or here")
        fixes["partial_rotary_factor"] = int(rope_dims) / head_dim
    scaling = _rope_scaling(meta, hf_config, path)
    if scaling:
        fixes["rope_scaling"] = scaling
        if "original_max_position_embeddings" in hf_config or arch == "phi3":
            # Phi3Config keeps its own top-level copy (default 4096) and lets it override the scaling's
            fixes["original_max_position_embeddings"] = scaling.get("original_max_position_embeddings")
    pad = hf_config.get("pad_token_id")
    # a family default (Phi3Config's 32000) past a smaller vocabulary makes torch refuse the embedding;
    # the pad id plays no part in the logits
    if "tokenizer.ggml.padding_token_id" not in f and isinstance(pad, int) and pad >= hf_config["vocab_size"]:
        fixes["pad_token_id"] = None
    return fixes


def _rope_scaling(meta: GGUFMeta, hf_config: dict, path: Path) -> dict | None:
    f, key = meta.fields, f"{meta.arch}.rope.scaling."
    if _FREQS in meta.tensor_names:
        raise _refuse(path, "per-frequency RoPE divisors (the rope_freqs tensor: llama3-style RoPE scaling)")
    kind = f.get(key + "type")
    longrope = _LONG in meta.tensor_names or _SHORT in meta.tensor_names
    if longrope or kind == "longrope":
        return _longrope(meta, hf_config, path)
    if kind in (None, "none"):
        return None
    factor = f.get(key + "factor")
    if kind == "linear" and factor is not None:
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn" and factor is not None and key + "original_context_length" in f:
        unmapped = [k for k in _YARN_UNMAPPED if key + k in f]
        if unmapped:
            raise _refuse(path, f"YaRN settings without a transformers equivalent ({', '.join(unmapped)})")
        out = {"rope_type": "yarn", "factor": float(factor),
               "original_max_position_embeddings": int(f[key + "original_context_length"])}
        for gguf_key, hf_key in (("attn_factor", "attention_factor"), ("yarn_beta_fast", "beta_fast"),
                                 ("yarn_beta_slow", "beta_slow")):
            if key + gguf_key in f:
                out[hf_key] = float(f[key + gguf_key])
        return out
    raise _refuse(path, f"RoPE scaling of type {kind!r} without its parameters (rope.scaling.*)")


def _longrope(meta: GGUFMeta, hf_config: dict, path: Path) -> dict:
    f, key = meta.fields, f"{meta.arch}.rope.scaling."
    original = f.get(key + "original_context_length")
    if meta.arch != "phi3" or _LONG not in meta.tensors or _SHORT not in meta.tensors or original is None:
        raise _refuse(path, "LongRoPE factors for a family or in a form other than Phi-3's (rope_factors_long "
                            "and rope_factors_short tensors with rope.scaling.original_context_length)")
    out = {"rope_type": "longrope", "long_factor": meta.tensors[_LONG], "short_factor": meta.tensors[_SHORT],
           "original_max_position_embeddings": int(original)}
    # llama.cpp stores the attention factor it computed; transformers computes the same default from the
    # two context lengths, so only a different (explicitly configured) one is passed on
    stored = f.get(key + "attn_factor")
    scale = hf_config["max_position_embeddings"] / int(original)
    default = math.sqrt(1 + math.log(scale) / math.log(int(original))) if scale > 1 else 1.0
    if stored is not None and abs(float(stored) - default) > 1e-6 * default:
        out["attention_factor"] = float(stored)
    return out
