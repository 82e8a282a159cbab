"""Open a plan: its manifest checked against this machine (plan.py), then the runtime that built it,
our plugin library registered with it, the plan deserialised and its backend bound (trt_backend.py)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ..engine.runtime import local_sm
from ..errors import ResQError
from .device import device_memory
from .plan import PlanInfo, check_plan
from .trt_backend import TensorRTBackend

log = logging.getLogger(__name__)


def _logger(trt):
    class Logger(trt.ILogger):
        """TensorRT's errors kept (the refusal quotes the last), everything logged at debug level."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def deserialize(info: PlanInfo, plugins: Path, module: str):
    """(runtime, engine): the runtime must outlive the engine, so both are kept."""
    trt = importlib.import_module(module)
    logger = _logger(trt)
    runtime = trt.Runtime(logger)
    if runtime.get_plugin_registry().load_library(str(plugins)) is None:
        said = "; ".join(logger.errors[-2:]) or "no reason given"
        raise ResQError(f"TensorRT could not load the plugin library {plugins}: {said}")
    engine = runtime.deserialize_cuda_engine(info.path.read_bytes())
    if engine is None:
        said = logger.errors[-1] if logger.errors else "no reason given"
        raise ResQError(f"TensorRT could not deserialise {info.path}: {said}")
    return runtime, engine, logger


def open_plan(info: PlanInfo, plugin_library: Path | None = None) -> TensorRTBackend:
    plugins, rt = check_plan(info, local_sm(), plugin_library)
    memory = device_memory()
    runtime, engine, logger = deserialize(info, plugins, rt.module)
    backend = TensorRTBackend(engine, memory)
    backend.keep = (runtime, logger)  # the engine's runtime and logger live as long as it
    return backend
