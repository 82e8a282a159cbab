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
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    cfg.pop("rope_parameters", None)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="yarn"):
        load_model(d)


def test_corrupt_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        load_model(bad)
