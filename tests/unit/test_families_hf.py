"""Issue 30: every family against Hugging Face transformers, on tiny random models built from each
family's own config class (tests/tiny_models.py): the RoPE types against transformers' rotary
embedding classes, the rotations-only pipeline (ResQ bases, no quantisation) against transformers'
forward, prefill and decode through the cache, and the float model's perplexity."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import SMALL, cli_per_family, run_cli
from tolerances import TRANSFORMS_ATOL_REL, TRANSFORMS_RTOL

from resq_export.artifact import load_artifact
from resq_export.decoder import Decoder, rope_inv_freq
from resq_export.models.config import ModelConfig

FAMILIES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "phi3"]

# decode: a prompt of 16, then one token at a time up to 56, past Phi-3's LongRoPE switch at 48 (the
# set is chosen per call, by its last position, in transformers and here alike)
PROMPT, TOTAL = 16, 56

_COMMON = dict(vocab_size=400, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256)

# (config class, architecture, settings): one of every RoPE type, and the optional fields of each
ROPE_CASES = {
    "default": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=500000.0)),
    "linear": ("LlamaConfig", "LlamaForCausalLM", dict(rope_scaling={"rope_type": "linear", "factor": 2.5})),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "yarn": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32, rope_theta=1e6, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})),
    "yarn-mscale-untruncated": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_scaling={
        # a ramp from channel 0.81 to 2.27: its ends rounded out (truncate) or not make a difference
        "type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128, "mscale": 0.8, "mscale_all_dim": 0.5,
        "beta_fast": 8, "beta_slow": 1.5, "truncate": False})),
    "yarn-attention-factor": ("MistralConfig", "MistralForCausalLM", dict(rope_scaling={
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128, "attention_factor": 1.3})),
    "longrope-partial": ("Phi3Config", "Phi3ForCausalLM", dict(
        partial_rotary_factor=0.75, original_max_position_embeddings=48, rope_scaling={
            "type": "longrope", "short_factor": [1.0, 1.05, 1.1, 1.3, 1.6, 2.0],
            "long_factor": [1.2, 1.5, 2.0, 3.0, 5.0, 8.0]})),
    "longrope-attention-factor": ("Phi3Config", "Phi3ForCausalLM", dict(
        original_max_position_embeddings=64, rope_scaling={
            "type": "longrope", "short_factor": [1.0] * 8, "long_factor": [float(2 + j) for j in range(8)],
            "attention_factor": 1.1})),
    "partial": ("Phi3Config", "Phi3ForCausalLM", dict(partial_rotary_factor=0.5)),
    # Phi-3-mini-128k's first config said "su": Phi3Config reads it (and "yarn") as longrope
    "phi3-su": ("Phi3Config", "Phi3ForCausalLM", dict(original_max_position_embeddings=64, rope_scaling={
        "type": "su", "short_factor": [1.0 + j / 10 for j in range(8)], "long_factor": [2.0 + j for j in range(8)]})),
}


def _hf_config(case):
    import transformers

    cls, arch, extra = ROPE_CASES[case]
    # a copy: config classes edit the rope dict they are given (Phi3Config renames "su" in place)
    return getattr(transformers, cls)(**_COMMON, **copy.deepcopy(extra)), arch


def _hf_rotary(hf_config, arch):
    """The family's own rotary embedding module of transformers."""
    import importlib

    family = hf_config.model_type
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    return getattr(module, arch.removesuffix("ForCausalLM") + "RotaryEmbedding")(hf_config)


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rope_equals_transformers(case):
    """cos and sin (the frequencies, the attention factor, the rotary part, LongRoPE's per-call
    switch) equal transformers' rotary embedding of the same config, at a short and a long call;
    the non-default types' frequencies equal ROPE_INIT_FUNCTIONS' bit for bit or within a rounding."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config, arch = _hf_config(case)
    saved = {**hf_config.to_dict(), "architectures": [arch]}  # transformers 5's config.json: rope_parameters
    ours = ModelConfig.from_hf(saved)
    extra = ROPE_CASES[case][2]
    if "rope_scaling" in extra:  # the same as the hub's older config.json files say it: rope_scaling, rope_theta
        older = {k: v for k, v in saved.items() if k != "rope_parameters"}
        older.update(rope_scaling=extra["rope_scaling"], rope_theta=hf_config.rope_parameters["rope_theta"])
        assert ModelConfig.from_hf(older) == ours
    shell = Decoder(ours, torch.empty(0, ours.hidden_size), [], None)
    rotary = _hf_rotary(hf_config, arch)
    for length in (40, 100):  # below and past the original context of the scaled types
        positions = torch.arange(length)[None]
        cos, sin = shell.rope(positions)
        hf_cos, hf_sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
        assert cos.shape[-1] == hf_cos.shape[-1] == ours.rope_dim
        # transformers forms the angles in float32 (an error up to about position x 2^-23), ours in float64
        atol = 2e-7 * length
        torch.testing.assert_close(cos[:, 0], hf_cos, rtol=0, atol=atol)
        torch.testing.assert_close(sin[:, 0], hf_sin, rtol=0, atol=atol)
    kind = hf_config.rope_parameters["rope_type"]
    if kind != "default":
        for seq_len, long in ((None, False), (10**6, True)):
            inv_freq, factor = ROPE_INIT_FUNCTIONS[kind](hf_config, "cpu", seq_len=seq_len)
            torch.testing.assert_close(rope_inv_freq(ours, long=long), inv_freq.float(), rtol=2e-7, atol=0)
            assert shell.rope_scale == pytest.approx(factor, rel=1e-12)


@pytest.fixture(scope="module")
def rotations_only(tiny_dirs, calib_file, tmp_path_factory):
    """family -> the ResQ artifact with every basis and online rotation and nothing quantised."""
    return cli_per_family("quantize", FAMILIES, tiny_dirs, tmp_path_factory.mktemp("rotations_only"),
                          "--calib-data", calib_file, *SMALL, "--method", "resq", "--w-bits", "16", "--a-bits", "16",
                          "--kv-bits", "16")


def _hf(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _hf_steps(hf, ids):
    """transformers' logits of ids[:, :PROMPT] then of each later token, through its own cache."""
    out = hf(ids[:, :PROMPT], use_cache=True)
    steps, past = [out.logits], out.past_key_values
    for t in range(PROMPT, ids.shape[1]):
        out = hf(ids[:, t:t + 1], cache=past, use_cache=True)
        steps.append(out.logits)
        past = out.past_key_values
    return torch.cat(steps, 1)


