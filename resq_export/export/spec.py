"""The op spec (ops.json): the single source of truth for custom op names, versions, inputs,
outputs, attributes and which optional inputs a TensorRT node lists, read by the exporter, the checks,
the engine build and plugins/tools/gen_ops_header.py (the C++ header the kernels and plugins include)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DOMAIN = "resq"


@cache
def load_spec() -> dict[str, Any]:
    return json.loads(resources.files("resq_export.export").joinpath("ops.json").read_text())


# The graph's cache I/O: past.* and present.* [batch, Hkv, CACHE_DIM, ...] are one buffer of a capacity
# the caller chooses; PAST_LENGTH [batch] int32 counts the rows each sequence has filled before the call.
CACHE_DIM = "cache_capacity"
PAST_LENGTH = "past_length"


def op_spec(name: str) -> dict[str, Any]:
    return load_spec()["ops"][name]


def output_aliases(op: str) -> list[int]:
    """Per output of `op`, the spec position of the input it aliases ("aliases"), -1 for none: the
    table the generated header gives the plugins as kOutputAliasesInput."""
    spec = op_spec(op)
    names = [i["name"] for i in spec["inputs"]]
    return [names.index(o["aliases"]) if o.get("aliases") else -1 for o in spec["outputs"]]


def check_abi(path, version_function) -> None:
    """Refuse a native library built from another tree: its entry points may take other arguments.
    version_function: its resq_abi_version / resq_cuda_abi_version (None where it has none)."""
    from ..errors import ResQError

    want = int(load_spec()["abi_version"])
    got = int(version_function()) if version_function is not None else None
    if got != want:
        raise ResQError(f"{path} has C API version {got}, this resq-export needs {want}: rebuild it "
                        "(cmake --build build)")


def op_version(name: str) -> int:
    return int(op_spec(name)["version"])


def attribute_default(op: str, name: str):
    return op_spec(op)["attributes"][name].get("default")


def present_inputs(op: str, attrs: dict) -> list[str]:
    """The inputs a node of `op` lists, in order, given its attributes: an input with "present_if" is
    there when that attribute (or its default) is > 0. The plugins read the same rule from the
    generated header (resq_ops.h: kInputPresentIf)."""
    names = []
    for spec_input in op_spec(op)["inputs"]:
        gate = spec_input.get("present_if")
        value = attrs.get(gate, attribute_default(op, gate)) if gate else 1
        if (value or 0) > 0:
            names.append(spec_input["name"])
    return names


PREPARED_LINEAR = "ResQMixedLinearPrepared"  # what the TensorRT flavour has for each ResQMixedLinear


def node_attributes(node) -> dict:
    """A resq node's (onnx.NodeProto) attributes, the spec's defaults filled in for those it omits."""
    from onnx import helper

    given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    defaults = {k: a["default"] for k, a in op_spec(node.op_type)["attributes"].items() if "default" in a}
    return {**defaults, **given}


def prepared_inputs(node) -> dict[str, str]:
    """Input name -> tensor of a ResQMixedLinearPrepared node (onnx.NodeProto), which lists only its
    present inputs."""
    from ..errors import ArtifactError

    names = present_inputs(PREPARED_LINEAR, node_attributes(node))
    if len(names) != len(node.input):
        raise ArtifactError(f"{node.name}: {len(node.input)} inputs where its attributes imply {len(names)}")
    return dict(zip(names, node.input))
