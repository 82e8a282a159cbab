"""Write a random-weight Hugging Face model folder of any Llama / Qwen2 / Qwen3 / Phi-3 shape, for tests
and benchmarks.

    python tools/make_model.py --preset llama3-8b --out /data/llama3-8b-random
    python tools/make_model.py --preset qwen3-8b --out /data/qwen3-8b-random
    python tools/make_model.py --preset phi4-mini --out /data/phi4-mini-random
    python tools/make_model.py --hidden 256 --layers 4 --heads 8 --kv-heads 2 --intermediate 768 --out tiny/

The folder has config.json, sharded safetensors (bf16 by default) with model.safetensors.index.json,
and a tokenizer (copied from another HF folder, the built-in SmolLM2 one by default). Tensors are
generated and written one shard at a time, so memory stays near one shard whatever the model size.

Weights: N(0, 0.02) everywhere, output projections (o_proj, down_proj) scaled by 1/sqrt(2 * layers)
(GPT-2's residual scaling) so the residual stream stays sane through deep stacks; norms 1 (Qwen3's
per-head q/k norms too); Qwen2's q/k/v biases N(0, 0.02). Phi-3 writes its fused qkv_proj and
gate_up_proj. Seeded per tensor name, so a tensor does not depend on the shard size.

The Phi-4-mini preset's LongRoPE factors are made up (short 1.0, long rising from 1 to 40 over the
frequencies): the real model's published lists are not at hand, and with random weights only their
shape (48 each, for a rotary part of 96 of 128 channels) matters.

When the tokenizer's vocabulary is smaller than --vocab (e.g. SmolLM2's 49152 inside a 128256-row
Llama-3 embedding), the extra rows exist and are simply never indexed by that tokenizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resq_export.fileio import atomic_directory

PRESETS = {
    # Llama-3-8B: 8.03 B parameters, ~16 GB in bf16.
    "llama3-8b": {"arch": "llama", "hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336,
                  "vocab": 128256, "tied": False, "rope_theta": 500000.0},
    # Llama-3.2-1B: 1.24 B parameters (tied embedding), ~2.5 GB in bf16.
    "llama3.2-1b": {"arch": "llama", "hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "intermediate": 8192,
                    "vocab": 128256, "tied": True, "rope_theta": 500000.0},
    "qwen2.5-0.5b": {"arch": "qwen2", "hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864,
                     "vocab": 151936, "tied": True, "rope_theta": 1000000.0},
    # Qwen3-8B: 8.19 B parameters, ~16.4 GB in bf16; per-head q/k norms, head_dim 128 given explicitly.
    "qwen3-8b": {"arch": "qwen3", "hidden": 4096, "layers": 36, "heads": 32, "kv_heads": 8, "head_dim": 128,
                 "intermediate": 12288, "vocab": 151936, "tied": False, "rope_theta": 1000000.0,
                 "max_position": 40960},
    # Phi-4-mini: 3.84 B parameters (tied embedding), ~7.7 GB in bf16; fused projections, RoPE on 3/4 of
    # each head, LongRoPE from 4096 to 131072 positions.
    "phi4-mini": {"arch": "phi3", "hidden": 3072, "layers": 32, "heads": 24, "kv_heads": 8, "intermediate": 8192,
                  "vocab": 200064, "tied": True, "rope_theta": 10000.0, "partial_rotary": 0.75,
                  "max_position": 131072, "longrope_original": 4096},
}
ARCHS = {"llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2"),
         "qwen3": ("Qwen3ForCausalLM", "qwen3"), "phi3": ("Phi3ForCausalLM", "phi3")}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def head_dim(s: dict) -> int:
    return s.get("head_dim") or s["hidden"] // s["heads"]


def tensor_specs(s: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, kind) in checkpoint order; kind picks the initialiser."""
    hd = head_dim(s)
    h, inter = s["hidden"], s["intermediate"]
    nq, nkv = s["heads"] * hd, s["kv_heads"] * hd
    out = [("model.embed_tokens.weight", (s["vocab"], h), "w")]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (h,), "norm"))
        if s["arch"] == "phi3":  # fused: q, k, v rows; gate, up rows
            out.append((p + "self_attn.qkv_proj.weight", (nq + 2 * nkv, h), "w"))
        else:
            out += [(p + "self_attn.q_proj.weight", (nq, h), "w"), (p + "self_attn.k_proj.weight", (nkv, h), "w"),
                    (p + "self_attn.v_proj.weight", (nkv, h), "w")]
        if s["arch"] == "qwen3":
            out += [(p + "self_attn.q_norm.weight", (hd,), "norm"), (p + "self_attn.k_norm.weight", (hd,), "norm")]
        out += [(p + "self_attn.o_proj.weight", (h, nq), "out"), (p + "post_attention_layernorm.weight", (h,), "norm")]
        if s["arch"] == "phi3":
            out.append((p + "mlp.gate_up_proj.weight", (2 * inter, h), "w"))
        else:
            out += [(p + "mlp.gate_proj.weight", (inter, h), "w"), (p + "mlp.up_proj.weight", (inter, h), "w")]
        out.append((p + "mlp.down_proj.weight", (h, inter), "out"))
        if s["arch"] == "qwen2":
            out += [(p + f"self_attn.{x}_proj.bias", (n * hd,), "bias")
                    for x, n in (("q", s["heads"]), ("k", s["kv_heads"]), ("v", s["kv_heads"]))]
    out.append(("model.norm.weight", (h,), "norm"))
    if not s["tied"]:
        out.append(("lm_head.weight", (s["vocab"], h), "w"))
    return out


