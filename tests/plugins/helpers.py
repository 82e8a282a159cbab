"""Random operands of the kernel contracts, built with the package's own primitives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from resq_export.layout import LinearLayout
from resq_export.reference import LqerBranch, QuantLinear


def layout(parts: list[tuple[int, int, int, int]]) -> LinearLayout:
    """parts: (groups, width, w_bits, a_bits) -> LinearLayout."""
    sizes, wb, ab = [], [], []
    for groups, width, w, a in parts:
        sizes += [width] * groups
        wb += [w] * groups
        ab += [a] * groups
    return LinearLayout(tuple(sizes), tuple(wb), tuple(ab))


# (name, layout, out features): the ResQ residual split, per-head attn_o (widths not multiples of the
# 64-channel tile, so padding is exercised), plain groups of 64, 8-bit activations everywhere.
LAYOUTS = [
    ("resq_residual", layout([(1, 448, 4, 4), (1, 64, 8, 8)]), 72),
    ("resq_o_heads", layout([(4, 14, 4, 4), (4, 2, 8, 8)]), 40),
    ("groups64", layout([(3, 64, 4, 4)]), 24),
    ("a8", layout([(2, 96, 4, 8), (1, 32, 8, 8)]), 16),
    ("smollm2_qkv", layout([(1, 504, 4, 4), (1, 72, 8, 8)]), 32),
    ("smollm2_gate_up_f25", layout([(6, 72, 4, 4), (2, 72, 8, 8)]), 32),  # --gate-up-high-fraction 0.25, auto groups
]


def random_linear(lay: LinearLayout, n: int, rank: int = 0, bias: bool = False, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    cols = []
    for size, w in zip(lay.group_sizes, lay.w_bits):
        lim = 2 ** (w - 1)
        cols.append(torch.randint(-lim, lim, (n, size), generator=g, dtype=torch.int32))
    qweight = torch.cat(cols, 1)
    wscale = torch.rand(n, len(lay.group_sizes), generator=g) * 0.02 + 1e-3
    lqer = None
    if rank:
        lqer = LqerBranch(torch.randint(-128, 128, (rank, lay.in_features), generator=g, dtype=torch.int32),
                          torch.rand(rank, generator=g) * 0.01 + 1e-4,
                          torch.randint(-128, 128, (n, rank), generator=g, dtype=torch.int32),
                          torch.rand(n, generator=g) * 0.01 + 1e-4)
    b = torch.randn(n, generator=g) if bias else None
    return QuantLinear.from_codes(lay, qweight, wscale, b, lqer)


def contract_weights(lin: QuantLinear):
    """The artifact/ONNX tensors: qweight_low (packed int4 in int8) and qweight_high (int8)."""
    return tuple(None if w is None else w.numpy() for w in (lin.qweight_low, lin.qweight_high))


def activations(t: int, k: int, seed: int = 1) -> torch.Tensor:
    """Outlier-heavy activations, some rows all positive or all negative (zero point at the edge)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, k, generator=g) * torch.exp(torch.randn(k, generator=g))
    if t > 2:
        x[1] = x[1].abs()
        x[2] = -x[2].abs()
    if t > 3:
        x[3] = 0.0
    return x


@dataclass(frozen=True)
class ExportedNode:
    """A resq node of an artifact's TensorRT flavour as the export wrote it, with what the reference
    executor computes it from: the layer's QuantLinear (ResQMixedLinearPrepared) or its online
    Hadamard's left factor (ResQHadamard)."""
    op: str
    name: str
    attrs: dict  # its INT attributes as written (what the ONNX parser hands the plugin's creator)
    inputs: dict  # spec input name -> initializer (numpy), in the node's order; X (the activation) absent
    reference: object
    in_features: int  # K, the last axis of X


def exported_nodes(artifact: Path, layers: tuple[int, ...] | None = None) -> list[ExportedNode]:
    """The ResQMixedLinearPrepared and ResQHadamard nodes of the artifact's TensorRT flavour (of
    `layers`, default all), each with its initializers and its reference."""
    from onnx import AttributeProto, helper, numpy_helper

    from resq_export.artifact import load_artifact
    from resq_export.export.spec import op_spec, prepared_inputs
    from resq_export.export.writer import tensorrt_flavour

    model, quant, _ = load_artifact(artifact)
    proto = tensorrt_flavour(model, quant)
    tensors = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    linears = {f"model.layers.{i}.{role}": getattr(layer, attr) for i, layer in enumerate(model.layers)
               for role, attr in (("attn.qkv_proj", "qkv"), ("attn.o_proj", "o"), ("mlp.gate_up_proj", "gate_up"),
                                  ("mlp.down_proj", "down"))}
    out = []
    for node in proto.graph.node:
        layer = re.search(r"/layers\.(\d+)/", node.name)
        if layers is not None and (layer is None or int(layer.group(1)) not in layers):
            continue
        if node.op_type == "ResQMixedLinearPrepared":
            names = prepared_inputs(node)
            reference = linears[names["wscale"].removesuffix(".wscale")]
            k = reference.in_features
        elif node.op_type == "ResQHadamard":
            names = dict(zip((i["name"] for i in op_spec(node.op_type)["inputs"]), node.input))
            feeds = model.layers[int(layer.group(1))]  # the online Hadamard of the down projection's input
            reference, k = feeds.down_rotation.float(), feeds.down.in_features
        else:
            continue
        ints = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.type == AttributeProto.INT}
        out.append(ExportedNode(node.op_type, node.name, ints,
                                {n: tensors[v] for n, v in names.items() if n != "X"}, reference, k))
    return out


@dataclass(frozen=True)
class ExportedAttention:
    """A ResQKVCacheAttention node of an artifact's TensorRT flavour as the export wrote it."""
    name: str
    attrs: dict  # its INT attributes as written (num_heads, num_kv_heads, head_dim, high_channels, kv_bits, high_bits)
    key_rotation: torch.Tensor | None  # the U_C initializer, None where the node lists ten inputs


def exported_attention(artifact: Path, layer: int = 0) -> ExportedAttention:
    """Layer `layer`'s ResQKVCacheAttention node of the artifact's TensorRT flavour."""
    from onnx import AttributeProto, helper, numpy_helper

    from resq_export.artifact import load_artifact
    from resq_export.export.writer import tensorrt_flavour

    proto = tensorrt_flavour(*load_artifact(artifact)[:2])
    tensors = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "ResQKVCacheAttention" and f"/layers.{layer}/" in node.name:
            ints = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.type == AttributeProto.INT}
            rotation = None
            if len(node.input) == 11:  # key_rotation, the optional last input: an initializer
                rotation = torch.from_numpy(numpy_helper.to_array(tensors[node.input[10]]).copy()).float()
            return ExportedAttention(node.name, ints, rotation)
    raise LookupError(f"{artifact}: no ResQKVCacheAttention node in layer {layer}")