def _close(ours, ref):
    torch.testing.assert_close(ours, ref, rtol=TRANSFORMS_RTOL, atol=TRANSFORMS_ATOL_REL * float(ref.abs().max()))


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_rotations_only_pipeline_gives_transformers_logits(rotations_only, tiny_dirs, family):
    """ResQ's rotations without quantisation (U_A, U_B, U_C online, U_D online, the o_proj permutation,
    norms folded; Qwen3's q/k norms kept per head) are exact in real arithmetic: the artifact's
    reference executor gives transformers' logits up to float32 rounding (TRANSFORMS_*), for the
    whole sequence at once and decoding through the cache."""
    model, quant, _ = load_artifact(rotations_only[family])
    assert not quant.quantizes_weights and model.layers[0].key_rotation is not None
    assert (model.layers[0].q_norm is not None) == (family == "qwen3")
    hf = _hf(tiny_dirs[family])
    ids = torch.randint(0, 400, (2, TOTAL), generator=torch.Generator().manual_seed(3))
    _close(model(ids), hf(ids).logits)
    cache = model.new_cache()
    ours = [model(ids[:, :PROMPT], cache)] + [model(ids[:, t:t + 1], cache) for t in range(PROMPT, TOTAL)]
    _close(torch.cat(ours, 1), _hf_steps(hf, ids))


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_float_perplexity_equals_transformers(tiny_dirs, family):
    """`resq-export eval --model` (the float model read layer by layer) against transformers on the
    same windows (64 tokens: Phi-3's long factors)."""
    from resq_export.calib.data import evaluation_windows
    from resq_export.models.loader import open_model
    from resq_export.validate.layerwise import float_layers
    from resq_export.validate.ppl import perplexity

    src = open_model(tiny_dirs[family])
    windows = evaluation_windows(src.tokenizer, [], 64, 512)
    ours = perplexity(float_layers(src), windows)["ppl"]
    logits = _hf(tiny_dirs[family])(windows).logits
    nll = [F.cross_entropy(lg[:-1], w[1:]).item() for lg, w in zip(logits, windows)]
    assert ours == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)


def test_models_lists_new_families_and_refusals():
    import json

    listed = json.loads(run_cli("models", "--json").output)
    by_name = {f["architecture"]: f for f in listed["families"]}
    assert any("q/k RMSNorm" in x for x in by_name["Qwen3ForCausalLM"]["features"])
    assert any("fused qkv_proj" in x for x in by_name["Phi3ForCausalLM"]["features"])
    assert {"yarn", "longrope"} <= set(by_name["Phi3ForCausalLM"]["rope_types"])
    refused = {f["architecture"]: f["reason"] for f in listed["refused"]}
    assert "mixture-of-experts" in refused["Qwen3MoeForCausalLM"] and "post-norms" in refused["Gemma2ForCausalLM"]
    text = run_cli("models").output
    assert "refused, with the reason:" in text and "Olmo2ForCausalLM" in text


@pytest.mark.parametrize("preset", ["qwen3-8b", "phi4-mini"])
@torch.inference_mode()
def test_make_model_presets_write_what_transformers_and_we_read_alike(preset, tiny_dirs, tmp_path):
    """tools/make_model.py's Qwen3-8B and Phi-4-mini presets, every setting kept but the sizes shrunk:
    transformers reads the folder (q/k norms, fused projections, partial rotary, LongRoPE) and our
    decoder gives its logits, below and past the LongRoPE switch."""
    import sys
    from pathlib import Path

    from tolerances import FLOAT_VS_HF

    from resq_export.models.loader import load_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from make_model import ARCHS, PRESETS, make_model

    shape = {**PRESETS[preset], "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 96, "vocab": 400}
    if "head_dim" in shape:
        shape["head_dim"] = 32
    if "longrope_original" in shape:
        shape.update(longrope_original=48, max_position=256)
    folder = make_model(tmp_path / preset, shape, "fp32", tokenizer_dir=tiny_dirs["llama"], log=lambda *_: None)
    hf = _hf(folder)
    ours = load_model(folder).decoder
    assert ours.config.architecture == ARCHS[PRESETS[preset]["arch"]][0]
    assert ours.config.rope_dim == int(ours.config.head_dim * shape.get("partial_rotary", 1.0))
    assert ours.config.qk_norm == (shape["arch"] == "qwen3") and ours.config.head_dim == shape.get("head_dim", 16)
    assert ours.long_after == shape.get("longrope_original")
    for n in (40, 64):
        ids = torch.randint(0, 400, (1, n), generator=torch.Generator().manual_seed(n))
        torch.testing.assert_close(ours(ids), hf(ids).logits, **FLOAT_VS_HF)
