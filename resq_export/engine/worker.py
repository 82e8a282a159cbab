"""The engine build process: `python -m resq_export.engine.worker REQUEST.json RESULT.json`.

build.py starts it with the environment the runtime needs (runtime.worker_environment) and reads
its result; a TensorRT abort or crash ends this process only. It parses model.trt.onnx with the
plugin library loaded, checks the network against the op spec (network.py), builds the plan for
the requested target and writes it to the temporary path it was given."""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path

import onnx

from .network import check_network, library_aliases

_MAX_MESSAGES = 40


def _logger(trt, log_path: str):
    class Collecting(trt.ILogger):
        """Errors kept for the result and appended to log_path as they come (the parent shows the
        last ones if this process dies); the first warnings kept."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                with open(log_path, "a") as f:
                    f.write(" ".join(msg.split()) + "\n")
            elif severity == trt.ILogger.Severity.WARNING and len(self.warnings) < _MAX_MESSAGES:
                self.warnings.append(msg)

    return Collecting()


def _reason(parser, logger) -> str:
    """One line: our plugins' own words where they refused, else the parser's first error."""
    ours = [m for m in logger.errors if m.startswith("[resq plugin")]
    if ours:
        return ours[0]
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
    return " ".join(errors[0].split()) if errors else "no error reported"


def _load_plugins(registry, library: str, logger) -> None:
    if registry.load_library(library) is None:
        said = " ".join(" ".join(logger.errors[-2:]).split())
        raise RuntimeError(f"TensorRT could not load the plugin library {library}: {said or 'no reason given'}")


def build(request: dict) -> dict:
    trt = importlib.import_module(request["module"])
    logger = _logger(trt, request["log"])
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    _load_plugins(builder.get_plugin_registry(), request["plugins"], logger)
    # Strongly typed where the flag exists (TensorRT 10): the int8 weights and KV tensors are plain
    # data for the plugins, not quantised values wanting scales; TensorRT 11 and TensorRT-RTX
    # networks are always strongly typed.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(request["onnx"]):
        raise RuntimeError(f"TensorRT cannot parse {request['onnx']}: {_reason(parser, logger)}")
    parse_s = time.perf_counter() - t0
    profiles = {name: {inp: tuple(tuple(s) for s in shapes) for inp, shapes in per.items()}
                for name, per in request["profiles"].items()}
    graph = onnx.load(request["onnx"], load_external_data=False)
    check = check_network(trt, network, graph, profiles, library_aliases(request["plugins"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request["workspace_mib"] << 20)
    # the KV plugin's present outputs alias its past inputs (the cache updated in place); TensorRT asks
    # the plugins for aliases only with this preview feature on
    config.set_preview_feature(trt.PreviewFeature.ALIASED_PLUGIN_IO_10_03, True)
    # the FP32 layers (the tied head's rotation factor) with or without TF32 tensor cores (build.py:
    # TF32); set both ways, so the plan never depends on the runtime's default
    if request["tf32"]:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if request.get("target_sm") is not None:  # TensorRT-RTX: ahead of time, no GPU needed
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{request['target_sm']}"), 0)
    for name, per_input in profiles.items():
        profile = builder.create_optimization_profile()
        for inp, (lo, opt, hi) in per_input.items():
            profile.set_shape(inp, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise RuntimeError(f"TensorRT refused the {name} optimisation profile: {per_input}")
    if config.num_optimization_profiles != len(profiles):
        raise RuntimeError(f"the builder holds {config.num_optimization_profiles} profiles, not {len(profiles)}")
    t1 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        said = " ".join(" ".join(logger.errors[-3:]).split())
        raise RuntimeError(f"TensorRT failed to build the engine: {said or 'no reason given'}")
    build_s = time.perf_counter() - t1
    with open(request["plan"], "wb") as f:
        f.write(memoryview(plan))
    return {"ok": True, "network": check, "profiles": config.num_optimization_profiles, "parse_s": parse_s,
            "build_s": build_s, "plan_bytes": Path(request["plan"]).stat().st_size, "warnings": logger.warnings}


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    request = json.loads(Path(request_path).read_text())
    try:
        result = build(request)
        code = 0
    except (RuntimeError, ValueError, TypeError, AttributeError, OSError) as e:
        result, code = {"ok": False, "error": str(e)}, 1
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result_path).write_text(json.dumps(result, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
