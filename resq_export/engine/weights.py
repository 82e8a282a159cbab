"""The plan's weight accounting (out.plan.json "weights"): how many bytes of a plan are the weights
it carries, and how many are everything else (kernels, the graph's description per profile, copies
of constants TensorRT made).

The weights are the initializers of model.trt.onnx at their stored width (TensorRT keeps plugin
inputs and the fp16 table as they are: issue 34 found each once in the plan, byte for byte); a
plan that holds a constant twice, or widened, shows it as more `other_bytes`."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def initializer_bytes(graph: onnx.ModelProto) -> dict[str, int]:
    """Bytes of the graph's initializers by ONNX dtype name, from their dims (external data not read)."""
    out: dict[str, int] = {}
    for t in graph.graph.initializer:
        name = onnx.TensorProto.DataType.Name(t.data_type)
        size = int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        out[name] = out.get(name, 0) + size
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def decoder_layers(graph: onnx.ModelProto) -> int:
    """The number of decoder layers: one KV cache (past.<i>.*) per layer."""
    return len({i.name.split(".")[1] for i in graph.graph.input if i.name.startswith("past.")})


def weight_accounting(graph: onnx.ModelProto, plan_bytes: int) -> dict:
    by_dtype = initializer_bytes(graph)
    weights = sum(by_dtype.values())
    return {"initializer_bytes": weights, "by_dtype": by_dtype, "other_bytes": plan_bytes - weights,
            "plan_over_weights": round(plan_bytes / weights, 4) if weights else None,
            "layers": decoder_layers(graph)}
