"""ctypes mirrors of the C structs of plugins/common/resq_layout.h and resq_params.h. The native
library reports how its compiler lays them out (resq_params_manifest); tests/plugins compares that
with these, field by field."""

from __future__ import annotations

import ctypes

from ..export.spec import op_spec

i32, i64, ptr, size_t = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t

MMA_AUTO, MMA_INT4, MMA_INT4_AS_INT8 = 0, 1, 2  # ResQMmaPath


def _struct(name: str, fields: list[tuple[str, type]]) -> type[ctypes.Structure]:
    return type(name, (ctypes.Structure,), {"_fields_": fields})


LinearShape = _struct("ResQLinearShape", [(n, i32) for n in ("k", "k_low", "low_groups", "high_groups",
                                                              "a_bits_low", "a_bits_high")])
LinearLayoutC = _struct("ResQLinearLayout", [(n, i32) for n in (
    "groups", "gw_low", "gw_high", "gwp_low", "gwp_high", "act_low_pitch", "act_high_pitch", "w_low_pitch",
    "w_high_pitch", "a8_pitch")])
KVShape = _struct("ResQKVShape", [(n, i32) for n in ("batch", "num_heads", "num_kv_heads", "head_dim",
                                                      "high_channels", "kv_bits", "high_bits")])

ActCodes = _struct("ResQActCodes", [("q_low", ptr), ("q_high", ptr), ("sx", ptr), ("zx", ptr)])
MAX_OP_INPUTS = 16
OpInputs = _struct("ResQOpInputs", [("at", ptr * MAX_OP_INPUTS)])
QuantizeActParams = _struct("ResQQuantizeActParams", [("shape", LinearShape), ("tokens", i64), ("x", ptr),
                                                      ("x_dtype", i32), ("out", ActCodes)])
PrepareWeightsParams = _struct("ResQPrepareWeightsParams", [
    ("shape", LinearShape), ("n", i32), ("w_low", ptr), ("w_high", ptr), ("w_low_p", ptr), ("w_high_p", ptr),
    ("wsum", ptr)])
PrepareLqerAParams = _struct("ResQPrepareLqerAParams", [("shape", LinearShape), ("rank", i32), ("a", ptr),
                                                        ("a_p", ptr), ("asum", ptr)])
LqerProjectParams = _struct("ResQLqerProjectParams", [("shape", LinearShape), ("tokens", i64), ("rank", i32),
                                                      ("act", ActCodes), ("in", OpInputs), ("qa", ptr), ("sa", ptr)])
MixedGemmParams = _struct("ResQMixedGemmParams", [
    ("shape", LinearShape), ("tokens", i64), ("n", i32), ("rank", i32), ("act", ActCodes), ("in", OpInputs),
    ("qa", ptr), ("sa", ptr), ("y", ptr), ("y_dtype", i32), ("mma", i32)])
MixedLinearParams = _struct("ResQMixedLinearParams", [
    ("shape", LinearShape), ("tokens", i64), ("n", i32), ("rank", i32), ("in", OpInputs), ("x_dtype", i32),
    ("y", ptr), ("y_dtype", i32), ("mma", i32), ("workspace", ptr), ("workspace_size", size_t)])
HadamardParams = _struct("ResQHadamardParams", [("rows", i64), ("n", i32), ("a", i32), ("x", ptr), ("left", ptr),
                                                ("y", ptr)])
RotateParams = _struct("ResQRotateParams", [("rows", i64), ("d", i32), ("x", ptr), ("u", ptr), ("y", ptr)])
KVCache = _struct("ResQKVCache", [("codes", ptr), ("scales", ptr), ("zeros", ptr), ("capacity", i32)])
KVAppendParams = _struct("ResQKVAppendParams", [("shape", KVShape), ("seq", i32), ("past_length", ptr), ("x", ptr),
                                                ("cache", KVCache)])
KVAttentionParams = _struct("ResQKVAttentionParams", [
    ("shape", KVShape), ("seq", i32), ("past_length", ptr), ("q", ptr), ("k", KVCache), ("v", KVCache), ("out", ptr),
    ("workspace", ptr), ("workspace_size", size_t)])

ALL = (LinearShape, KVShape, ActCodes, OpInputs, QuantizeActParams, PrepareWeightsParams,
       PrepareLqerAParams, LqerProjectParams, MixedGemmParams, MixedLinearParams, HadamardParams, RotateParams,
       KVCache, KVAppendParams, KVAttentionParams)


def manifest_line(struct: type[ctypes.Structure]) -> str:
    """The line resq_params_manifest() gives for the C struct of the same name."""
    fields = " ".join(f"{name}:{getattr(struct, name).offset}" for name, _ in struct._fields_)
    return f"{struct.__name__} {ctypes.sizeof(struct)} {fields}"


def op_inputs(op: str, tensors: dict[str, int | None]) -> OpInputs:
    """The input table of a node of `op` (ResQOpInputs): each named tensor's address at its index in
    ops.json; names the op does not have are refused, inputs not named stay NULL."""
    names = [i["name"] for i in op_spec(op)["inputs"]]
    if len(names) > MAX_OP_INPUTS or set(tensors) - set(names):
        raise ValueError(f"{op}: inputs {sorted(set(tensors) - set(names))} are not in ops.json")
    table = OpInputs()
    for name, address in tensors.items():
        table.at[names.index(name)] = address
    return table
