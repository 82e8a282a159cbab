"""A small helper to write ONNX graphs and function bodies as straight-line code: each call adds one
node and returns its output name; constants become Constant nodes (functions) or initializers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
FLOAT, DOUBLE, INT8, UINT8, INT32, INT64 = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8,
                                            TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64)
FLOAT16 = TensorProto.FLOAT16


class ExternalData:
    """Writes initializers' bytes to one file as they are made (ONNX external data), so a graph is
    built without its weights in memory: at 8B they would be several GB on top of the model."""

    ALIGN = 64  # offsets a multiple of this, for the runtimes that map the file

    def __init__(self, path: Path):
        self.path = Path(path)
        self.size = 0
        self._file = open(self.path, "wb")

    def tensor(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        arr = np.ascontiguousarray(array)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))  # ONNX stores little-endian
        pad = -self.size % self.ALIGN
        self._file.write(b"\0" * pad)
        offset = self.size + pad
        self._file.write(arr.reshape(-1).view(np.uint8).data)
        self.size = offset + arr.nbytes
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape,
                             data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.path.name), ("offset", offset), ("length", arr.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        return tensor

    def __enter__(self) -> "ExternalData":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


class Builder:
    def __init__(self, prefix: str = "", inline_constants: bool = True, external: ExternalData | None = None):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inline_constants = inline_constants
        self.external = external
        self._count: dict[str, int] = {}

    def _name(self, base: str) -> str:
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def scope(self, prefix: str) -> "Builder":
        """A builder writing into the same lists with a longer name prefix."""
        child = Builder.__new__(Builder)
        child.__dict__ = dict(self.__dict__)
        child.prefix = prefix
        return child

    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, name: str | None = None,
           domain: str = "", overload: str = "", **attrs) -> str | list[str]:
        node_name = self._name(f"{self.prefix}/{name or op_type}")
        outs = outputs if isinstance(outputs, list) else [f"{node_name}_out{i}" for i in range(outputs)]
        node = helper.make_node(op_type, list(inputs), outs, name=node_name, domain=domain, **attrs)
        if overload:
            node.overload = overload
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, dtype=np.float32, name: str = "const") -> str:
        arr = np.asarray(value, dtype=dtype)
        out = self._name(f"{self.prefix}/{name}")
        tensor = numpy_helper.from_array(arr, out)
        if self.inline_constants:
            self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node", value=tensor))
        else:
            self.initializers.append(tensor)
        return out

    def f64(self, x: str) -> str:
        """Enter a float island (decoder.py): compute in float64 from here."""
        return self.op("Cast", x, to=DOUBLE)

    def f32(self, x: str) -> str:
        """Leave a float island: one rounding to float32."""
        return self.op("Cast", x, to=FLOAT)

    def i64(self, *values: int) -> str:
        return self.const(list(values), np.int64, "shape")

    def initializer(self, name: str, array: np.ndarray) -> str:
        if self.external is not None:
            self.initializers.append(self.external.tensor(name, array))
        else:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name
