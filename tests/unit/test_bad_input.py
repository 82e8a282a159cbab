"""Every command's bad input: one clear line and a non-zero exit, never a traceback. A table of
command line -> exit code and a fragment of the message, so that none regresses."""

import errno
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from resq_export.cli import main
from resq_export.export.writer import export_onnx


@pytest.fixture(scope="module")
def places(artifacts, tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    onnx_dir = root / "onnx"
    export_onnx(artifacts["rtn"], onnx_dir)
    no_tokenizer = root / "onnx_no_tokenizer"
    shutil.copytree(onnx_dir, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    # issue 30: families refused with the reason (the architecture name alone decides, before any weight)
    refused = [("gemma2", {"architectures": ["Gemma2ForCausalLM"]}), ("olmo2", {"architectures": ["Olmo2ForCausalLM"]}),
               ("mixtral", {"architectures": ["MixtralForCausalLM"]}),
               ("qwen3_moe", {"architectures": ["Qwen3MoeForCausalLM"]}),
               ("llava", {"architectures": ["LlavaForConditionalGeneration"]}), ("gemma3_type", {"model_type": "gemma3_text"})]
    for name, config in [("list_config", [1, 2]), ("string_arch", {"architectures": "BertModel"}), *refused]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    cut = shutil.copytree(tiny_dirs["llama"], root / "cut_weights")
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    (root / "busy").mkdir()
    (root / "busy" / "keep.txt").write_text("x")
    # issue 33: an export.json of another shape; a build folder; model folders with bad config values,
    # without tokenizer files, with int8 weights; a cut GGUF file
    bad_meta = shutil.copytree(onnx_dir, root / "onnx_bad_meta")
    (bad_meta / "export.json").write_text(json.dumps({"tool": "resq-export", "files": 5}))
    shutil.copytree(onnx_dir, root / "build_dir" / "onnx")
    for name, field, value in [("string_hidden", "hidden_size", "64"), ("zero_heads", "num_attention_heads", 0)]:
        folder = shutil.copytree(tiny_dirs["llama"], root / name)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
    no_tok = shutil.copytree(tiny_dirs["llama"], root / "no_tokenizer_files",
                             ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json"))
    for name, edit in [("dynamic_rope", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}),
                       ("odd_rotary", {"partial_rotary_factor": 0.1})]:
        folder = shutil.copytree(tiny_dirs["llama"], root / name)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **edit}))
    int8 = shutil.copytree(tiny_dirs["llama"], root / "int8_weights")
    _plant_int8(int8 / "model.safetensors", "model.layers.1.mlp.up_proj.weight")
    (root / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")  # 8 bytes: magic and version, no counts
    (root / "junk.gguf").write_bytes(b"not a gguf file at all, but long enough")
    plan = root / "user.plan"
    plan.write_bytes(b"plan")
    (root / "user.plan.json").write_text(json.dumps({"tool": 5}))
    _write_plans(root, onnx_dir)
    return {"root": root, "onnx": onnx_dir, "no_tokenizer": no_tokenizer, "art": artifacts["rtn"],
            "model": tiny_dirs["llama"], "bad_meta": bad_meta, "no_tok": no_tok, "int8": int8}


def _write_plans(root, onnx_dir):
    """Plans as `resq-export engine` leaves them (a plan file and its out.plan.json), for issue 31's
    refusals before any TensorRT: the plan's bytes are never read, the plugin library only hashed."""
    from resq_export.fileio import sha256_file

    library = root / "lib" / "libresq_plugins.so"
    library.parent.mkdir()
    library.write_bytes(b"the plugin library the plans were built with")
    other = root / "other" / "libresq_plugins.so"
    other.parent.mkdir()
    other.write_bytes(b"another build of it")
    manifest = {"tool": "resq-export", "onnx": str(onnx_dir), "runtime": {"name": "tensorrt-rtx", "version": "1.7.1.116"},
                "target_sm": 89, "plugin_library": {"path": str(library), "sha256": sha256_file(library)},
                "limits": {"max_batch": 1, "max_sequence": 64, "max_context": 128}, "triton_kernels": None}
    for name, edit in [("run", {}), ("no_plugins", {"plugin_library": {"path": str(root / "gone" / library.name),
                                                                      "sha256": "0" * 64}}),
                       ("other_build", {"plugin_library": {"path": str(other), "sha256": sha256_file(library)}}),
                       ("old_runtime", {"runtime": {"name": "tensorrt-rtx", "version": "1.0.0"}})]:
        (root / f"{name}.plan").write_bytes(b"plan")
        (root / f"{name}.plan.json").write_text(json.dumps({**manifest, **edit}))


def _plant_int8(path, name):
    """The tensor `name` stored as int8 (as a quantised checkpoint would), the rest as it was."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors[name] = (tensors[name] * 100).round().clamp(-127, 127).to(torch.int8)
    save_file(tensors, str(path))


CASES = [
    # (command line with {placeholders}, exit code, fragment of the message)
    ("quantize --model {root}/list_config --out {root}/o1 --quiet", 1, "is not a JSON object"),
    ("quantize --model {root}/string_arch --out {root}/o2 --quiet", 1, "unsupported architecture 'BertModel'"),
    ("quantize --model {root}/missing --out {root}/o3 --quiet", 1, "not found"),
    ("quantize --model {root}/gemma2 --out {root}/o3 --quiet", 1, "Gemma2ForCausalLM is not supported: it normalises "
     "the outputs of attention and of the MLP"),
    ("quantize --model {root}/olmo2 --out {root}/o3 --quiet", 1, "Olmo2ForCausalLM is not supported: it normalises"),
    ("quantize --model {root}/gemma3_type --out {root}/o3 --quiet", 1, "Gemma3ForCausalLM is not supported: it norm"),
    ("quantize --model {root}/mixtral --out {root}/o3 --quiet", 1, "MixtralForCausalLM is not supported: it is a "
     "mixture-of-experts model"),
    ("quantize --model {root}/qwen3_moe --out {root}/o3 --quiet", 1, "Qwen3MoeForCausalLM is not supported: it is a "
     "mixture-of-experts"),
    ("quantize --model {root}/llava --out {root}/o3 --quiet", 1, "LlavaForConditionalGeneration is not supported: it "
     "is a multimodal wrapper"),
    ("quantize --model {root}/dynamic_rope --out {root}/o3 --quiet", 1, "RoPE type 'dynamic' is not supported"),
    ("quantize --model {root}/odd_rotary --out {root}/o3 --quiet", 1, "\"partial_rotary_factor\" 0.1 gives a rotary "
     "part of 1 of the 16 channels"),
    ("quantize --model {root}/cut_weights --out {root}/o7 --quiet", 1, "truncated"),
    ("quantize --model {model} --out {root}/busy --quiet", 1, "--overwrite"),
    ("quantize --model {model} --out {model} --quiet", 1, "is the input"),
    ("quantize --model {model} --out {root}/o4 --method nope", 2, "Invalid value for '--method'"),
    ("quantize --model {model} --out {root}/o6 --lqer-rank 1000 --quiet", 1, "exceeds the smallest linear dimension"),
    ("export --artifact {root}/missing --out {root}/o5", 1, "not a resq-export artifact"),
    ("export --artifact {art} --out {art}", 1, "is the input"),
    ("validate --onnx {root}/busy", 1, "is not a resq-export ONNX folder"),
    ("validate --onnx {onnx} --decode-steps 0", 2, "0 is not in the range x>=1"),
    ("validate --onnx {onnx} --seqlen 8 --max-tokens 16 --decode-steps 40 --quiet", 1, "--decode-steps 40 needs 55"),
    ("generate --onnx {onnx} --prompt ''", 2, "the prompt is empty"),
    ("generate --onnx {onnx} --prompt hi --max-new-tokens 0", 2, "--max-new-tokens >= 1"),
    ("generate --onnx {no_tokenizer} --prompt hi", 1, "tokenizer.json is missing"),
    ("generate --onnx {onnx} --prompt '" + "word " * 300 + "'", 1, "exceeds the model's context of 256 tokens"),
    ("engine --onnx {root}/busy --engine {root}/e.plan", 1, "is not a resq-export ONNX folder"),
    ("engine --onnx {onnx} --engine {root}/e.plan --target-sm ada", 1, "compute capability"),
    ("report --artifact {root}/busy --out {root}/r.html", 1, "not a resq-export artifact"),
    ("eval --quiet", 2, "exactly one of --artifact or --model"),
    ("eval --artifact {root}/missing --quiet", 1, "not a resq-export artifact"),
    ("eval --model {root}/missing --quiet", 1, "not found"),
    ("build --model {model} --out {root}/busy --quiet", 1, "--overwrite"),
    # issue 33, items 8-23 and the usability list
    ("generate --onnx {onnx} --prompt 'caf\udce9 \udcff'", 2, "is not valid UTF-8 (byte 0xe9 at character 3)"),
    ("generate --onnx {bad_meta} --prompt hi", 1, "export.json: the field 'files' should be an object, not an integer (5)"),
    ("generate --onnx {onnx} --prompt hi --chat", 1, "--chat: this model's tokenizer has no chat template"),
    ("generate --onnx {onnx} --prompt hi --temperature nan", 2, "nan is not a finite number; give one >= 0"),
    ("generate --onnx {onnx} --prompt hi --temperature inf", 2, "inf is not a finite number"),
    ("generate --onnx {onnx} --prompt hi --temperature -1", 2, "-1 is not >= 0"),
    ("quantize --model {model} --out {root}/o8 --high-fraction nan --quiet", 2, "nan is not a finite number; give one "
     "in [0, 1)"),
    ("quantize --model {int8} --out {root}/o9 --quiet", 1, "holds the tensor model.layers.1.mlp.up_proj.weight as int8"),
    ("quantize --model {int8} --out {root}/o9 --quiet", 1, "quantised checkpoints (int8/int4, GPTQ, AWQ, bitsandbytes) "
     "are not inputs"),
    ("quantize --model {model} --out {root}/o10 --group-size 100000 --quiet", 1, "--group-size 100000 is wider than "
     "every input of this model's linears (the widest has 96 channels)"),
    ("quantize --model {model} --out {root}/o10 --down-group-size 128 --quiet", 1, "--down-group-size 128 is wider "
     "than the down projection's input (96 channels)"),
    ("quantize --model {root}/string_hidden --out {root}/o11 --quiet", 1, "string_hidden/config.json: \"hidden_size\" "
     "must be a positive integer, not '64' (a string)"),
    ("quantize --model {root}/zero_heads --out {root}/o11 --quiet", 1, "zero_heads/config.json: \"num_attention_heads\" "
     "must be a positive integer, not 0"),
    ("quantize --model {no_tok} --out {root}/o12 --quiet", 1, "no_tokenizer_files has no tokenizer files: expected "
     "tokenizer.json"),
    ("quantize --model {model} --out {root}/o13 --high-fraction 0.9 --quiet", 1, "--high-fraction 0.9 does not fit "
     "this model (hidden size 64, head size 16)"),
    ("quantize --model {model} --out {root}/o13 --high-fraction 0.9 --quiet", 1, "Values in [0, 1) that fit: 0, 0.125, "
     "0.25, 0.375, 0.5, 0.625, 0.75, 0.875"),
    # issue 32: --gate-up-high-fraction (hidden 64: attn_qkv keeps 8 channels in 8 bits)
    ("quantize --model {model} --out {root}/o20 --gate-up-high-fraction 0.1 --quiet", 1, "error: "
     "--gate-up-high-fraction 0.1 must be in [--high-fraction, 1) = [0.125, 1)"),
    ("quantize --model {model} --out {root}/o20 --gate-up-high-fraction 0.3 --quiet", 1, "error: "
     "--gate-up-high-fraction 0.3 does not fit this model (hidden size 64) with these settings: 45 4-bit input "
     "channels cannot be packed two per byte. Values in [0.125, 1) that fit: 0.125, 0.1875, 0.25"),
    ("quantize --model {model} --out {root}/o20 --group-size 8 --gate-up-high-fraction 0.1875 --quiet", 1,
     "--gate-up-high-fraction 0.1875 does not fit this model (hidden size 64) with these settings: mlp_gate_up's "
     "input (the residual stream) in every layer (4-bit part): 52 channels do not split into groups of 8"),
    ("quantize --model {model} --out {root}/o20 --method quarot --gate-up-high-fraction 0.25 --quiet", 1,
     "--gate-up-high-fraction 0.25 needs ResQ's PCA bases (--method resq with --rotation pca or learned), not "
     "--rotation random"),
    ("quantize --model {model} --out {root}/o20 --gate-up-high-fraction 1 --quiet", 2, "1 is not in [0, 1)"),
    ("quantize --model {model} --out {root}/o14 --method lqer --quiet", 1, "mlp_down's input (the intermediate size) in "
     "every layer: 96 channels do not split into groups of 64: choose another --group-size (16, 24, 32, 48 divide it"),
    ("validate --onnx {onnx} --artifact {model} --quiet", 1, "is a model folder, not an artifact (no manifest.json): "
     "--artifact expects the folder `resq-export quantize --out` wrote"),
    ("export --artifact {model} --out {root}/o15", 1, "is a model folder, not an artifact"),
    ("eval --artifact {onnx} --quiet", 1, "is an ONNX folder, not an artifact"),
    ("build --model {model} --out {root}/o16 --eval-max-tokens 256 --quiet", 1, "--eval-max-tokens 256 is fewer than "
     "one validation window of --eval-seqlen 512 tokens"),
    ("build --model {model} --out {root}/o16 --eval-max-tokens 20 --eval-seqlen 20 --quiet", 1, "the decode check "
     "needs 31"),
    ("engine --onnx {onnx} --engine {root}/e.plan --max-batch 0 --max-sequence -1", 2, "error: --max-batch 0 is out of "
     "range: 1 or more\nerror: --max-sequence -1 is out of range: 1 to --max-context (4096)"),
    ("engine --onnx {onnx} --engine {root}/e.plan --max-context 1 --max-sequence 8", 2, "error: --max-sequence 8 is out "
     "of range: 1 to --max-context (1)"),
    ("engine --onnx {onnx} --engine {root}/user.plan", 1, "user.plan exists and is not a plan "
     "resq-export wrote"),
    ("quantize --model {root}/cut.gguf --out {root}/o17 --quiet", 1, "cut.gguf is not a valid GGUF file (truncated: 8 "
     "bytes, shorter than its 24-byte header)"),
    ("quantize --model {root}/junk.gguf --out {root}/o17 --quiet", 1, "is not a valid GGUF file (it does not start "
     "with the bytes 'GGUF')"),
    ("generate --onnx {root}/build_dir --prompt hi", 1, "build_dir is a build folder, not an ONNX folder: pass --onnx "
     "{root}/build_dir/onnx"),
    ("validate --onnx {art} --quiet", 1, "is an artifact, not an ONNX folder: export it first"),
    ("quantize --model '' --out {root}/o18 --quiet", 2, "Invalid value for '--model': is empty"),
    ("eval --model '' --quiet", 2, "Invalid value for '--model': is empty"),
    # issue 31: generate and bench with a TensorRT plan
    ("generate --onnx {onnx} --engine {root}/run.plan --prompt hi", 2, "give exactly one of --onnx DIR (ONNX Runtime) "
     "or --engine PLAN (TensorRT)"),
    ("generate --prompt hi", 2, "give exactly one of --onnx DIR (ONNX Runtime) or --engine PLAN (TensorRT)"),
    ("bench --repeats 1", 2, "give --onnx DIR, --engine PLAN, or both"),
    ("generate --engine {root}/no_plugins.plan --prompt hi", 2, "the plugin library {root}/gone/libresq_plugins.so is "
     "missing"),
    ("generate --engine {root}/other_build.plan --prompt hi", 1, "{root}/other/libresq_plugins.so is not the plugin "
     "library other_build.plan was built with"),
    ("generate --engine {root}/user.plan --prompt hi", 1, "user.plan.json: the field 'tool' should be a string"),
    ("generate --engine {root}/missing.plan --prompt hi", 1, "missing.plan is not a file"),
    ("generate --engine {root}/run.plan --prompt '" + "word " * 100 + "' --max-new-tokens 64", 1, "that exceeds the "
     "plan's --max-context (run.plan) of 128 tokens"),
    ("bench --engine {root}/run.plan --batch 4 --repeats 1", 1, "decode at batch 4: beyond the plan's --max-batch "
     "(run.plan) of 1"),
    ("bench --engine {root}/run.plan --prefill 256 --repeats 1", 1, "prefill 256: beyond the plan's --max-context "
     "(run.plan) of 128 tokens"),
    ("generate --onnx {onnx} --prompt hi --top-p 0", 2, "0 keeps no token: give a number in (0, 1]"),
    ("generate --onnx {onnx} --prompt hi --top-p 1.5", 2, "1.5 is not in [0, 1]"),
    ("quantize --model {root}/missing --out {root}/o19 --quiet --json", 1, '{{"error": "model '),
    ("validate --onnx {onnx} --decode-steps 0 --json", 2, '{{"error": "Invalid value for \'--decode-steps\': 0 is not '
     'in the range x>=1.", "exit_code": 2}}'),
]


@pytest.mark.parametrize("line, code, fragment", CASES, ids=[c[0].split()[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_input_table(places, line, code, fragment):
    import shlex

    names = {k: str(v) for k, v in places.items()}
    args = shlex.split(line.format(**names))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (line, result.output, result.exception)
    assert fragment.format(**names) in result.output, (line, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (line, repr(result.exception))


@pytest.mark.parametrize("sm, code, fragment", [
    (None, 1, "run.plan runs on a GPU (it was built for sm_89) and torch sees no CUDA device here"),
    (86, 1, "run.plan was built for sm_89 and this GPU is sm_86: build a plan for this GPU (resq-export engine --onnx "),
])
def test_a_plan_for_another_gpu_is_refused_before_tensorrt(places, monkeypatch, sm, code, fragment):
    """The GPU this machine has (None: none; 86 in place of the query torch would answer on an RTX 30xx)
    against the plan's, before TensorRT is imported or the plan read."""
    from resq_export.runtime import trt_open

    monkeypatch.setattr(trt_open, "local_sm", lambda: sm)
    result = CliRunner().invoke(main, ["generate", "--engine", str(places["root"] / "run.plan"), "--prompt", "hi"])
    assert result.exit_code == code and fragment in result.output, result.output
    assert "Traceback" not in result.output


def test_a_plan_of_another_runtime_version_is_refused(places, monkeypatch):
    """On the plan's GPU, a TensorRT-RTX other than the one that built it: refused before
    deserialising (where TensorRT-RTX is not installed, its absence is said instead, exit code 2)."""
    import importlib.util

    from resq_export.runtime import trt_open

    monkeypatch.setattr(trt_open, "local_sm", lambda: 89)
    result = CliRunner().invoke(main, ["generate", "--engine", str(places["root"] / "old_runtime.plan"), "--prompt", "hi"])
    if importlib.util.find_spec("tensorrt_rtx_bindings") is None:
        assert result.exit_code == 2 and "no TensorRT runtime is installed" in result.output, result.output
    else:
        assert result.exit_code == 1, result.output
        assert "old_runtime.plan was built by tensorrt-rtx 1.0.0 and tensorrt_rtx_bindings here is" in result.output


def test_unwritable_output_is_one_line(places, tmp_path):
    """A location the process may not write (sysfs, as root in a container) ends in one line naming it."""
    import os

    target = "/sys/resq-export-test"
    try:
        os.mkdir(target)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EROFS, errno.EACCES):
            pytest.skip(f"mkdir {target}: {e} (not a write refusal)")
    else:
        os.rmdir(target)
        pytest.skip(f"{target} is writable here")
    result = CliRunner().invoke(main, ["export", "--artifact", str(places["art"]), "--out", f"{target}/onnx"])
    assert result.exit_code == 1 and "/sys" in result.output and "choose a" in result.output, result.output
    assert not isinstance(result.exception, OSError)


