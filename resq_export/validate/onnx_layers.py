"""The exported ONNX Runtime graph run one decoder layer at a time, so that validating an 8B model
never holds more than one layer's session: the graph is cut into its front (embedding, RoPE), its
layers and its head by the node scopes the exporter writes (/model/layers.{i}/, /model/lm_head/),
each piece becomes a small model reading the same weights file, and the tensors that cross a cut
(the residual stream, cos/sin) are carried between the pieces. Every node runs with the same
inputs as in the whole graph, so the logits are the whole graph's, bit for bit (tested)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper

from ..errors import ArtifactError
from ..export.folder import ORT_FILE, check_onnx_folder
from ..export.spec import PAST_LENGTH
from .ort_runner import empty_cache, return_freed_memory, session_options

_LAYER_SCOPE = re.compile(r"^/model/layers\.(\d+)/")
_HEAD_SCOPE = "/model/lm_head/"


@dataclass
class Segment:
    """One piece of the graph: its nodes, what it reads from earlier pieces or the graph inputs, and
    what later pieces (or the graph outputs) read from it."""

    name: str
    nodes: list[onnx.NodeProto]
    inputs: list[str]
    outputs: list[str]
    initializers: list[str]


def _segment_key(node_name: str) -> tuple[int, int]:
    """(0, 0) front, (1, i) layer i, (2, 0) head: the order the pieces run in."""
    m = _LAYER_SCOPE.match(node_name)
    if m:
        return (1, int(m.group(1)))
    return (2, 0) if node_name.startswith(_HEAD_SCOPE) else (0, 0)


def split_graph(graph: onnx.GraphProto) -> list[Segment]:
    """The graph's nodes in front, layer and head pieces, with the tensors crossing each cut."""
    groups: dict[tuple[int, int], list[onnx.NodeProto]] = {}
    for node in graph.node:
        groups.setdefault(_segment_key(node.name), []).append(node)
    keys = sorted(groups)
    layers = [k[1] for k in keys if k[0] == 1]
    if layers != list(range(len(layers))) or (0, 0) not in groups or (2, 0) not in groups:
        raise ArtifactError("the ONNX graph does not have the node scopes resq-export writes "
                            "(/model/layers.N/, /model/lm_head/); re-export it with this version")
    init_names = {t.name for t in graph.initializer}
    graph_inputs = {v.name for v in graph.input}
    graph_outputs = {v.name for v in graph.output}
    produced_in: dict[str, int] = {}
    for s, key in enumerate(keys):
        for node in groups[key]:
            for out in node.output:
                produced_in[out] = s
    read_after: dict[str, int] = {}  # tensor -> the last piece that reads it
    segments = []
    for s, key in enumerate(keys):
        reads: list[str] = []
        for node in groups[key]:
            for name in node.input:
                if name and name not in reads:
                    reads.append(name)
        for name in reads:
            if name in produced_in and produced_in[name] > s:
                raise ArtifactError(f"the ONNX graph reads {name} before the piece that makes it")
            read_after[name] = max(read_after.get(name, s), s)
        own = {o for node in groups[key] for o in node.output}
        name = "front" if key[0] == 0 else f"layer {key[1]}" if key[0] == 1 else "head"
        segments.append(Segment(name, groups[key], [n for n in reads if n not in own and n not in init_names],
                                [], [n for n in reads if n in init_names]))
    for s, seg in enumerate(segments):
        own = [o for node in seg.nodes for o in node.output]
        seg.outputs = [o for o in own if o in graph_outputs or read_after.get(o, s) > s]
    for seg in segments:
        missing = [n for n in seg.inputs if n not in graph_inputs and n not in produced_in]
        if missing:
            raise ArtifactError(f"the ONNX graph's {seg.name} reads {missing[0]}, which nothing produces")
    return segments


_NP_TO_ONNX = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64,
               np.dtype(np.uint8): onnx.TensorProto.UINT8, np.dtype(np.int32): onnx.TensorProto.INT32,
               np.dtype(np.float64): onnx.TensorProto.DOUBLE}


