"""serve-repo: a Triton Inference Server model repository for an ONNX folder or a TensorRT plan.

    REPO/serve.json           resq-export's marker (tool, command, files written): a rerun may replace it
    REPO/NAME/config.pbtxt    Python backend, decoupled (streaming), instance count, the model's path
    REPO/NAME/1/model.py      re-exports resq_export.serve.triton_model.TritonPythonModel

The model is referred to by absolute path, never copied (an ONNX folder or plan is GBs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import __version__
from ..errors import ArtifactError, ConfigError
from ..export.folder import check_onnx_folder
from ..fileio import atomic_directory
from ..outputs import SERVE_MARKER, TOOL, claim_output
from ..runtime.plan import check_plugins, read_plan
from .protocol import INPUTS, OUTPUT

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a folder name and a URL path segment alike

MODEL_PY = '''"""Triton Python-backend model written by resq-export serve-repo: streaming generation from
the model named in config.pbtxt (its parameter model_path). The code is resq_export's
(resq_export/serve/triton_model.py), so the Python environment the server's stub runs in must have
resq-export installed (tools/setup_serve.sh, docs/serving.md)."""

try:
    from resq_export.serve.triton_model import TritonPythonModel  # noqa: F401 (the name Triton looks for)
except ImportError as e:
    raise ImportError(f"{e}: this model needs resq-export in the Python environment of the server's Python "
                      "backend (docs/serving.md)") from None
'''


def _quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    if any(c in text for c in "\n\r\0"):
        raise ConfigError(f"{text!r}: a path with a line break or NUL cannot go into config.pbtxt")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_pbtxt(name: str, model_path: Path, kind: str, instances: int, plugin_library: Path | None) -> str:
    """The model's config.pbtxt: the Python backend with the decoupled transaction policy (a request
    gets many responses: the text as it is generated, then the final flag)."""
    params = {"model_path": str(model_path), "model_kind": kind, "resq_export_version": __version__}
    if plugin_library is not None:
        params["plugin_library"] = str(plugin_library)
    lines = [f"# written by resq-export {__version__} serve-repo (docs/serving.md)",
             f"name: {_quoted(name)}", 'backend: "python"', "max_batch_size: 0",
             "model_transaction_policy { decoupled: true }", "input ["]
    lines += [f"  {{ name: {_quoted(f.name)} data_type: {f.triton_type} dims: [ 1 ]"
              f"{'' if f.default is None else ' optional: true'} }}{',' if i < len(INPUTS) - 1 else ''}"
              for i, f in enumerate(INPUTS)]
    lines += ["]", f"output [ {{ name: {_quoted(OUTPUT.name)} data_type: {OUTPUT.triton_type} dims: [ 1 ] }} ]",
              # a plan runs on a GPU: one instance group per GPU; an ONNX folder on the CPU
              f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if kind == 'plan' else 'KIND_CPU'} }} ]",
              "parameters ["]
    items = list(params.items())
    lines += [f"  {{ key: {_quoted(k)} value: {{ string_value: {_quoted(v)} }} }}{',' if i < len(items) - 1 else ''}"
              for i, (k, v) in enumerate(items)]
    return "\n".join(lines + ["]", ""])


def _check_onnx(onnx_dir: Path) -> None:
    check_onnx_folder(onnx_dir, "quick")
    if not (onnx_dir / "tokenizer" / "tokenizer_config.json").is_file():
        raise ArtifactError(f"{onnx_dir / 'tokenizer'} is missing or incomplete: re-export the ONNX folder")


def _check_plan(plan: Path, plugin_library: Path | None) -> Path:
    """The plugin library the plan needs (--plugins, else the one its manifest recorded), checked as
    `resq-export generate` and the served model check it (runtime/plan.py: the manifest, the library's
    and the kernels' sha256), so a repository is not written for a plan its server would refuse."""
    return check_plugins(read_plan(plan), plugin_library)


def write_repo(out: Path, *, onnx_dir: Path | None = None, plan: Path | None = None, instances: int = 1,
               name: str = "resq", plugin_library: Path | None = None, overwrite: bool = False) -> dict:
    """Write the repository at `out` (whole or not at all); returns what was written."""
    if (onnx_dir is None) == (plan is None):
        raise ConfigError("give exactly one of --onnx or --engine")
    if instances < 1:
        raise ConfigError(f"--instances {instances}: 1 or more is needed")
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: letters, digits, '_', '.', '-' (starting with a letter or digit), "
                          "at most 64")
    if onnx_dir is not None:
        if plugin_library is not None:
            raise ConfigError("--plugins goes with --engine: an ONNX folder runs on ONNX Runtime")
        model, kind = Path(onnx_dir).expanduser().resolve(), "onnx"
        _check_onnx(model)
    else:
        model, kind = Path(plan).expanduser().resolve(), "plan"
        plugin_library = _check_plan(model, None if plugin_library is None else Path(plugin_library).expanduser())
    files = {"config": f"{name}/config.pbtxt", "model": f"{name}/1/model.py", "marker": SERVE_MARKER}
    with claim_output(out, "serve", [model], overwrite) as out, atomic_directory(out) as tmp:
        (tmp / name / "1").mkdir(parents=True)
        (tmp / files["config"]).write_text(config_pbtxt(name, model, kind, instances, plugin_library))
        (tmp / files["model"]).write_text(MODEL_PY)
        summary = {"repository": str(out), "name": name, "model": str(model), "kind": kind, "instances": instances,
                   "plugin_library": None if plugin_library is None else str(plugin_library)}
        marker = {"tool": TOOL, "version": __version__, "command": "serve-repo", **summary,
                  "files": {f: role for role, f in files.items()}}
        (tmp / SERVE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return summary
