"""A stand-in for a deserialised TensorRT plan and its execution context, for the TensorRT backend's
binding logic on a machine without a GPU (no TensorRT plan can be deserialised here: TensorRT-RTX
1.7's deserialize_cuda_engine fails with cudaError 35, "CUDA driver version is insufficient").

It implements exactly the calls runtime/trt_backend.py makes, from real data: the tensors (names,
I/O modes, dtypes, shapes with -1 where dynamic) are those of the TensorRT flavour of the export
(model.trt.onnx: int8 KV codes, as the plan carries them), the optimisation profiles are those
engine/profiles.py gives the real build (prefill, decode), and `execute_async_v3` runs the ONNX
Runtime flavour of the same export (model.onnx) on the host buffers at the addresses the backend
bound, with the shapes it set, writing the outputs back to the addresses bound to them. So a wrong
name, shape, profile or alias shows up as wrong tokens (or as TensorRT's refusal of the shape)."""

from __future__ import annotations

import ctypes
import enum
import math
from pathlib import Path

import numpy as np
import onnx

from resq_export.engine.profiles import EngineLimits, profile_shapes
from resq_export.export.writer import TRT_FILE
from resq_export.validate.ort_runner import OrtDecoder

TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 INT64")
_ONNX_TO_TRT = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF,
                onnx.TensorProto.INT8: DataType.INT8, onnx.TensorProto.UINT8: DataType.UINT8,
                onnx.TensorProto.INT32: DataType.INT32, onnx.TensorProto.INT64: DataType.INT64}
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.UINT8: np.uint8,
          DataType.INT32: np.int32, DataType.INT64: np.int64}


def _read(ptr: int, dtype, shape) -> np.ndarray:
    n = math.prod(shape) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), np.uint8).copy().view(dtype).reshape(shape)


def _write(ptr: int, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    ctypes.memmove(ptr, array.ctypes.data, array.nbytes)


class StandInEngine:
    def __init__(self, onnx_dir: Path, limits: EngineLimits, profiles=("prefill", "decode")):
        graph = onnx.load(str(Path(onnx_dir) / TRT_FILE), load_external_data=False)
        initializers = {i.name for i in graph.graph.initializer}
        self.tensors = {}
        for mode, values in ((TensorIOMode.INPUT, graph.graph.input), (TensorIOMode.OUTPUT, graph.graph.output)):
            for v in values:
                if v.name in initializers:
                    continue
                t = v.type.tensor_type
                shape = tuple(d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim)
                self.tensors[v.name] = (mode, _ONNX_TO_TRT[t.elem_type], shape)
        shapes = profile_shapes(graph, limits)
        self.profiles = [shapes[p] for p in profiles]
        self.decoder = OrtDecoder(onnx_dir)
        self.calls: list[tuple] = []  # what the backend asked, for the tests to read

    # the ICudaEngine calls
    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, i: int) -> str:
        return list(self.tensors)[i]

    def get_tensor_mode(self, name: str):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str):
        return self.tensors[name][1]

    def get_tensor_shape(self, name: str):
        return self.tensors[name][2]

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_profile_shape(self, name: str, profile: int):
        return self.profiles[profile][name]

    def get_aliased_input_tensor(self, name: str):
        return name.replace("present.", "past.", 1) if name.startswith("present.") else None

    def create_execution_context(self) -> "StandInContext":
        return StandInContext(self)


class StandInContext:
    def __init__(self, engine: StandInEngine):
        self.engine = engine
        self.profile = 0
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        self.engine.calls.append(("profile", profile))
        if not 0 <= profile < self.engine.num_optimization_profiles:
            return False
        self.profile, self.shapes = profile, {}  # shapes are set again after a switch, as TensorRT needs
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        mode, _, dims = self.engine.tensors.get(name, (None, None, ()))
        if mode is not TensorIOMode.INPUT or len(shape) != len(dims):
            return False
        lo, _, hi = self.engine.profiles[self.profile][name]
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(int(s) for s in shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine.tensors:
            return False
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        e = self.engine
        inputs = [n for n, (m, _, _) in e.tensors.items() if m is TensorIOMode.INPUT]
        if any(n not in self.shapes or n not in self.addresses for n in inputs) or \
                any(n not in self.addresses for n in e.tensors):
            return False  # TensorRT refuses a call with an input shape or an address unset
        session = e.decoder.session
        feeds = {}
        for inp in session.get_inputs():
            array = _read(self.addresses[inp.name], _NUMPY[e.tensors[inp.name][1]], self.shapes[inp.name])
            feeds[inp.name] = array.view(np.uint8) if "uint8" in inp.type else array  # the ORT flavour's uint8
        e.calls.append(("execute", self.profile, self.shapes["input_ids"]))
        for name, value in zip(e.decoder.output_names, session.run(None, feeds)):
            _write(self.addresses[name], value.astype(_NUMPY[e.tensors[name][1]], copy=False)
                   if value.dtype != np.uint8 else value.view(np.int8))
        return True