class OnnxLayers:
    """The ORT flavour of an ONNX folder as a layerwise model (validate.layerwise): each piece's
    session is made when it runs and freed after; a state is the dict of tensors crossing the cut."""

    def __init__(self, onnx_dir: Path, verify: str = "quick"):
        self.onnx_dir = Path(onnx_dir)
        self.meta = check_onnx_folder(self.onnx_dir, verify)
        self.proto = onnx.load(str(self.onnx_dir / ORT_FILE), load_external_data=False)
        self.segments = split_graph(self.proto.graph)
        self.num_layers = len(self.segments) - 2
        self._inits = {t.name: t for t in self.proto.graph.initializer}
        self._graph_inputs = {v.name: v for v in self.proto.graph.input}
        self._head = None

    def close(self) -> None:
        self._head = None
        return_freed_memory()

    def __enter__(self) -> "OnnxLayers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _session(self, s: int, example: dict[str, np.ndarray]):
        import onnxruntime as ort

        seg = self.segments[s]
        inputs = [self._graph_inputs[n] if n in self._graph_inputs else
                  helper.make_tensor_value_info(n, _NP_TO_ONNX[example[n].dtype], [None] * example[n].ndim)
                  for n in seg.inputs]
        outputs = [onnx.ValueInfoProto(name=n) for n in seg.outputs]
        graph = helper.make_graph(seg.nodes, f"resq_{seg.name.replace(' ', '_')}", inputs, outputs,
                                  [self._inits[n] for n in seg.initializers])
        model = helper.make_model(graph, opset_imports=self.proto.opset_import, functions=self.proto.functions,
                                  ir_version=self.proto.ir_version)
        so = session_options("basic")
        so.enable_cpu_mem_arena = False  # a piece's transient buffers go back when its run ends
        # the piece is given as bytes; its initializers' external data is read from the ONNX folder
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.onnx_dir))
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return_freed_memory()
        return session

    def _run(self, session, s: int, state: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> dict:
        seg = self.segments[s]
        feeds = {n: (extra[n] if n in extra else state[n]) for n in seg.inputs}
        return dict(zip(seg.outputs, session.run(seg.outputs, feeds)))

    def embed(self, chunks: list[tuple[torch.Tensor, int]]) -> list[dict[str, np.ndarray]]:
        states, session = [], None
        for ids, start in chunks:
            feeds = {"input_ids": ids.numpy()[None].astype(np.int64),
                     "position_ids": np.arange(start, start + ids.numel(), dtype=np.int64)[None],
                     PAST_LENGTH: np.array([start], np.int32)}
            session = session or self._session(0, feeds)
            states.append({**feeds, **self._run(session, 0, feeds, {})})
        del session
        return_freed_memory()
        return states

    def layer(self, i: int) -> "_OnnxLayer":
        return _OnnxLayer(self, i + 1)

    def logits(self, state: dict[str, np.ndarray]) -> torch.Tensor:
        """[S, V] of one chunk; the head's session is kept for the next call."""
        s = len(self.segments) - 1
        self._head = self._head or self._session(s, state)
        return torch.from_numpy(self._run(self._head, s, state, {})["logits"][0])


class _OnnxLayer:
    def __init__(self, owner: OnnxLayers, s: int):
        self.owner, self.s, self.session = owner, s, None
        self.seg = owner.segments[s]
        self.read_later = {n for seg in owner.segments[s + 1:] for n in seg.inputs}  # what the state keeps

    def new_cache(self, capacity: int) -> dict[str, np.ndarray]:
        inputs = {}
        for name in self.seg.inputs:
            if name.startswith("past."):
                t = self.owner._graph_inputs[name].type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
                inputs[name] = (dims, t.elem_type == onnx.TensorProto.UINT8)
        return empty_cache(inputs, batch=1, capacity=capacity)

    def __call__(self, state: dict[str, np.ndarray], cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.session = self.session or self.owner._session(self.s, state)
        outs = self.owner._run(self.session, self.s, state, cache)
        for name, value in outs.items():
            if name.startswith("present."):
                cache[name.replace("present.", "past.", 1)] = value
        return {n: v for n, v in (*state.items(), *outs.items()) if n in self.read_later}

    def close(self) -> None:
        self.session = None
        return_freed_memory()
