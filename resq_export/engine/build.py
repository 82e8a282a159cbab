"""`resq-export engine`: build a TensorRT plan from the TensorRT-flavour ONNX (model.trt.onnx) with
the resq plugin library, for the prefill and decode profiles, and write it with a manifest.

What can be refused without TensorRT is refused first (the graph's version, what the kernels run,
the target GPU); the parse, network check and build then run in a separate process (worker.py)
with the runtime's environment; the plan appears under its name only when whole."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import ResQError
from ..export.spec import DOMAIN, PREPARED_LINEAR, node_attributes, op_spec, prepared_inputs
from ..export.folder import TRT_FILE, check_onnx_folder, check_tensorrt_flavour
from ..manifests import PLAN_MANIFEST, check_schema
from ..fileio import atomic_path, atomic_write_text, sha256_file
from .profiles import EngineLimits, profile_shapes
from .runtime import (PLUGIN_HINT, Runtime, TensorRTMissing, check_kernel_target, choose_target, kernel_archs,
                      local_sm, parse_sm, resolve_runtime, worker_environment)
from .weights import weight_accounting

log = logging.getLogger(__name__)

PLUGIN_LIBRARY = "libresq_plugins.so"
MANIFEST_TOOL = "resq-export"
# The engine's float layers (the LM head's rotation factor; the head itself is fp16, docs/ops.md)
# in full FP32: the model is validated against FP32, and TF32's 10-bit inputs cost as much
# accuracy as the fp16 head (docs/plugins.md, "Plan size"). Recorded in out.plan.json.
TF32 = False


@dataclass(frozen=True)
class EngineSetup:
    """Everything an engine build needs besides the model, checked: the runtime, the GPU it builds
    for, the plugin library and the kernels' cubins."""

    runtime: Runtime
    target_sm: int
    plugins: Path
    kernel_archs: tuple[str, ...]
    triton: dict | None = None  # the manifest's "triton_kernels" (triton_kernels())


TRITON_LIBRARY = "libresq_triton.so"


