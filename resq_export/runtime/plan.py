"""A plan and its manifest (out.plan.json), checked against this machine before TensorRT reads a
byte of the plan: the plugin library and the Triton kernels it was built with (sha256), the GPU it
was built for, and the runtime and version that built it. Each refusal names the reason."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..engine.runtime import PLUGIN_HINT, Runtime, resolve_runtime
from ..errors import ArtifactError, ConfigError, ResQError, TensorRTMissing
from ..fileio import sha256_file
from ..manifests import PLAN_MANIFEST, Optional, check_schema

# what running a plan reads of its manifest, beyond what every reader checks
RUN_MANIFEST = {**PLAN_MANIFEST, "onnx": str, "runtime": {"name": str, "version": str}, "target_sm": int,
                "plugin_library": {"path": str, "sha256": str},
                "limits": {"max_batch": int, "max_sequence": int, "max_context": int},
                "triton_kernels": Optional((dict, None))}
TRITON_LIBRARY = "libresq_triton.so"


@dataclass(frozen=True)
class PlanInfo:
    path: Path
    manifest: dict

    @property
    def onnx_dir(self) -> Path:
        return Path(self.manifest["onnx"])

    @property
    def limits(self) -> dict:
        return self.manifest["limits"]


def read_plan(path: Path) -> PlanInfo:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file: --engine expects the plan `resq-export engine --engine` wrote")
    manifest_path = Path(str(path) + ".json")
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: a plan runs with the manifest `resq-export engine` wrote "
                            "beside it (it says which plugin library, runtime and GPU the plan needs)")
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{manifest_path} cannot be read as JSON ({e}): rebuild the plan") from None
    remedy = "rebuild the plan with this resq-export (resq-export engine --onnx DIR --engine PLAN)"
    check_schema(data, RUN_MANIFEST, manifest_path, remedy)
    if data["tool"] != "resq-export":
        raise ArtifactError(f"{manifest_path} was written by {data['tool']!r}, not resq-export: {remedy}")
    return PlanInfo(path, data)


def check_plugins(info: PlanInfo, plugin_library: Path | None = None) -> Path:
    """The plugin library to load: --plugins, else RESQ_PLUGIN_LIBRARY, else where the plan was built
    with it; refused when absent (exit code 2) or not the one the plan was built with."""
    recorded = info.manifest["plugin_library"]
    given = plugin_library or os.environ.get("RESQ_PLUGIN_LIBRARY")
    path = Path(given or recorded["path"])
    if not path.is_file():
        raise TensorRTMissing(f"the plugin library {path} is missing (the plan {info.path.name} needs the one it was "
                              f"built with; give its path with --plugins): {PLUGIN_HINT}")
    if sha256_file(path) != recorded["sha256"]:
        raise ResQError(f"{path} is not the plugin library {info.path.name} was built with (sha256 differs from "
                        f"out.plan.json's {recorded['sha256'][:12]}...): rebuild the plan with this library "
                        "(resq-export engine) or pass --plugins with the library it was built with")
    triton = (info.manifest.get("triton_kernels") or {}).get("library")
    if triton:
        beside = path.with_name(TRITON_LIBRARY)
        if not beside.is_file():
            raise TensorRTMissing(f"{beside} is missing beside the plugin library: the plugins load their kernels "
                                  f"from it; {PLUGIN_HINT}")
        if sha256_file(beside) != triton.get("sha256"):
            raise ResQError(f"{beside} is not the kernel library {info.path.name} was built with (sha256 differs): "
                            "rebuild the plan with this build's libraries")
    return path.resolve()


def check_gpu(info: PlanInfo, sm: int | None) -> None:
    """The plan runs on the GPU (compute capability) it was built for, and on no other: both runtimes
    compile its kernels for that one SM."""
    target = info.manifest["target_sm"]
    if sm is None:
        raise ResQError(f"{info.path.name} runs on a GPU (it was built for sm_{target}) and torch sees no CUDA device "
                        "here: run it on that GPU, or run the ONNX folder with --onnx on this machine")
    if sm != target:
        raise ResQError(f"{info.path.name} was built for sm_{target} and this GPU is sm_{sm}: build a plan for this "
                        f"GPU (resq-export engine --onnx {info.onnx_dir} --engine PLAN --target-sm {sm})")


def check_runtime(info: PlanInfo) -> Runtime:
    """The runtime that built the plan, at the version that built it (plans are not portable
    across TensorRT versions)."""
    want = info.manifest["runtime"]
    rt = resolve_runtime(want["name"])
    if rt.version != want["version"]:
        raise ResQError(f"{info.path.name} was built by {want['name']} {want['version']} and {rt.module} here is "
                        f"{rt.version}: plans run only on the version that built them; rebuild the plan here")
    return rt


def check_plan(info: PlanInfo, sm: int | None, plugin_library: Path | None = None) -> tuple[Path, Runtime]:
    """Every check, in order: the files, the GPU (`sm`: this machine's, None without one), the
    runtime. Returns (plugin library, runtime)."""
    plugins = check_plugins(info, plugin_library)
    check_gpu(info, sm)
    return plugins, check_runtime(info)
