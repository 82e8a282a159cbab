"""GGUF input for Qwen3 and Phi-3 (issue 30): a float32 GGUF written here from the tiny random HF
models (tests/tiny_models.py) with the metadata keys and tensor names llama.cpp uses for these
families, read through transformers' GGUF loader plus resq_export/models/gguf_config.py, gives the
same model as the safetensors folder. What the GGUF path cannot carry over is refused with the reason.

The writer below is a stand-in for llama.cpp's converter (not installed here), written from the gguf
package's key and tensor-name tables: float32 tensors, no quantisation, no q/k row permutation (llama.cpp
permutes only the llama family's, and the llama GGUF here is used only for a refusal)."""

import json
import math
import re

import numpy as np
import pytest
import torch
from tiny_models import SMALL, run_cli
from tolerances import TRANSFORMS_ATOL_REL, TRANSFORMS_RTOL

from resq_export.artifact import load_artifact
from resq_export.errors import ModelLoadError
from resq_export.models.loader import load_model

FAMILIES = ["qwen3", "phi3"]
ROTATIONS_ONLY = ["--method", "resq", "--w-bits", "16", "--a-bits", "16", "--kv-bits", "16"]


def write_gguf(folder, out, edit=None):
    """The HF folder as a float32 GGUF file. edit(writer, tensors) may add or change metadata and
    tensors before the file is written (for the refusals)."""
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(folder))
    rope = dict(cfg.rope_parameters)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(out), cfg.model_type)
    w.add_name(folder.name)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    w.add_vocab_size(cfg.vocab_size)
    tensors = {}
    kind = rope.get("rope_type", "default")
    if kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    elif kind == "longrope":  # Phi-3: the factors as two tensors, the attention factor computed
        original = rope["original_max_position_embeddings"]
        scale = cfg.max_position_embeddings / original
        w.add_rope_scaling_orig_ctx_len(original)
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
        tensors["rope_factors_long.weight"] = np.asarray(rope["long_factor"], np.float32)
        tensors["rope_factors_short.weight"] = np.asarray(rope["short_factor"], np.float32)
    # the byte-level BPE tokenizer as llama.cpp's "gpt2" tokenizer model: tokens by id, merges, types
    tok = json.loads((folder / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(sorted(vocab, key=vocab.get))
    w.add_token_types([int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
                       for i in range(len(vocab))])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    w.add_bos_token_id(min(special))
    w.add_eos_token_id(min(special))
    w.add_add_bos_token(tok.get("post_processor") is not None)  # the HF tokenizer prepends <s>
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == cfg.model_type)
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    for name, t in load_file(str(folder / "model.safetensors")).items():
        base, suffix = name.rsplit(".", 1)
        tensors[names.get_name(base) + "." + suffix] = t.astype(np.float32)
    if edit:
        edit(w, tensors)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def gguf_files(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {family: write_gguf(tiny_dirs[family], root / f"{family}.gguf") for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_gguf_reads_as_the_safetensors_model(gguf_files, tiny_dirs, family):
    """The float model from the GGUF file: Qwen3's head size and per-head norms, YaRN, Phi-3's fused
    projections, partial rotary and LongRoPE as the folder's, and the same logits below and past
    the LongRoPE switch (float32 storage of the norm epsilon and the LongRoPE factors: the only
    differences, and they leave these logits bit-equal), the same tokens."""
    ours, ref = load_model(gguf_files[family]), load_model(tiny_dirs[family])
    a, b = ours.decoder.config, ref.decoder.config
    assert (a.head_dim, a.rotary_dim, a.qk_norm, a.tie_word_embeddings) == \
        (b.head_dim, b.rotary_dim, b.qk_norm, b.tie_word_embeddings)
    assert a.rope_scaling.keys() == b.rope_scaling.keys()
    for key, value in b.rope_scaling.items():  # numbers stored as float32 in the file
        assert a.rope_scaling[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-7)), key
    for n in (40, 64):
        ids = torch.randint(0, 400, (1, n), generator=torch.Generator().manual_seed(n))
        torch.testing.assert_close(ours.decoder(ids), ref.decoder(ids), rtol=0, atol=0)
    text = "The history of the city"
    assert ours.tokenizer(text)["input_ids"] == ref.tokenizer(text)["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_gguf_rotations_only_logits_equal_the_safetensors_path(gguf_files, tiny_dirs, calib_file, tmp_path, family):
    """`quantize` with ResQ's rotations and nothing quantised, from the GGUF file and from the folder:
    the two artifacts' reference executors give the same logits (up to float32 rounding, TRANSFORMS_*:
    the bases come from calibration statistics of models that differ only in the stored epsilon)."""
    logits = []
    for name, source in (("gguf", gguf_files[family]), ("hf", tiny_dirs[family])):
        result = run_cli("quantize", "--model", source, "--out", tmp_path / name, "--calib-data", calib_file,
                         *SMALL, *ROTATIONS_ONLY)
        assert result.exit_code == 0, result.output
        model, _, _ = load_artifact(tmp_path / name)
        logits.append(model(torch.randint(0, 400, (2, 56), generator=torch.Generator().manual_seed(3))))
    torch.testing.assert_close(logits[0], logits[1], rtol=TRANSFORMS_RTOL,
                               atol=TRANSFORMS_ATOL_REL * float(logits[1].abs().max()))


def _add_rope_freqs(w, tensors):
    tensors["rope_freqs.weight"] = np.ones(8, np.float32)


def _half_rotary(w, tensors):  # a second rope.dimension_count: the writer's own comes first and is replaced
    w.kv_data[0][f"{w.arch}.rope.dimension_count"].value = 16


def _yarn_ext_factor(w, tensors):
    w.add_rope_scaling_yarn_ext_factor(1.0)


def _longrope_in_qwen3(w, tensors):
    tensors["rope_factors_long.weight"] = np.ones(16, np.float32)
    tensors["rope_factors_short.weight"] = np.ones(16, np.float32)


def _yarn_without_factor(w, tensors):
    del w.kv_data[0][f"{w.arch}.rope.scaling.factor"]


REFUSALS = {
    "llama3-rope-freqs": ("llama", _add_rope_freqs, "per-frequency RoPE divisors (the rope_freqs tensor"),
    "partial-rotary-qwen3": ("qwen3", _half_rotary, "RoPE on 16 of 32 channels per head (rope.dimension_count): "
                                                    "the qwen3 family has no partial rotary"),
    "yarn-ext-factor": ("qwen3", _yarn_ext_factor, "YaRN settings without a transformers equivalent (yarn_ext"),
    "longrope-qwen3": ("qwen3", _longrope_in_qwen3, "LongRoPE factors for a family or in a form other than"),
    "yarn-without-factor": ("qwen3", _yarn_without_factor, "RoPE scaling of type 'yarn' without its parameters"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_the_gguf_path_cannot_carry_is_refused(case, tiny_dirs, tmp_path):
    """What the GGUF path cannot serve (metadata transformers' GGUF loader drops, or a setting the family
    does not have): the loader refuses, naming it, before any tensor is dequantised; the CLI says it in
    one line, exit 1, nothing written."""
    family, edit, said = REFUSALS[case]
    path = write_gguf(tiny_dirs[family], tmp_path / "m.gguf", edit)
    with pytest.raises(ModelLoadError, match=re.escape(said)):
        load_model(path)
    result = run_cli("quantize", "--model", path, "--out", tmp_path / "art", *SMALL)
    assert result.exit_code == 1 and result.output.startswith("error: the GGUF file ")
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