def make_tensor(name: str, shape: tuple[int, ...], kind: str, s: dict, seed: int, dtype: torch.dtype) -> torch.Tensor:
    if kind == "norm":
        return torch.ones(shape, dtype=dtype)
    name_seed = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1
    gen = torch.Generator().manual_seed(name_seed)
    std = 0.02 / math.sqrt(2 * s["layers"]) if kind == "out" else 0.02
    t = torch.empty(shape, dtype=dtype)
    # Row blocks keep the float32 temporary small for the big embedding and MLP matrices.
    rows = max(1, (1 << 24) // max(1, t[0].numel())) if t.dim() > 1 else shape[0]
    for a in range(0, shape[0], rows):
        b = min(a + rows, shape[0])
        t[a:b] = (torch.randn((b - a, *shape[1:]), generator=gen) * std).to(dtype)
    return t


def hf_config(s: dict, dtype: str, tokenizer_dir: Path) -> dict:
    arch, model_type = ARCHS[s["arch"]]
    src_cfg = json.loads((tokenizer_dir / "config.json").read_text()) if (tokenizer_dir / "config.json").is_file() else {}
    cfg = {
        "architectures": [arch], "model_type": model_type,
        "hidden_size": s["hidden"], "intermediate_size": s["intermediate"], "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"], "vocab_size": s["vocab"],
        "head_dim": head_dim(s), "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "rope_theta": s["rope_theta"], "max_position_embeddings": s.get("max_position", 8192),
        "tie_word_embeddings": s["tied"], "torch_dtype": {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype],
        "bos_token_id": src_cfg.get("bos_token_id"), "eos_token_id": src_cfg.get("eos_token_id"),
        "attention_bias": False, "mlp_bias": False,
        "_generator": "resq-export tools/make_model.py (random weights)",
    }
    if s["arch"] == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=None, attention_bias=True)
    if s["arch"] == "qwen3":
        cfg.update(use_sliding_window=False, sliding_window=None, rms_norm_eps=1e-6)
    if s["arch"] == "phi3":
        half = int(head_dim(s) * s.get("partial_rotary", 1.0)) // 2
        # pad_token_id written (the tokenizer's, or none): Phi3Config's default 32000 is outside most vocabularies
        cfg.update(partial_rotary_factor=s.get("partial_rotary", 1.0), sliding_window=None,
                   pad_token_id=src_cfg.get("pad_token_id"), original_max_position_embeddings=s["longrope_original"],
                   rope_scaling={"type": "longrope", "short_factor": [1.0] * half,
                                 "long_factor": [round(1 + 39 * (j / max(half - 1, 1)) ** 2, 4) for j in range(half)]})
    return cfg


def default_tokenizer_dir() -> Path:
    from resq_export.models.loader import _builtin_folder

    return _builtin_folder("smollm2-135m")


def make_model(out: Path, s: dict, dtype: str = "bf16", shard_gb: float = 2.0, seed: int = 0,
               tokenizer_dir: Path | None = None, log=print) -> Path:
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    specs = tensor_specs(s)
    tdtype = DTYPES[dtype]
    itemsize = torch.empty((), dtype=tdtype).element_size()
    # Plan the shards first (the index needs their count in every file name).
    shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
    size = 0
    for spec in specs:
        nbytes = math.prod(spec[1]) * itemsize
        if shards[-1] and size + nbytes > shard_gb * 2**30:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    from safetensors.torch import save_file

    total = sum(math.prod(sp[1]) * itemsize for sp in specs)
    weight_map = {}
    with atomic_directory(Path(out)) as tmp:
        for n, shard in enumerate(shards):
            fname = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
            tensors = {name: make_tensor(name, shape, kind, s, seed, tdtype) for name, shape, kind in shard}
            save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in tensors})
            del tensors
            log(f"wrote {fname} ({n + 1}/{len(shards)})")
        (tmp / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(hf_config(s, dtype, tokenizer_dir), indent=2))
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                  "vocab.json", "merges.txt"):
            if (tokenizer_dir / f).is_file():
                shutil.copy(tokenizer_dir / f, tmp / f)
    log(f"wrote {out}: {sum(math.prod(sp[1]) for sp in specs) / 1e9:.2f} B parameters, "
        f"{total / 2**30:.2f} GiB in {len(shards)} shards")
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--arch", choices=[a for a in sorted(ARCHS) if a != "phi3"], default="llama",
                   help="Without --preset (a Phi-3 shape needs a preset's LongRoPE settings).")
    for flag in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab"):
        p.add_argument(f"--{flag}", type=int)
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--rope-theta", type=float)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--shard-gb", type=float, default=2.0, help="Largest shard size in GiB [2].")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer-from", type=Path, help="HF folder whose tokenizer files are copied [built-in SmolLM2].")
    a = p.parse_args(argv)
    s = dict(PRESETS[a.preset]) if a.preset else {"arch": a.arch, "tied": False, "rope_theta": 10000.0, "vocab": 49152}
    for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "tied", "rope_theta"):
        if getattr(a, key) is not None:
            s[key] = getattr(a, key)
    if not a.preset and a.arch:
        s["arch"] = a.arch
    missing = [k for k in ("hidden", "layers", "heads", "kv_heads", "intermediate") if k not in s]
    if missing:
        p.error(f"give --preset or all of: {', '.join('--' + m.replace('_', '-') for m in missing)}")
    make_model(a.out, s, a.dtype, a.shard_gb, a.seed, a.tokenizer_from)


if __name__ == "__main__":
    main()
