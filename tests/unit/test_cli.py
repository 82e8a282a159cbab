"""The CLI end to end on tiny random models, through click's test runner."""

import json
import shutil

import click
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from resq_export.artifact import load_artifact
from resq_export.cli import main

from tiny_models import SMALL, run_cli as _run


def test_artifact_contents(artifacts):
    tensors = load_file(str(artifacts["resq"] / "model.safetensors"))
    assert tensors["layers.0.attn_qkv.qweight_low"].dtype == torch.int8
    assert tensors["layers.0.attn_qkv.qweight_low"].shape == (128, 28)  # 56 4-bit channels, two per byte
    assert tensors["layers.0.attn_qkv.qweight_high"].shape == (128, 8)
    assert tensors["layers.0.attn_o.wscale"].shape == (64, 8)  # 4 heads x (low, high)
    assert tensors["embed"].dtype == torch.float16
    assert "layers.1.key_rotation" in tensors and tensors["down_rotation.left"].shape == (12, 12)
    manifest = json.loads((artifacts["resq"] / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["source_model"]["sha256"]) == 64
    assert "lqer_a" not in " ".join(tensors)
    lqer = load_file(str(artifacts["resq_lqer"] / "model.safetensors"))
    assert lqer["layers.0.mlp_down.lqer_a"].shape == (4, 96)
    assert load_file(str(artifacts["fp"] / "model.safetensors"))["layers.0.attn_qkv.weight"].dtype == torch.float32


def test_same_seed_gives_identical_tensors(tiny_dirs, calib_file, artifacts, tmp_path):
    result = _run("quantize", "--model", tiny_dirs["llama"], "--out", tmp_path / "again",
                  "--calib-data", calib_file, *SMALL)
    assert result.exit_code == 0, result.output
    a = load_file(str(artifacts["resq"] / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["resq", "resq_lqer", "quarot", "rtn", "lqer", "fp"])
def test_eval_json(artifacts, calib_file, tmp_path, name):
    # on a copy: eval records its result in the artifact (evaluations.json), and the session's shared
    # artifacts must stay as quantize wrote them for the tests that copy them later
    art = shutil.copytree(artifacts[name], tmp_path / "art")
    result = _run("eval", "--artifact", art, "--text", calib_file, "--seqlen", "64",
                  "--max-tokens", "256", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tokens"] == 256 and report["windows"] == 4 and 1.0 < report["ppl"] < 1e4


def test_quantised_decode_equals_recomputation(artifacts):
    """Prefill + token-by-token decode through the 4+8-bit KV cache equals one full forward."""
    model, quant, _ = load_artifact(artifacts["resq"])
    assert model.kv_quantizer is not None and model.kv_quantizer.bits == (4, 8)
    ids = torch.randint(0, 400, (1, 20), generator=torch.Generator().manual_seed(0))
    full = model(ids)
    cache = model.new_cache()
    steps = [model(ids[:, :12], cache)] + [model(ids[:, t:t + 1], cache) for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
    # stored as the ONNX contract: 4-bit codes two per byte (ops.json's C bytes per row), uint8 zero points
    assert cache.keys[0][0].dtype == torch.uint8 and cache.keys[0][0].shape[-1] == model.kv_quantizer.row_bytes
    assert cache.keys[0][2].dtype == torch.uint8


def test_eval_float_model(tiny_dirs, calib_file):
    result = _run("eval", "--model", tiny_dirs["llama"], "--text", calib_file, "--seqlen", "64",
                  "--max-tokens", "128", "--json", "--quiet")
    assert result.exit_code == 0 and json.loads(result.output)["method"] == "fp"


@pytest.mark.parametrize("args,message", [
    (["--w-bits", "3"], "unsupported weight bit width 3"),
    (["--a-bits", "6"], "unsupported activation bit width 6"),
    (["--kv-bits", "2"], "unsupported KV-cache bit width 2"),
    (["--high-bits", "6"], "unsupported high-precision bit width 6"),
    (["--group-size", "24"], "do not split into groups of 24"),
])
def test_bad_settings_fail_cleanly(tiny_dirs, calib_file, tmp_path, args, message):
    result = CliRunner().invoke(main, ["quantize", "--model", str(tiny_dirs["llama"]), "--out",
                                       str(tmp_path / "out"), "--calib-data", str(calib_file), *SMALL, *args])
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_bad_inputs_fail_cleanly(tiny_dirs, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    for args, message in [
        (["--model", str(bad)], "unsupported architecture 'BertModel'"),
        (["--model", str(tmp_path / "missing")], "not found"),
        (["--model", str(tiny_dirs["llama"]), "--calib-data", str(tmp_path / "none.txt")], "none.txt"),
        (["--model", str(tiny_dirs["llama"]), "--nsamples", "10000"], "tokens"),
    ]:
        result = CliRunner().invoke(main, ["quantize", "--out", str(tmp_path / "out"), "--quiet", *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "out").exists()


def test_corrupt_or_foreign_artifact_is_refused(artifacts, tmp_path):

    art = shutil.copytree(artifacts["rtn"], tmp_path / "art")
    data = bytearray((art / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (art / "model.safetensors").write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art), "--quiet"])
    assert result.exit_code == 1 and "corrupt" in result.output
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (art / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art), "--quiet"])
    assert result.exit_code == 1 and "schema version 99" in result.output
    result = CliRunner().invoke(main, ["eval", "--artifact", str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and "not a resq-export artifact" in result.output


def test_artifact_missing_a_tensor_or_unreadable_is_refused(artifacts, tmp_path):
    """Past the sha256 check (verify=False), the loader still names a missing tensor and refuses a
    file safetensors cannot read: it reads tensors one by one as the decoder is built."""

    from safetensors.torch import save_file

    from resq_export.errors import ArtifactError

    art = shutil.copytree(artifacts["resq"], tmp_path / "art")
    tensors = load_file(str(art / "model.safetensors"))
    del tensors["layers.1.mlp_down.wscale"]
    save_file(tensors, str(art / "model.safetensors"))
    with pytest.raises(ArtifactError, match="lacks the tensor layers.1.mlp_down.wscale"):
        load_artifact(art, verify=False)
    (art / "model.safetensors").write_bytes(b"\x08" + bytes(64))
    with pytest.raises(ArtifactError, match="cannot read .*model.safetensors"):
        load_artifact(art, verify=False)


def test_fp_artifact_equals_the_source_model(artifacts, tiny_dirs):
    from resq_export.models.loader import load_model

    model, _, _ = load_artifact(artifacts["fp"])
    source = load_model(tiny_dirs["qwen2"]).decoder
    ids = torch.randint(0, 400, (1, 30), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(ids), source(ids), rtol=1e-4, atol=1e-5)


def _planted_copy(tiny_dirs, tmp_path, plant):

    from safetensors.torch import save_file

    folder = shutil.copytree(tiny_dirs["llama"], tmp_path / "planted")
    tensors = load_file(str(folder / "model.safetensors"))
    plant(tensors)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def _quantize_fails(folder, calib_file, tmp_path, message):
    result = CliRunner().invoke(main, ["quantize", "--model", str(folder), "--out", str(tmp_path / "out"),
                                       "--calib-data", str(calib_file), *SMALL])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_nan_activations_are_named(tiny_dirs, calib_file, tmp_path):
    """Finite weights whose activations overflow float32: the first linear input that is not finite is named."""
    def plant(t):
        t["model.layers.1.mlp.up_proj.weight"][3] = 3e38

    _quantize_fails(_planted_copy(tiny_dirs, tmp_path, plant), calib_file, tmp_path,
                    "non-finite values (NaN/Inf) in layer 1 mlp_down input")


@pytest.mark.parametrize("name,value", [("model.layers.1.mlp.up_proj.weight", float("nan")),
                                        ("model.embed_tokens.weight", float("inf")),
                                        ("model.norm.weight", float("nan"))])
def test_nan_or_inf_weights_are_named(tiny_dirs, calib_file, tmp_path, name, value):
    def plant(t):
        t[name].view(-1)[5] = value

    _quantize_fails(_planted_copy(tiny_dirs, tmp_path, plant), calib_file, tmp_path,
                    f"the weight tensor {name} contains NaN/Inf values")


def test_singular_hessian_is_named(tiny_dirs, calib_file, tmp_path, monkeypatch):
    """A Hessian that damping cannot make positive definite (planted: layer 1's mlp_down input Hessian
    negated) stops the run with the layer and tensor named, and leaves nothing behind."""
    import resq_export.quantize.linears as q

    real = q.gptq_quantize

    def planted(w, hessian, *args):
        h = hessian.pop() if isinstance(hessian, list) else hessian
        if h.shape[0] == 96 and planted.calls == 1:  # the second mlp_down: layer 1
            h = -h
        planted.calls += h.shape[0] == 96
        return real(w, h, *args)

    planted.calls = 0
    monkeypatch.setattr(q, "gptq_quantize", planted)
    _quantize_fails(tiny_dirs["llama"], calib_file, tmp_path,
                    "layer 1 mlp_down (Hessian of its input): Hessian not positive definite after damping 0.01")


def test_group_size_takes_auto_or_a_count():
    from resq_export.cli import _GroupSize
    from resq_export.config import AUTO_GROUP_SIZE

    assert _GroupSize().convert("auto", None, None) == AUTO_GROUP_SIZE and _GroupSize().convert("72", None, None) == 72
    for bad in ("-1", "wide"):
        with pytest.raises(click.BadParameter):
            _GroupSize().convert(bad, None, None)
