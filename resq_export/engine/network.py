"""The check of a parsed TensorRT network against the op spec (ops.json), before it is built: every
custom node of the ONNX became a plugin layer of our namespace and version, whose inputs and
outputs have the spec's dtypes, and whose shapes, as TensorRT computes them from our plugins'
getOutputShapes at the corners of each optimisation profile, are the spec's shapes.

Runs inside the engine worker (worker.py) with the runtime's Python module passed in as `trt`;
the shape arithmetic is pure and tested without TensorRT."""

from __future__ import annotations

import ast
import ctypes
import operator
from collections import Counter
from collections.abc import Mapping, Sequence

import onnx

from ..export.spec import DOMAIN, PREPARED_LINEAR, op_spec, op_version, output_aliases, prepared_inputs

# The TensorRT flavour carries the spec's uint8 tensors as int8 with the same bytes (docs/plugins.md).
_TRT_DTYPE = {"float32": "FLOAT", "int8": "INT8", "uint8": "INT8", "int32": "INT32"}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expr: str, symbols: Mapping[str, int]) -> int | None:
    """An integer dimension expression of ops.json ("P + S", "low_groups * Gp_low / 2"), or None
    where it names a symbol not bound or divides unevenly."""

    def walk(n: ast.AST) -> int | None:
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name):
            return symbols.get(n.id)
        if isinstance(n, ast.BinOp):
            a, b = walk(n.left), walk(n.right)
            if a is None or b is None:
                return None
            if isinstance(n.op, ast.Div):
                return a // b if b and a % b == 0 else None
            if type(n.op) in _OPS:
                return _OPS[type(n.op)](a, b)
        raise ValueError(f"ops.json: unsupported dimension expression {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


def _tokens(shape: str) -> list[str]:
    return [t.strip() for t in shape.strip().removeprefix("[").removesuffix("]").split(",")]


def bind_shape(shape: str, dims: Sequence[int], symbols: dict[str, int | tuple]) -> list[str]:
    """Bind the plain symbols of one spec shape to actual dims (`...` to the leading ones) and check
    the rest; returns the disagreements. `symbols` is updated in place."""
    tokens = _tokens(shape)
    if tokens[0] == "...":
        lead = len(dims) - (len(tokens) - 1)
        if lead < 0:
            return [f"rank {len(dims)}, the spec says {shape}"]
        problems = bind_shape("[" + ", ".join(tokens[1:]) + "]", dims[lead:], symbols) if len(tokens) > 1 else []
        if symbols.setdefault("...", tuple(dims[:lead])) != tuple(dims[:lead]):
            problems.append(f"leading dims {tuple(dims[:lead])}, elsewhere {symbols['...']}")
        return problems
    if len(tokens) != len(dims):
        return [f"rank {len(dims)}, the spec says {shape}"]
    problems = []
    for token, dim in zip(tokens, dims):
        if token.isidentifier() and token not in symbols:
            symbols[token] = int(dim)
            continue
        want = _evaluate(token, symbols)
        if want is not None and want != dim:
            problems.append(f"dim {token} = {dim} where the spec gives {want}")
    return problems


def expected_shape(shape: str, symbols: Mapping[str, int | tuple]) -> tuple[int, ...] | None:
    """A spec output shape evaluated over bound symbols; None where a symbol is unbound."""
    out: list[int] = []
    for token in _tokens(shape):
        if token == "...":
            if "..." not in symbols:
                return None
            out.extend(symbols["..."])
            continue
        value = _evaluate(token, symbols)
        if value is None:
            return None
        out.append(value)
    return tuple(out)


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The spec names of a TensorRT-flavour node's inputs, in order (the flavour lists only present
    inputs: the linear's attributes say which, other ops drop exactly their optional inputs)."""
    if node.op_type == PREPARED_LINEAR:
        return list(prepared_inputs(node))
    spec = op_spec(node.op_type)["inputs"]
    if len(node.input) == len(spec):
        return [i["name"] for i in spec]
    required = [i["name"] for i in spec if not i.get("optional")]
    if len(node.input) == len(required):
        return required
    raise ValueError(f"{node.name}: {len(node.input)} inputs, the spec of {node.op_type} allows "
                     f"{len(required)} or {len(spec)}")


def _attributes(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}


def _plugin_layers(trt, network) -> dict[str, object]:
    layers = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.PLUGIN_V3:
            layer.__class__ = trt.IPluginV3Layer  # the bindings hand out the base class
            layers[layer.name] = layer
    return layers


def layer_counts(trt, network) -> dict[str, int]:
    counts = Counter(str(network.get_layer(i).type).rsplit(".", 1)[-1] for i in range(network.num_layers))
    return dict(counts.most_common())


def _check_identity_and_dtypes(trt, node, layer) -> list[str]:
    core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
    got = (core.plugin_name, core.plugin_namespace, str(core.plugin_version))
    want = (node.op_type, DOMAIN, str(op_version(node.op_type)))
    if got != want:
        return [f"{node.name}: plugin {got}, expected {want}"]
    spec = op_spec(node.op_type)
    problems = []
    names = node_inputs(node)
    if layer.num_inputs != len(names) or layer.num_outputs != len(spec["outputs"]):
        return [f"{node.name}: {layer.num_inputs} inputs / {layer.num_outputs} outputs, the spec gives "
                f"{len(names)} / {len(spec['outputs'])}"]
    by_name = {i["name"]: i for i in spec["inputs"]}
    ios = [(f"input {n}", layer.get_input(j), by_name[n]["dtype"]) for j, n in enumerate(names)]
    ios += [(f"output {o['name']}", layer.get_output(j), o["dtype"]) for j, o in enumerate(spec["outputs"])]
    for what, tensor, dtype in ios:
        if tensor.dtype != getattr(trt.DataType, _TRT_DTYPE[dtype]):
            problems.append(f"{node.name} {what}: {tensor.dtype}, the spec gives {dtype}")
    return problems


def _check_aliases(node, aliased_input) -> list[str]:
    """Each output that ops.json aliases to an input (the KV cache's present to its past) is declared
    so by the plugin made from this node's attributes, so that TensorRT gives both one buffer and the
    plugin writes the cache in place. aliased_input(op, attrs, output): the plugin library's answer."""
    outputs = op_spec(node.op_type)["outputs"]
    problems = []
    for j, want in enumerate(output_aliases(node.op_type)):
        got = aliased_input(node.op_type, _attributes(node), j)
        if got != want:
            problems.append(f"{node.name}: the plugin aliases output {outputs[j]['name']} to input {got}, "
                            f"the spec to {want}")
    return problems


def cache_copies(graph: onnx.ModelProto) -> list[str]:
    """The graph's KV cache inputs that a decode step copies: every past.* input that is not read by
    one node alone whose output aliased to it in ops.json is the matching present.* (the plugin
    writes that buffer in place). Empty for the quantised cache of the TensorRT flavour; a float
    cache goes through ScatterElements, a copy."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.graph.node:
        for j, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, j))
    copied = []
    for inp in graph.graph.input:
        if not inp.name.startswith("past."):
            continue
        users = readers.get(inp.name, [])
        in_place = False
        if len(users) == 1 and users[0][0].domain == DOMAIN:
            node, j = users[0]
            outs = [k for k, source in enumerate(output_aliases(node.op_type)) if source == j]
            in_place = bool(outs) and node.output[outs[0]] == inp.name.replace("past.", "present.", 1)
        if not in_place:
            copied.append(inp.name)
    return copied


def library_aliases(plugin_library: str):
    """aliased_input for _check_aliases, asked of the plugin library (resq_plugin_aliased_input)."""
    fn = ctypes.CDLL(plugin_library).resq_plugin_aliased_input
    fn.restype = ctypes.c_int32
    fn.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
                   ctypes.c_int32]

    def aliased_input(op: str, attrs: dict[str, int], output: int) -> int:
        names = (ctypes.c_char_p * max(len(attrs), 1))(*(k.encode() for k in attrs))
        values = (ctypes.c_int32 * max(len(attrs), 1))(*attrs.values())
        return fn(op.encode(), names, values, len(attrs), output)
    return aliased_input


def _check_shapes(node, layer, point: str) -> list[str]:
    spec = op_spec(node.op_type)
    symbols: dict[str, int | tuple] = dict(_attributes(node))
    by_name = {i["name"]: i for i in spec["inputs"]}
    problems = []
    for j, name in enumerate(node_inputs(node)):
        problems += [f"{node.name} input {name} at {point}: {p}"
                     for p in bind_shape(by_name[name]["shape"], tuple(layer.get_input(j).shape), symbols)]
    for j, out in enumerate(spec["outputs"]):
        got = tuple(layer.get_output(j).shape)
        want = expected_shape(out["shape"], symbols)
        if want is None or got != want:
            problems.append(f"{node.name} output {out['name']} at {point}: TensorRT gives {got}, the spec {want}")
    return problems


def check_network(trt, network, graph: onnx.ModelProto, profiles: Mapping[str, Mapping[str, tuple]],
                  aliased_input=None) -> dict:
    """Check the parsed network (see the module doc); raises ValueError listing what disagrees, or
    returns a summary: layer counts by type, plugin layers by op, profile corners checked, aliased
    outputs (where aliased_input, from library_aliases, can ask the plugins)."""
    custom = [n for n in graph.graph.node if n.domain == DOMAIN]
    layers = _plugin_layers(trt, network)
    problems = [f"{n.name} ({n.op_type}) did not become a plugin layer" for n in custom if n.name not in layers]
    problems += [f"plugin layer {name} is no custom node of the ONNX" for name in set(layers) - {n.name for n in custom}]
    pairs = [(n, layers[n.name]) for n in custom if n.name in layers]
    for node, layer in pairs:
        problems += _check_identity_and_dtypes(trt, node, layer)
        problems += _check_aliases(node, aliased_input) if aliased_input else []
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    dynamic = {name: tuple(t.shape) for name, t in inputs.items()}
    corners = 0
    try:
        for profile, shapes in profiles.items():
            for k, corner in enumerate(("min", "opt", "max")):
                for name, per in shapes.items():
                    inputs[name].shape = per[k]
                for node, layer in pairs:
                    problems += _check_shapes(node, layer, f"{profile} {corner}")
                corners += 1
    finally:  # the network is built with its dynamic dims
        for name, dims in dynamic.items():
            inputs[name].shape = dims
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError("the TensorRT network does not match the op spec: " + "; ".join(problems[:5]) + more)
    return {"layers": layer_counts(trt, network),
            "plugin_layers": dict(Counter(n.op_type for n, _ in pairs)),
            "profile_corners_checked": corners,
            "kv_cache_copied_inputs": len(cache_copies(graph)),
            "aliased_outputs": sum(1 for n, _ in pairs for source in output_aliases(n.op_type) if source >= 0)
            if aliased_input else None}
