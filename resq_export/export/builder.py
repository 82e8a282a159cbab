"""A small helper to write ONNX graphs and function bodies as straight-line code: each call adds one
node and returns its output name; constants become Constant nodes (functions) or initializers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
FLOAT, DOUBLE, INT8, UINT8, INT32, INT64 = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8,
                                            TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64)


class Builder:
    def __init__(self, prefix: str = "", inline_constants: bool = True):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inline_constants = inline_constants
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
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name