def test_seqlen_beyond_the_context_is_said(places, caplog):
    """Calibration windows longer than the model's context run (RoPE extends) but are said."""
    import logging

    from tiny_models import SMALL, calibration_text

    calib = places["root"] / "calib.txt"
    calib.write_text(calibration_text())
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(main, ["quantize", "--model", str(places["model"]), "--out",
                                           str(places["root"] / "long"), "--calib-data", str(calib), *SMALL,
                                           "--seqlen", "300", "--nsamples", "2", "--method", "rtn"])
    assert result.exit_code == 0, result.output
    assert "--seqlen 300 exceeds the model's context of 256 tokens" in caplog.text


def test_a_note_before_hashing_a_large_model(tmp_path, caplog, monkeypatch):
    """Minutes of hashing at 8B are announced, not silent; a small model says nothing."""
    import logging

    from resq_export import fileio

    big = tmp_path / "model.safetensors"
    big.write_bytes(bytes(4096))
    with caplog.at_level(logging.WARNING):
        fileio.note_hashing(tmp_path, [big])
        assert not caplog.records
        monkeypatch.setattr(fileio, "HASH_NOTE_BYTES", 1024)
        fileio.note_hashing(tmp_path, [big, tmp_path / "absent"])
    assert f"checking the sha256 of {tmp_path}" in caplog.text