def triton_kernels(plugins: Path, sm: int) -> dict | None:
    """The Triton kernels embedded beside the plugin library (libresq_triton.so, where the plugins'
    $ORIGIN run path finds it): refuses a target for which some kernel has no cubin (the loader's own
    choice, asked without a GPU), and returns what the manifest records: the triton and ptxas
    versions that compiled the cubins and each cubin's sha256. None when the library is absent."""
    from ..native import triton as T

    path = Path(plugins).with_name(TRITON_LIBRARY)
    if not path.is_file():
        return None
    try:
        rows = T.kernels(path)
        versions = T.versions(path)
    except OSError as e:  # typically libcudart is not on the library path
        raise TensorRTMissing(f"cannot load {path}: {e}") from None
    for name in sorted({r.name for r in rows}):
        try:
            T.select(name, sm // 10, sm % 10, path)
        except ValueError as e:
            raise ResQError(f"sm_{sm} cannot run the plugins' kernels: {e}") from None
    triton_version, _, ptxas_version = versions.removeprefix("triton ").partition("; ptxas ")
    return {"library": {"path": str(path.resolve()), "sha256": sha256_file(path)}, "triton": triton_version,
            "ptxas": ptxas_version, "cubins": {f"{r.name}.sm_{r.arch}": r.sha256 for r in rows}}


def default_plugin_library() -> Path:
    from ..native.loader import library_dir

    return library_dir() / PLUGIN_LIBRARY


def prepare_engine(runtime: str = "auto", target_sm: str | int | None = None,
                   plugin_library: Path | None = None) -> EngineSetup:
    """Resolve and check the build's environment. Raises TensorRTMissing (exit code 2) when the
    runtime or the plugin library is absent, ResQError when the target cannot work."""
    if target_sm is not None:
        parse_sm(target_sm)  # a misspelt target is the user's to fix, whatever is installed
    rt = resolve_runtime(runtime)
    sm = choose_target(rt, target_sm, local_sm())
    plugins = Path(plugin_library or os.environ.get("RESQ_PLUGIN_LIBRARY") or default_plugin_library())
    if not plugins.is_file():
        raise TensorRTMissing(f"the plugin library {plugins} is missing: {PLUGIN_HINT}")
    archs = kernel_archs(plugins)
    check_kernel_target(archs, sm)
    return EngineSetup(rt, sm, plugins.resolve(), tuple(archs), triton_kernels(plugins, sm))


def check_gpu_support(model: onnx.ModelProto) -> None:
    """Refuse, before any TensorRT work, a graph whose resq nodes the CUDA kernels cannot run
    (plugins/common/resq_kernels.h): the engine would build and then fail at its first call."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = node_attributes(node)
        gpu = op_spec(node.op_type).get("gpu", {})  # what the CUDA kernels run (ops.json)
        if node.op_type == PREPARED_LINEAR:
            n = dims[prepared_inputs(node)["wscale"]][0]
            # each part present quantises its activations to one of the widths the kernels are compiled for
            # (the plugin's creator refuses the same from the same entry); an absent part's is not looked at
            takes = " or ".join(str(b) for b in gpu["a_bits"])
            for groups, bits, part in (("low_groups", "a_bits_low", ""), ("high_groups", "a_bits_high", "high-part ")):
                if attrs[groups] and attrs[bits] not in gpu["a_bits"]:
                    problems.append(f"{node.name}: {attrs[bits]}-bit {part}activations (the GPU kernels take {takes})")
            if n % gpu["n_multiple"]:
                problems.append(f"{node.name}: {n} output features (the GPU GEMM needs a multiple of "
                                f"{gpu['n_multiple']})")
        elif node.op_type == "ResQKVCacheAttention":
            group = attrs.get("num_heads", 1) // max(1, attrs.get("num_kv_heads", 1))
            for what, value, bound in (("head_dim", attrs.get("head_dim", 0), gpu["max_head_dim"]),
                                       ("high channels", attrs.get("high_channels", 0), gpu["max_high_channels"]),
                                       ("query heads per KV head", group, gpu["max_group"])):
                if value > bound:
                    problems.append(f"{node.name}: {what} {value} (the GPU attention takes up to {bound})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ResQError("the CUDA kernels cannot run this model: " + "; ".join(problems[:3]) + more +
                        "; such a model runs in ONNX Runtime only "
                        "(for TensorRT quantise with 4- or 8-bit activations, e.g. --method resq)")


def _head_dtype(graph: onnx.ModelProto) -> str:
    """The dtype the LM head's Gemm reads its weight in (float16 where the table is stored so:
    docs/ops.md, the LM head)."""
    dtypes = {t.name: t.data_type for t in graph.graph.initializer}
    gemm = next((n for n in graph.graph.node if n.op_type == "Gemm" and n.input[1] in dtypes), None)
    return "none" if gemm is None else onnx.TensorProto.DataType.Name(dtypes[gemm.input[1]]).lower()


def _check_engine_path(engine_path: Path) -> None:
    """Never overwrite a file resq-export did not write: an existing plan is replaced only when its
    manifest says it is ours."""
    if not engine_path.exists():
        return
    manifest = Path(str(engine_path) + ".json")
    try:  # a manifest of another shape (damaged, or another tool's) does not make the plan ours
        data = check_schema(json.loads(manifest.read_text()), PLAN_MANIFEST, manifest, "")
        ours = data["tool"] == MANIFEST_TOOL
    except (OSError, ValueError, ResQError):
        ours = False
    if engine_path.is_dir() or not ours:
        raise ResQError(f"{engine_path} exists and is not a plan resq-export wrote (no {manifest.name} of ours): "
                        "choose another --engine path or remove it yourself")


def _run_worker(setup: EngineSetup, request: dict) -> dict:
    """Run worker.py in its own process; its result, or ResQError with TensorRT's words."""
    with tempfile.TemporaryDirectory(prefix="resq-engine-") as tmp:
        req, res, errors = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "errors.log"
        req.write_text(json.dumps({**request, "log": str(errors)}))
        env = worker_environment(setup.runtime, Path(tmp))
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        proc = subprocess.run([sys.executable, "-m", "resq_export.engine.worker", str(req), str(res)], env=env)
        said = errors.read_text().splitlines() if errors.is_file() else []
        for line in said:
            log.info("TensorRT: %s", line)
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            last = f"; TensorRT's last error: {said[-1]}" if said else ""
            raise ResQError(f"the TensorRT build process ended with {name}{last}")
        if not res.is_file():
            raise ResQError(f"the TensorRT build process exited with code {proc.returncode} and no result")
        result = json.loads(res.read_text())
    if not result.get("ok"):
        raise ResQError(result.get("error", "the TensorRT build failed"))
    return result


