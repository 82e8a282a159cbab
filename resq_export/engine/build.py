"""`resq-export engine`: parse the TensorRT-flavour ONNX (model.trt.onnx) with the resq plugin
library loaded, set the prefill and decode profiles, build, write the plan and a manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import onnx

from ..errors import ResQError
from ..fileio import atomic_file, atomic_write_text
from ..export.spec import op_version
from ..export.graph import PREPARED_LINEAR, prepared_inputs
from ..export.writer import TRT_FILE, check_onnx_folder, check_tensorrt_flavour
from .profiles import EngineLimits, profile_shapes

log = logging.getLogger(__name__)

PLUGIN_LIBRARY = "libresq_plugins.so"
INSTALL_HINT = (
    "TensorRT is not installed: the engine needs TensorRT >= 10 with its Python bindings "
    "(`pip install tensorrt` from NVIDIA's package index, or the wheel in a TensorRT SDK) on a machine with an "
    "NVIDIA GPU, and the resq plugin library built against it "
    "(`cmake -S . -B build -DRESQ_TENSORRT_ROOT=/path/to/TensorRT && cmake --build build`)."
)


class TensorRTMissing(ResQError):
    """TensorRT (or the plugin library) is not available here; the CLI exits with code 2."""


def require_tensorrt():
    """The tensorrt module, or TensorRTMissing naming what to install."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTMissing(f"{INSTALL_HINT} (import tensorrt: {e})") from None
    return tensorrt


def default_plugin_library() -> Path:
    from ..native.loader import library_dir

    return library_dir() / PLUGIN_LIBRARY


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _device() -> dict:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return {"name": torch.cuda.get_device_name(), "sm": f"{major}{minor}", "cuda": torch.version.cuda}
    except ImportError:
        pass
    return {"name": None, "sm": None, "cuda": None}


def check_gpu_support(model: onnx.ModelProto) -> None:
    """Refuse, before any TensorRT work, a graph whose resq nodes the CUDA kernels cannot run
    (plugins/include/resq_kernels.h): the engine would build and then fail at its first call."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == PREPARED_LINEAR:
            n = dims[prepared_inputs(node)["wscale"]][0]
            if attrs.get("low_groups", 1) and attrs.get("a_bits_low", 4) != 4:
                problems.append(f"{node.name}: {attrs['a_bits_low']}-bit activations (the GPU GEMM takes 4)")
            if attrs.get("high_groups", 0) and attrs.get("a_bits_high", 8) != 8:
                problems.append(f"{node.name}: {attrs['a_bits_high']}-bit high-part activations (the GPU GEMM takes 8)")
            if n % 8:
                problems.append(f"{node.name}: {n} output features (the GPU GEMM needs a multiple of 8)")
        elif node.op_type == "ResQKVCacheAttention" and attrs.get("head_dim", 0) > 256:
            problems.append(f"{node.name}: head_dim {attrs['head_dim']} (the GPU attention takes up to 256)")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ResQError("the CUDA kernels cannot run this model: " + "; ".join(problems[:3]) + more +
                        "; such a model runs in ONNX Runtime only "
                        "(for TensorRT quantise with 4-bit activations, e.g. --method resq)")


def _load_plugins(registry, plugins: Path) -> None:
    """Load the plugin library once per process: TensorRT returns no handle for a library whose
    creators are already registered."""
    if registry.get_creator(PREPARED_LINEAR, str(op_version(PREPARED_LINEAR)), "resq") is not None:
        return
    if registry.load_library(str(plugins)) is None:
        raise ResQError(f"TensorRT could not load the plugin library {plugins}")


def build_engine(onnx_dir: Path, engine_path: Path, plugin_library: Path | None = None,
                 limits: EngineLimits | None = None, workspace_mib: int = 4096) -> dict:
    """Build out.plan (and out.plan.json, the manifest) from an ONNX folder. Raises TensorRTMissing
    when TensorRT or the plugin library is absent, ResQError when the network cannot be built."""
    limits = limits or EngineLimits()
    meta = check_onnx_folder(onnx_dir)
    trt_onnx = Path(onnx_dir) / TRT_FILE
    if not trt_onnx.is_file():
        raise ResQError(f"{trt_onnx} is missing: re-export the ONNX folder with this resq-export")
    graph = onnx.load(str(trt_onnx), load_external_data=False)
    check_tensorrt_flavour(graph, trt_onnx)
    check_gpu_support(graph)
    shapes = profile_shapes(graph, limits)
    trt = require_tensorrt()
    plugins = Path(plugin_library or os.environ.get("RESQ_PLUGIN_LIBRARY") or default_plugin_library())
    if not plugins.is_file():
        raise TensorRTMissing(f"{plugins} is missing: build the plugin library against TensorRT "
                              "(`cmake -S . -B build -DRESQ_TENSORRT_ROOT=/path/to/TensorRT && cmake --build build`)")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    _load_plugins(builder.get_plugin_registry(), plugins)
    # Strongly typed: the int8 weights and KV tensors are plain data for the plugins, not quantised
    # values wanting scales (TensorRT 10's weakly typed default); TensorRT 11 is always strongly typed.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(trt_onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ResQError(f"TensorRT cannot parse {trt_onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for name, per_input in shapes.items():
        profile = builder.create_optimization_profile()
        for inp, (lo, opt, hi) in per_input.items():
            profile.set_shape(inp, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise ResQError(f"TensorRT refused the {name} optimisation profile: {per_input}")
        log.info("profile %s: %s", name, per_input)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ResQError("TensorRT failed to build the engine (see its log above)")
    manifest = {
        "tool": "resq-export", "onnx": str(onnx_dir), "tensorrt": trt.__version__, "device": _device(),
        "ops": meta.get("tensorrt_ops", {}), "spec_version": meta.get("spec_version"),
        "plugin_library": {"path": str(plugins), "sha256": _sha256(plugins)},
        "profiles": {n: {k: [list(s) for s in v] for k, v in p.items()} for n, p in shapes.items()},
        "limits": limits.__dict__,
    }
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(engine_path, "wb") as f:
        f.write(bytes(plan))
    atomic_write_text(Path(str(engine_path) + ".json"), json.dumps(manifest, indent=2))
    return manifest


__all__ = ["EngineLimits", "TensorRTMissing", "build_engine", "require_tensorrt"]
