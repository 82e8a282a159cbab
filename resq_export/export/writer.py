"""Write and read the ONNX folder: model.onnx (ORT flavour, with function bodies), model.trt.onnx
(the same graph without them, for the TensorRT parser and the plugins) and export.json."""

from __future__ import annotations

import json
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
from .spec import DOMAIN, load_spec, op_version

ORT_FILE = "model.onnx"
TRT_FILE = "model.trt.onnx"
META_FILE = "export.json"
WEIGHTS_FILE = "model.onnx.data"
_EXTERNAL_THRESHOLD = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with room for the graph


def _input_index(op: str, name: str) -> int:
    return [i["name"] for i in load_spec()["ops"][op]["inputs"]].index(name)


def tensorrt_flavour(model: Decoder, quant: QuantConfig) -> onnx.ModelProto:
    """The graph for TensorRT's ONNX parser and the resq plugins.

    - float32 throughout (no float64 islands: TensorRT has no float64 kernels);
    - custom nodes without function bodies (overloads only select those);
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
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.domain != DOMAIN:
            continue
        node.overload = ""
        inputs = list(node.input)
        if node.op_type == "ResQMixedLinear":
            bias, wscale = (_input_index(node.op_type, name) for name in ("bias", "wscale"))
            inputs += [""] * (bias + 1 - len(inputs))
            if inputs[bias] == "":
                inputs[bias] = f"{inputs[wscale]}.zero_bias"
                n = shapes[inputs[wscale]][0]
                graph.initializer.append(numpy_helper.from_array(np.zeros(n, np.float32), inputs[bias]))
        del node.input[:]
        node.input.extend(i for i in inputs if i)
    custom_inputs = {i for n in graph.node if n.domain == DOMAIN for i in n.input}
    for value in (*graph.input, *graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == onnx.TensorProto.UINT8:
            if value.name not in custom_inputs and not any(value.name in n.output for n in graph.node
                                                           if n.domain == DOMAIN):
                raise ValueError(f"{value.name}: a uint8 tensor outside the resq ops has no TensorRT form")
            tensor_type.elem_type = onnx.TensorProto.INT8
    return trt


def export_onnx(artifact: Path, out_dir: Path) -> dict:
    model, quant, tokenizer = load_artifact(artifact)
    proto = build_onnx(model, quant)
    external = proto.ByteSize() > _EXTERNAL_THRESHOLD
    custom = sorted({n.op_type for n in proto.graph.node if n.domain == DOMAIN})
    meta = {
        "tool": "resq-export", "tool_version": __version__, "method": quant.method,
        "spec_version": load_spec()["spec_version"],
        "ops": {op: op_version(op) for op in custom},
        "source_artifact": {"path": str(artifact), "manifest_sha256_of_weights":
                            read_manifest(artifact)["files"].get("model.safetensors")},
        "external_data": external,
        "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output],
    }
    onnx.checker.check_model(proto, full_check=not external)
    with atomic_directory(Path(out_dir)) as tmp:
        for name, m in ((ORT_FILE, proto), (TRT_FILE, tensorrt_flavour(model, quant))):
            if external:  # both flavours share one weights file
                onnx.save_model(m, str(tmp / name), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=WEIGHTS_FILE, size_threshold=1024)
            else:
                onnx.save_model(m, str(tmp / name))
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
