import json
import shutil

import pytest
import torch
from tiny_models import FAMILIES
from tolerances import FLOAT_VS_HF

from resq_export.errors import ModelLoadError
from resq_export.models.loader import load_model


def _hf_logits(folder, ids):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(ids).logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_decoder_matches_transformers(tiny_dirs, family):
    loaded = load_model(tiny_dirs[family])
    ids = torch.randint(0, 400, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = loaded.decoder(ids)
    ref = _hf_logits(tiny_dirs[family], ids)
    torch.testing.assert_close(ours, ref, **FLOAT_VS_HF)


def test_kv_cache_decode_equals_full_forward(tiny_dirs):
    model = load_model(tiny_dirs["qwen2"]).decoder
    ids = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(2))
    full = model(ids)
    cache = model.new_cache()
    steps = [model(ids[:, :16], cache)] + [model(ids[:, t:t + 1], cache) for t in range(16, 24)]
    torch.testing.assert_close(torch.cat(steps, 1), full, **FLOAT_VS_HF)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_unknown_architecture_lists_supported(tiny_dirs, tmp_path):
    d = _copy(tiny_dirs["llama"], tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel.*LlamaForCausalLM.*Qwen2ForCausalLM"):
        load_model(d)


def test_missing_and_corrupt_files(tiny_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope")
    d = _copy(tiny_dirs["llama"], tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no .safetensors"):
        load_model(d)
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(d)


def test_shape_mismatch_is_reported(tiny_dirs, tmp_path):
    d = _copy(tiny_dirs["llama"], tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(d)


def test_unsupported_rope_type(tiny_dirs, tmp_path):
    d = _copy(tiny_dirs["llama"], tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "dynamic", "factor": 4.0}  # NTK-aware dynamic scaling: not read
    cfg.pop("rope_parameters", None)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="'dynamic' is not supported; supported: .*yarn, longrope"):
        load_model(d)


def test_corrupt_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        load_model(bad)


@pytest.mark.parametrize("field, value, said", [
    ("hidden_size", "64", "\"hidden_size\" must be a positive integer, not '64' (a string)"),
    ("num_attention_heads", 0, "\"num_attention_heads\" must be a positive integer, not 0"),
    ("num_hidden_layers", True, "\"num_hidden_layers\" must be a positive integer, not True (true/false)"),
    ("vocab_size", 400.0, "\"vocab_size\" must be a positive integer, not 400.0 (a number)"),
    ("num_key_value_heads", -2, "\"num_key_value_heads\" must be a positive integer, not -2"),
    ("rms_norm_eps", 0, "\"rms_norm_eps\" must be a positive number, not 0"),
    ("rope_theta", "1e4", "\"rope_theta\" must be a positive number, not '1e4' (a string)"),
    ("num_attention_heads", 5, "\"num_attention_heads\" 5 is not a multiple of \"num_key_value_heads\" 2"),
    ("head_dim", 15, "\"head_dim\" 15 must be even for RoPE"),
])
def test_config_values_are_checked_before_the_tokenizer(tiny_dirs, tmp_path, field, value, said):
    """Item 14: the file and the field, not the tokenizer's division by zero. The tokenizer files are
    taken away: a refusal that came after loading the tokenizer would name them instead."""
    d = shutil.copytree(tiny_dirs["llama"], tmp_path / "m", ignore=shutil.ignore_patterns("tokenizer*"))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert str(e.value) == f"{d / 'config.json'}: {said}"


def test_null_optional_fields_are_defaults(tiny_dirs, tmp_path):
    """HF writes null for an unset num_key_value_heads / head_dim: that is not a bad value."""
    from resq_export.models.config import ModelConfig

    cfg = json.loads((tiny_dirs["llama"] / "config.json").read_text())
    parsed = ModelConfig.from_hf({**cfg, "num_key_value_heads": None, "head_dim": None})
    assert parsed.num_kv_heads == parsed.num_heads == 4 and parsed.head_dim == 16


def test_gguf_header_is_checked_first(tmp_path):
    from resq_export.models.checks import check_gguf_header

    for data, said in [(b"GGUF\x03\x00\x00\x00", "not a valid GGUF file (truncated: 8 bytes"),
                       (b"", "truncated: 0 bytes"), (b"PK\x03\x04" + bytes(40), "does not start with the bytes 'GGUF'")]:
        f = tmp_path / "m.gguf"
        f.write_bytes(data)
        with pytest.raises(ModelLoadError, match=said.replace("(", r"\(")):
            check_gguf_header(f)
    f.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))  # a whole header: left to the parser
    check_gguf_header(f)


def test_cache_probe_leaves_nothing_behind(tmp_path, monkeypatch):
    from resq_export.models.checks import check_cache_writable

    monkeypatch.delenv("RESQ_EXPORT_CACHE", raising=False)
    check_cache_writable(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir() and list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelLoadError, match=r"the cache .*file/c is not writable \(Not a directory\)"):
        check_cache_writable(tmp_path / "file" / "c")
    assert (tmp_path / "file").read_text() == "x"