def build_engine(onnx_dir: Path, engine_path: Path, setup: EngineSetup | None = None,
                 limits: EngineLimits | None = None, workspace_mib: int = 4096, *, runtime: str = "auto",
                 target_sm: str | int | None = None, plugin_library: Path | None = None,
                 verify: str = "quick") -> dict:
    """Build out.plan and out.plan.json (the manifest) from an ONNX folder; returns the manifest.
    Without `setup`, prepare_engine(runtime, target_sm, plugin_library) once the model is checked.
    Raises TensorRTMissing when the runtime or the plugin library is absent, ResQError when the
    model or target cannot be built. Nothing is written unless the plan is whole."""
    limits = limits or EngineLimits()
    engine_path = Path(engine_path)
    meta = check_onnx_folder(onnx_dir, verify)
    trt_onnx = Path(onnx_dir) / TRT_FILE
    if not trt_onnx.is_file():
        raise ResQError(f"{trt_onnx} is missing: re-export the ONNX folder with this resq-export")
    graph = onnx.load(str(trt_onnx), load_external_data=False)
    check_tensorrt_flavour(graph, trt_onnx)
    check_gpu_support(graph)
    shapes = profile_shapes(graph, limits)
    _check_engine_path(engine_path)
    setup = setup or prepare_engine(runtime, target_sm, plugin_library)
    log.info("building for sm_%s with %s %s", setup.target_sm, setup.runtime.name, setup.runtime.version)

    t0 = time.perf_counter()
    with atomic_path(engine_path) as tmp_plan:  # the worker writes the plan; it takes its name when whole
        request = {"module": setup.runtime.module, "onnx": str(trt_onnx.resolve()), "plugins": str(setup.plugins),
                   "target_sm": setup.target_sm if setup.runtime.name == "tensorrt-rtx" else None,
                   "workspace_mib": workspace_mib, "plan": str(tmp_plan), "tf32": TF32,
                   "profiles": {n: {k: [list(s) for s in v] for k, v in p.items()} for n, p in shapes.items()}}
        result = _run_worker(setup, request)
        manifest = {
            "tool": MANIFEST_TOOL, "onnx": str(Path(onnx_dir).resolve()), "trt_onnx_sha256": sha256_file(trt_onnx),
            "runtime": {"name": setup.runtime.name, "version": setup.runtime.version},
            "target_sm": setup.target_sm, "local_sm": local_sm(),
            "ops": meta.get("tensorrt_ops", {}), "spec_version": meta.get("spec_version"),
            "plugin_library": {"path": str(setup.plugins), "sha256": sha256_file(setup.plugins)},
            "kernel_archs": list(setup.kernel_archs), "triton_kernels": setup.triton,
            "profiles": request["profiles"], "limits": limits.__dict__,
            "network": result["network"], "plan_bytes": result["plan_bytes"],
            "weights": weight_accounting(graph, result["plan_bytes"]),
            "precision": {"tf32": TF32, "lm_head": _head_dtype(graph)},
            "build": {"wall_s": round(time.perf_counter() - t0, 2), "parse_s": round(result["parse_s"], 2),
                      "build_s": round(result["build_s"], 2), "peak_rss_mb": round(result["peak_rss_mb"], 1)},
        }
    atomic_write_text(Path(str(engine_path) + ".json"), json.dumps(manifest, indent=2))
    return manifest


__all__ = ["EngineLimits", "EngineSetup", "TensorRTMissing", "build_engine", "prepare_engine"]
