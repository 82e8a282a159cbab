"""Streaming quantisation: same artifact as with the whole model in memory, resume after a kill or a
full disk gives the same artifact, a work folder is never taken for an artifact, and sharded
bf16/fp16/fp32 folders from tools/make_model.py load and quantise."""

import errno
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import SMALL, run_cli

import resq_export.quantize.pipeline as quantize_module
from resq_export import __version__
from resq_export.artifact import load_artifact
from resq_export.checkpoint import work_dir_for
from resq_export.config import QuantConfig
from tolerances import FLOAT_VS_HF

from resq_export.errors import ArtifactError, ResumeError
from resq_export.quantize import quantize

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from make_model import make_model  # noqa: E402 (tools/ is not a package)

SETTINGS = QuantConfig.for_method("resq", nsamples=4, seqlen=32)


def _assert_same_artifact(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for f in ("model.safetensors", "config.json"):
        assert ma["files"][f] == mb["files"][f], f


@pytest.fixture(scope="module")
def sharded_bf16(tiny_dirs, tmp_path_factory):
    """A 3-layer Llama of the tiny shape in bf16, split over several shards with an index."""
    shape = {"arch": "llama", "hidden": 64, "layers": 3, "heads": 4, "kv_heads": 2, "intermediate": 96,
             "vocab": 400, "tied": False, "rope_theta": 10000.0}
    return make_model(tmp_path_factory.mktemp("bf16") / "m", shape, "bf16", shard_gb=40e3 / 2**30,
                      tokenizer_dir=tiny_dirs["llama"], log=lambda *_: None)


def test_make_model_writes_a_sharded_hf_folder_transformers_reads(sharded_bf16):
    from transformers import AutoModelForCausalLM

    from resq_export.models.loader import load_model

    index = json.loads((sharded_bf16 / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert load_file(str(sharded_bf16 / next(iter(set(index["weight_map"].values())))))
    hf = AutoModelForCausalLM.from_pretrained(str(sharded_bf16), dtype=torch.float32).eval()
    ours = load_model(sharded_bf16).decoder
    ids = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, **FLOAT_VS_HF)
    std = hf.model.layers[0].mlp.down_proj.weight.std().item()
    assert 0.5 < std / (0.02 / 6 ** 0.5) < 1.5  # output projections scaled by 1/sqrt(2 layers)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_streaming_equals_in_memory(tiny_dirs, calib_file, tmp_path, dtype):
    """Layers read one at a time from the memory-mapped shards give the bytes of the all-in-memory run."""
    shape = {"arch": "qwen2" if dtype == "fp16" else "llama", "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2,
             "intermediate": 96, "vocab": 400, "tied": dtype == "fp32", "rope_theta": 10000.0}
    model = make_model(tmp_path / "m", shape, dtype, shard_gb=30e3 / 2**30, tokenizer_dir=tiny_dirs["llama"],
                       log=lambda *_: None)
    quantize(str(model), SETTINGS, tmp_path / "streamed", [str(calib_file)], progress=False)
    quantize(str(model), SETTINGS, tmp_path / "memory", [str(calib_file)], progress=False, in_memory=True)
    _assert_same_artifact(tmp_path / "streamed", tmp_path / "memory")
    assert not work_dir_for(tmp_path / "streamed").exists()  # removed once the artifact is in place


# The CLI in a child process that SIGKILLs itself right after the work folder records step
# KILL_AT ("pass2:1"): as abrupt as a killed process, with no hook in the library.
_KILLING_CLI = """
import os, signal, sys
from resq_export import checkpoint
from resq_export.cli import main

phase, layer = os.environ["KILL_AT"].split(":")
real_commit = checkpoint.WorkDir.commit

def commit(self, **changes):
    real_commit(self, **changes)
    if changes.get(phase + "_done") == int(layer) + 1:
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint.WorkDir.commit = commit
sys.argv[0] = "resq-export"
main()
"""


def _cli(model, out, calib_file, kill_at=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    program = ["-c", _KILLING_CLI] if kill_at else ["-m", "resq_export.cli"]
    if kill_at:
        env["KILL_AT"] = kill_at
    cmd = [sys.executable, *program, "quantize", "--model", str(model), "--out", str(out),
           "--calib-data", str(calib_file), *SMALL]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_resume_after_kill_gives_the_same_artifact(sharded_bf16, calib_file, tmp_path):
    reference = tmp_path / "reference"
    assert _cli(sharded_bf16, reference, calib_file).returncode == 0
    seed = int(os.environ.get("RESQ_TEST_SEED", "0"))  # another seed, another kill point
    rng = random.Random(seed)
    phase, layer = rng.choice(["pass1", "pass2"]), rng.randrange(3)
    print(f"RESQ_TEST_SEED={seed}: killing after {phase} layer {layer}")
    out = tmp_path / "out"
    killed = _cli(sharded_bf16, out, calib_file, kill_at=f"{phase}:{layer}")
    assert killed.returncode == -9, killed.stderr
    partial = work_dir_for(out)
    assert not out.exists() and (partial / "state.json").is_file()
    state = json.loads((partial / "state.json").read_text())
    assert state[f"{phase}_done"] == layer + 1
    with pytest.raises(ArtifactError, match="not a resq-export artifact"):
        load_artifact(partial)  # a work folder is never taken for an artifact
    # A rerun with other settings must not mix into it.
    other = run_cli("quantize", "--model", sharded_bf16, "--out", out, "--calib-data", calib_file, *SMALL,
                    "--seed", "1")
    assert other.exit_code == 1 and "interrupted run with different" in other.output and partial.is_dir()
    assert "settings" in other.output.split("different")[1].split(";")[0]
    resumed = _cli(sharded_bf16, out, calib_file)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_artifact(reference, out)
    assert not partial.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["resumed"] is True


def test_resume_after_full_disk(sharded_bf16, calib_file, tmp_path, monkeypatch):
    """ENOSPC in the middle of writing a layer: nothing half-written stays, the rerun finishes identically."""
    from resq_export import fileio

    quantize(str(sharded_bf16), SETTINGS, tmp_path / "reference", [str(calib_file)], progress=False)
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 24:  # part-way through pass 2 (every atomic file write syncs once)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", failing_fsync)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        quantize(str(sharded_bf16), SETTINGS, out, [str(calib_file)], progress=False)
    partial = work_dir_for(out)
    assert not out.exists() and partial.is_dir()
    assert not [p for p in partial.iterdir() if ".tmp-" in p.name]  # the torn file was removed
    assert json.loads((partial / "state.json").read_text())["globals_done"]  # it did fail in pass 2
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    # Another release of the tool may compute differently: it must not finish this run.
    monkeypatch.setattr(quantize_module, "__version__", "0.0.0-other")
    with pytest.raises(ResumeError, match=rf"different tool_version \({re.escape(__version__)} there, 0\.0\.0-other "
                                          r"now\); .*--overwrite"):
        quantize(str(sharded_bf16), SETTINGS, out, [str(calib_file)], progress=False)
    monkeypatch.undo()
    quantize(str(sharded_bf16), SETTINGS, out, [str(calib_file)], progress=False)
    _assert_same_artifact(tmp_path / "reference", out)


def test_stats_json_has_spectra_errors_and_times(artifacts):
    details = json.loads((artifacts["resq"] / "stats.json").read_text())
    assert len(details["spectra"]["U_A"]) == 64 and details["spectra"]["high_channels"]["U_A"] == 8
    assert len(details["spectra"]["U_B"]) == 2 and len(details["spectra"]["U_B"][0]) == 2  # layers x KV heads
    layer = details["layers"][1]
    assert set(layer["weight_sqnr_db"]) == {"attn_qkv", "attn_o", "mlp_gate_up", "mlp_down"}
    assert 5 < layer["weight_sqnr_db"]["mlp_down"] < 60 and 5 < layer["activation_sqnr_db"]["attn_qkv"] < 60
    assert layer["pass1_s"] > 0 and layer["pass2_s"] > 0
    steps = layer["pass2_steps"]
    assert list(steps) == ["read_and_transform", "attn_qkv", "attn_o", "mlp_gate_up", "mlp_down", "forward"]
    assert sum(step["s"] for step in steps.values()) <= layer["pass2_s"]
    assert steps["forward"]["peak_rss_mb"] <= layer["pass2_peak_rss_mb"]
    manifest = json.loads((artifacts["resq"] / "manifest.json").read_text())
    assert "stats.json" in manifest["files"]
