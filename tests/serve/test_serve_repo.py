"""serve-repo without a server: the repository it writes (checked against Triton's own config
schema when .venv-serve is there), what it refuses, and the request check of the served model."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from click.testing import CliRunner

from resq_export.cli import main
from resq_export.errors import ArtifactError, ConfigError
from resq_export.fileio import sha256_file
from resq_export.runtime import load
from resq_export.serve.protocol import request_settings
from server_process import SERVE_PYTHON

# Triton's ModelConfig message (tritonclient ships its compiled schema) reads the file as the server does
_PARSE = ("import sys, json; from google.protobuf import text_format, json_format; "
          "from tritonclient.grpc import model_config_pb2 as m; "
          "c = text_format.Parse(open(sys.argv[1]).read(), m.ModelConfig()); "
          "print(json.dumps(json_format.MessageToDict(c)))")


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_repository_for_an_onnx_folder(onnx_dir, tmp_path):
    repo = tmp_path / "repo"
    result = _cli("serve-repo", "--onnx", onnx_dir, "--out", repo, "--instances", "3", "--name", "tiny", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["repository"] == str(repo)
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        "serve.json", "tiny/1/model.py", "tiny/config.pbtxt"]
    text = (repo / "tiny" / "config.pbtxt").read_text()
    assert "model_transaction_policy { decoupled: true }" in text
    assert 'output [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]' in text
    assert f'string_value: "{onnx_dir.resolve()}"' in text and "count: 3 kind: KIND_CPU" in text
    assert "from resq_export.serve.triton_model import TritonPythonModel" in (repo / "tiny/1/model.py").read_text()
    # a rerun replaces the repository it wrote
    result = _cli("serve-repo", "--onnx", onnx_dir, "--out", repo, "--instances", "1")
    assert result.exit_code == 0, result.output
    assert not (repo / "tiny").exists() and "count: 1 kind" in (repo / "resq" / "config.pbtxt").read_text()


@pytest.mark.skipif(not SERVE_PYTHON.is_file(), reason="no .venv-serve (bash tools/setup_serve.sh)")
def test_config_follows_tritons_schema(onnx_dir, tmp_path):
    import shutil

    weird = shutil.copytree(onnx_dir, tmp_path / 'we"ird\\onnx')  # quotes and backslashes go through the text format
    repo = tmp_path / "repo"
    assert _cli("serve-repo", "--onnx", weird, "--out", repo, "--instances", "2").exit_code == 0
    done = subprocess.run([str(SERVE_PYTHON), "-c", _PARSE, str(repo / "resq" / "config.pbtxt")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["name"] == "resq" and config["backend"] == "python"
    assert config["modelTransactionPolicy"] == {"decoupled": True}
    assert config["instanceGroup"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert [i["name"] for i in config["input"]] == ["prompt", "max_new_tokens", "temperature", "top_p", "seed", "chat"]
    assert [o["name"] for o in config["output"]] == ["text"]
    assert config["parameters"]["model_path"]["stringValue"] == str(weird.resolve())


def _stand_in_plan(folder, name, onnx_dir, library, **edit):
    """A plan as `resq-export engine` leaves it: its bytes (never read here: no TensorRT) and the
    manifest beside it, recording `library` by path and sha256 (`edit` replaces fields)."""
    manifest = {"tool": "resq-export", "onnx": str(onnx_dir), "runtime": {"name": "tensorrt-rtx", "version": "1.7.1.116"},
                "target_sm": 89, "plugin_library": {"path": str(library), "sha256": sha256_file(library)},
                "limits": {"max_batch": 1, "max_sequence": 64, "max_context": 128}, "triton_kernels": None}
    (folder / f"{name}.plan").write_bytes(b"plan")
    (folder / f"{name}.plan.json").write_text(json.dumps({**manifest, **edit}))
    return folder / f"{name}.plan"


def test_repository_for_a_plan(onnx_dir, tmp_path):
    """serve-repo checks a plan as the served model will (runtime/plan.py): its manifest, and the
    plugin and kernel libraries by sha256."""
    library = tmp_path / "libresq_plugins.so"
    library.write_bytes(b"lib")
    kernels = tmp_path / "libresq_triton.so"
    kernels.write_bytes(b"kernels")
    plan = _stand_in_plan(tmp_path, "out", onnx_dir, library,
                          triton_kernels={"library": {"path": str(kernels), "sha256": sha256_file(kernels)}})
    result = _cli("serve-repo", "--engine", plan, "--out", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "repo" / "resq" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in text and f'string_value: "{library}"' in text and f'string_value: "{plan}"' in text


@pytest.fixture
def places(onnx_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "lonely.plan").write_bytes(b"plan")
    library, other = tmp_path / "lib" / "libresq_plugins.so", tmp_path / "other" / "libresq_plugins.so"
    for path, text in [(library, b"the library the plans were built with"), (other, b"another build of it")]:
        path.parent.mkdir()
        path.write_bytes(text)
    _stand_in_plan(tmp_path, "ok", onnx_dir, library)
    _stand_in_plan(tmp_path, "nolib", onnx_dir, library, plugin_library={"path": str(tmp_path / "gone.so"),
                                                                         "sha256": "0" * 64})
    _stand_in_plan(tmp_path, "other_build", onnx_dir, library,
                   plugin_library={"path": str(other), "sha256": sha256_file(library)})
    # the manifest of a plan whose kernel library changed since (rebuilt libresq_triton.so)
    (library.parent / "libresq_triton.so").write_bytes(b"kernels, rebuilt")
    _stand_in_plan(tmp_path, "old_kernels", onnx_dir, library, triton_kernels={"library": {"sha256": "0" * 64}})
    (tmp_path / "old_shape.plan").write_bytes(b"plan")
    (tmp_path / "old_shape.plan.json").write_text(json.dumps({"tool": "resq-export",
                                                              "plugin_library": {"path": str(library)}}))
    return {"onnx": onnx_dir, "art": onnx_dir.parent / "artifact", "tmp": tmp_path}


CASES = [
    ("--onnx {onnx} --out {tmp}/mine", 1, "holds a file resq-export did not write (notes.txt)"),
    ("--onnx {onnx} --engine {tmp}/lonely.plan --out {tmp}/r", 2, "give exactly one of --onnx or --engine"),
    ("--out {tmp}/r", 2, "give exactly one of --onnx or --engine"),
    ("--onnx {onnx} --out {tmp}/r --instances 0", 2, "Invalid value for '--instances'"),
    ("--onnx {onnx} --out {tmp}/r --name ../up", 1, "--name '../up': letters, digits"),
    ("--onnx {art} --out {tmp}/r", 1, "is an artifact, not an ONNX folder"),
    ("--onnx {onnx} --out {onnx}/repo", 1, "lies inside the input"),
    ("--onnx {tmp}/nothing --out {tmp}/r", 1, "is not a resq-export ONNX folder"),
    ("--engine {tmp}/missing.plan --out {tmp}/r", 1, "is not a file"),
    ("--engine {tmp}/lonely.plan --out {tmp}/r", 1, "lonely.plan.json is missing: a plan runs with the manifest"),
    ("--engine {tmp}/old_shape.plan --out {tmp}/r", 1, "old_shape.plan.json: the field 'onnx'"),
    ("--engine {tmp}/nolib.plan --out {tmp}/r", 2, "the plugin library {tmp}/gone.so is missing"),
    ("--engine {tmp}/other_build.plan --out {tmp}/r", 1, "{tmp}/other/libresq_plugins.so is not the plugin library "
     "other_build.plan was built with (sha256 differs"),
    ("--engine {tmp}/ok.plan --plugins {tmp}/other/libresq_plugins.so --out {tmp}/r", 1, "is not the plugin library"),
    ("--engine {tmp}/old_kernels.plan --out {tmp}/r", 1, "libresq_triton.so is not the kernel library old_kernels.plan "
     "was built with"),
    ("--onnx {onnx} --out {tmp}/r --plugins {tmp}/nolib.plan", 1, "--plugins goes with --engine"),
]


@pytest.mark.parametrize("line, code, fragment", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_input_is_one_line(places, line, code, fragment):
    result = _cli("serve-repo", *shlex.split(line.format(**places)))
    assert result.exit_code == code, (line, result.output)
    assert fragment.format(**places) in result.output, (line, result.output)
    assert not (places["tmp"] / "r").exists()
    assert (places["tmp"] / "mine" / "notes.txt").read_text() == "keep me"


def test_request_settings():
    import numpy as np

    # as Triton hands them over: BYTES as object arrays, the rest as typed arrays
    assert request_settings({"prompt": np.array([b"hi"], dtype=np.object_), "seed": np.array([3], np.int64)})["seed"] == 3
    assert request_settings({"prompt": [b"hi"]}) == {"prompt": "hi", "max_new_tokens": 64, "temperature": 0.0,
                                                     "top_p": 1.0, "seed": 0, "chat": False}
    assert request_settings({"prompt": [b"hi"], "max_new_tokens": [5], "temperature": [0.5], "seed": [7],
                             "chat": [True]})["max_new_tokens"] == 5
    for tensors, fragment in [({}, "'prompt' is required"), ({"prompt": [b"\xff"]}, "not valid UTF-8"),
                              ({"prompt": [b"a", b"b"]}, "one value is expected, got 2"),
                              ({"prompt": [b"hi"], "max_new_tokens": [0]}, "'max_new_tokens' is 0"),
                              ({"prompt": [b"hi"], "temperature": [float("nan")]}, "'temperature' is nan"),
                              ({"prompt": [b"hi"], "top_p": [1.5]}, "'top_p' is 1.5"),
                              ({"prompt": [b"hi"], "stop": [b"x"]}, "unknown input 'stop'")]:
        with pytest.raises(ConfigError, match=fragment):
            request_settings(tensors)


def test_served_generator_refuses_a_plan_without_its_manifest(tmp_path):
    """The served model opens what serve-repo named with resq_export.runtime.load: a plan whose
    out.plan.json is gone is refused with the reason (before any TensorRT import)."""
    plan = tmp_path / "out.plan"
    plan.write_bytes(b"not a plan")
    with pytest.raises(ArtifactError, match="out.plan.json is missing"):
        load(plan)


def test_launch_refuses_with_one_line(onnx_dir, tmp_path):
    """Not a serve-repo repository; then, from the project's .venv (no PyTriton), the missing server."""
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    launch = [sys.executable, "-m", "resq_export.serve.launch"]
    done = subprocess.run([*launch, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == (
        f"error: {tmp_path.resolve()} is not a model repository of resq-export serve-repo (no serve.json)")
    assert _cli("serve-repo", "--onnx", onnx_dir, "--out", tmp_path / "repo").exit_code == 0
    done = subprocess.run([*launch, str(tmp_path / "repo")], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: nvidia-pytriton is not installed"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
