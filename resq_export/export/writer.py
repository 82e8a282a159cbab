"""Write and read the ONNX folder: model.onnx (ORT flavour, with function bodies), model.trt.onnx
(the same graph without them, for the TensorRT parser and the plugins) and export.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .. import __version__
from ..artifact import load_artifact, read_manifest
from ..config import QuantConfig
from ..decoder import Decoder
from ..errors import ArtifactError
from ..fileio import atomic_directory, read_json
from .graph import build_onnx
from .kernel_layout import PaddedLayout, prepare_lqer_a, prepare_weights
from .spec import DOMAIN, load_spec, op_spec, op_version

ORT_FILE = "model.onnx"
TRT_FILE = "model.trt.onnx"
META_FILE = "export.json"
_EXTERNAL_THRESHOLD = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with room for the graph


PREPARED_LINEAR = "ResQMixedLinearPrepared"  # what the TensorRT flavour writes for each ResQMixedLinear


def _spec_inputs(op: str) -> list[str]:
    return [i["name"] for i in op_spec(op)["inputs"]]


def prepared_inputs(node: onnx.NodeProto) -> dict[str, str]:
    """Input name -> tensor of a ResQMixedLinearPrepared node. The node lists only present inputs and
    its attributes say which those are (the plugin's presence table, MixedLinearPlugin::compact)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    absent = set()
    if not attrs.get("low_groups", 1):
        absent.add("weight_low")
    if not attrs.get("high_groups", 0):
        absent.add("weight_high")
    if not attrs.get("lqer_rank", 0):
        absent.update(n for n in _spec_inputs(PREPARED_LINEAR) if n.startswith("lqer_"))
    names = [n for n in _spec_inputs(PREPARED_LINEAR) if n not in absent]
    if len(names) != len(node.input):
        raise ArtifactError(f"{node.name}: {len(node.input)} inputs where its attributes imply {len(names)}")
    return dict(zip(names, node.input))


def _prepare_linear(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> dict[str, onnx.TensorProto]:
    """Turn a ResQMixedLinear node into ResQMixedLinearPrepared in place; returns the new tensors."""
    given = dict(zip(_spec_inputs(node.op_type), node.input))
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def array(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(initializers[given[name]]) if given.get(name) else None

    w_low, w_high = array("qweight_low"), array("qweight_high")
    k_low = 0 if w_low is None else 2 * w_low.shape[1]
    lay = PaddedLayout(k_low + (0 if w_high is None else w_high.shape[1]), k_low,
                       attrs.get("low_groups", 1), attrs.get("high_groups", 0))
    prefix = given["wscale"].removesuffix(".wscale")
    new: dict[str, np.ndarray | None] = {}
    w_low, new["weight_high"], new["weight_sums"] = prepare_weights(lay, w_low, w_high)
    new["weight_low"] = w_low if lay.low_groups else None
    if not given.get("bias"):  # a plugin input is never absent: a zero bias where the model has none
        new["bias"] = np.zeros(initializers[given["wscale"]].dims[0], np.float32)
    if given.get("lqer_a"):
        new["lqer_a"], new["lqer_a_sums"] = prepare_lqer_a(lay, array("lqer_a"))
    inputs, tensors = [given["X"]], {}
    for name in _spec_inputs(PREPARED_LINEAR)[1:]:
        if new.get(name) is not None:
            inputs.append(f"{prefix}.{name}.prepared")
            tensors[inputs[-1]] = numpy_helper.from_array(new.pop(name), inputs[-1])
        elif given.get(name):
            inputs.append(given[name])  # wscale, bias and LQER's a_scale, b, b_scale: as they are
    node.op_type = PREPARED_LINEAR
    del node.input[:]
    node.input.extend(inputs)
    for a in node.attribute:
        if a.name == "plugin_version":
            a.s = str(op_version(PREPARED_LINEAR)).encode()
    node.attribute.append(onnx.helper.make_attribute("k_low", k_low))
    return tensors


def tensorrt_flavour(model: Decoder, quant: QuantConfig) -> onnx.ModelProto:
    """The graph for TensorRT's ONNX parser and the resq plugins.

    - float32 throughout (no float64 islands: TensorRT has no float64 kernels);
    - custom nodes without function bodies (overloads only select those);
    - every ResQMixedLinear becomes ResQMixedLinearPrepared: weights in the GEMM's layout (padded
      groups, code sums), so the plugin runs on the engine's constants as they are;
    - every custom node lists only the inputs it has: absent optional inputs are dropped rather than
      written as "" (which the parser turns into null tensors of unspecified type), and a linear
      without bias gets a zero bias, so the plugin tells its inputs apart by its attributes alone
      (high_groups, lqer_rank) and the count (key_rotation);
    - uint8 tensors (KV codes and zero points) are int8 with the same bytes: TensorRT supports
      neither uint8 plugin I/O nor uint8 network I/O outside Cast/Identity layers.
    """
    trt = build_onnx(model, quant, float_islands=False)
    del trt.functions[:]
    graph = trt.graph
    initializers = {t.name: t for t in graph.initializer}
    uses = Counter(i for n in graph.node for i in n.input)
    added: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        node.overload = ""
        if node.op_type == "ResQMixedLinear":
            replaced = {i for i in node.input if i}
            added.extend(_prepare_linear(node, initializers).values())
            for name in replaced - set(node.input):  # free the contract weights as we go: one copy at a time
                if uses[name] == 1 and name in initializers:
                    initializers.pop(name).Clear()
        else:
            inputs = [i for i in node.input if i]
            del node.input[:]
            node.input.extend(inputs)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name and t.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])
    custom_inputs = {i for n in graph.node if n.domain == DOMAIN for i in n.input}
    for value in (*graph.input, *graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == onnx.TensorProto.UINT8:
            if value.name not in custom_inputs and not any(value.name in n.output for n in graph.node
                                                           if n.domain == DOMAIN):
                raise ValueError(f"{value.name}: a uint8 tensor outside the resq ops has no TensorRT form")
            tensor_type.elem_type = onnx.TensorProto.INT8
    return trt


def check_tensorrt_flavour(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse a TensorRT-flavour graph written by another resq-export (the plugins would not match)."""
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = attrs.get("plugin_version", b"none")
        version = version.decode() if isinstance(version, bytes) else str(version)
        known = node.op_type in load_spec()["ops"] and node.op_type != "ResQMixedLinear"
        if not known or version != str(op_version(node.op_type)):
            raise ArtifactError(f"{path}: {node.name} is {node.op_type} version {version}, which this resq-export's "
                                "plugins do not run; re-export the ONNX folder with this version")


def _save(m: onnx.ModelProto, path: Path, external_over: int) -> bool:
    """Save one flavour; over external_over bytes its weights go to <file>.data. Returns whether they did."""
    external = m.ByteSize() > external_over
    if external:
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(m, str(path))
    return external


def _custom_ops(m: onnx.ModelProto) -> dict[str, int]:
    return {op: op_version(op) for op in sorted({n.op_type for n in m.graph.node if n.domain == DOMAIN})}


def export_onnx(artifact: Path, out_dir: Path, external_over: int = _EXTERNAL_THRESHOLD) -> dict:
    """Both flavours, one after the other: only one graph's weights are in memory at a time. A
    flavour over external_over bytes (by default protobuf's limit) keeps its weights in <file>.data."""
    model, quant, tokenizer = load_artifact(artifact)
    with atomic_directory(Path(out_dir)) as tmp:
        proto = build_onnx(model, quant)
        meta = {
            "tool": "resq-export", "tool_version": __version__, "method": quant.method,
            "spec_version": load_spec()["spec_version"], "ops": _custom_ops(proto),
            "source_artifact": {"path": str(artifact), "manifest_sha256_of_weights":
                                read_manifest(artifact)["files"].get("model.safetensors")},
            "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output],
        }
        meta["external_data"] = _save(proto, tmp / ORT_FILE, external_over)
        onnx.checker.check_model(str(tmp / ORT_FILE), full_check=not meta["external_data"])  # by path: >2 GB too
        del proto
        trt = tensorrt_flavour(model, quant)
        meta["tensorrt_ops"] = _custom_ops(trt)
        meta["tensorrt_external_data"] = _save(trt, tmp / TRT_FILE, external_over)
        del trt
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def check_onnx_folder(onnx_dir: Path) -> dict:
    """Refuse folders that are not ours, corrupt, or from another op version, with a clear message."""
    onnx_dir = Path(onnx_dir)
    meta_path = onnx_dir / META_FILE
    if not meta_path.is_file() or not (onnx_dir / ORT_FILE).is_file():
        raise ArtifactError(f"{onnx_dir} is not a resq-export ONNX folder (needs {ORT_FILE} and {META_FILE})")
    meta = read_json(meta_path, ArtifactError)
    try:
        proto = onnx.load(str(onnx_dir / ORT_FILE), load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"{onnx_dir / ORT_FILE} is not a readable ONNX file: {e}") from None
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = {a.name: a for a in node.attribute}
        found = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "none"
        try:
            expected = str(op_version(node.op_type))
        except KeyError:
            raise ArtifactError(f"{node.name}: unknown custom op {node.op_type!r}") from None
        if found != expected:
            raise ArtifactError(
                f"{node.name}: {node.op_type} has op version {found}; this resq-export reads version {expected}; "
                "re-export the model with this version"
            )
    return meta
