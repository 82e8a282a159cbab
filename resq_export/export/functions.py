"""Standard-op bodies of the custom ops (the ORT flavour): exactly docs/ops.md, integer GEMMs as
MatMulInteger. One overload per distinct static layout, so every size is a constant."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .builder import FLOAT, INT8, INT32, OPSET, UINT8, Builder
from .spec import DOMAIN, op_spec

LINEAR_INPUTS = [i["name"] for i in op_spec("ResQMixedLinear")["inputs"]]
ATTENTION_INPUTS = [i["name"] for i in op_spec("ResQKVCacheAttention")["inputs"]]
ATTENTION_OUTPUTS = [o["name"] for o in op_spec("ResQKVCacheAttention")["outputs"]]


def _quantize_asym(b: Builder, x: str, bits: int) -> tuple[str, str, str]:
    """(codes as float, scale, zero as float) over the last axis, range including 0."""
    zero = b.const(0.0)
    lo = b.op("Min", b.op("ReduceMin", x, b.i64(-1), keepdims=1), zero)
    hi = b.op("Max", b.op("ReduceMax", x, b.i64(-1), keepdims=1), zero)
    scale = b.op("Div", b.op("Sub", hi, lo), b.const(float(2**bits - 1)))
    scale = b.op("Where", b.op("Greater", scale, zero), scale, b.const(1.0))
    zp = b.op("Round", b.op("Div", b.op("Neg", lo), scale))
    q = b.op("Clip", b.op("Add", b.op("Round", b.op("Div", x, scale)), zp), zero, b.const(float(2**bits - 1)))
    return q, scale, zp


def _unpack_int4(b: Builder, packed: str, rows: int, cols: int) -> str:
    """int8 [rows, cols/2] two's-complement nibbles -> int8 [rows, cols]."""
    byte = b.op("BitwiseAnd", b.op("Cast", packed, to=INT32), b.const(255, np.int32))
    nibbles = []
    for part in (b.op("BitwiseAnd", byte, b.const(15, np.int32)), b.op("Div", byte, b.const(16, np.int32))):
        signed = b.op("Where", b.op("Greater", part, b.const(7, np.int32)),
                      b.op("Sub", part, b.const(16, np.int32)), part)
        nibbles.append(b.op("Unsqueeze", signed, b.i64(2)))
    return b.op("Cast", b.op("Reshape", b.op("Concat", *nibbles, axis=2), b.i64(rows, cols)), to=INT8)


@dataclass(frozen=True)
class LinearSignature:
    """Everything static about one ResQMixedLinear node: selects (and names) its function overload."""

    k: int
    k_low: int
    n: int
    low_groups: int
    high_groups: int
    a_bits_low: int
    a_bits_high: int
    lqer_rank: int
    has_bias: bool

    @property
    def overload(self) -> str:
        return (f"k{self.k}_l{self.k_low}_n{self.n}_g{self.low_groups}x{self.high_groups}"
                f"_a{self.a_bits_low}x{self.a_bits_high}_r{self.lqer_rank}{'_b' if self.has_bias else ''}")

    @property
    def float_activations(self) -> bool:
        return self.a_bits_low == 16


def _offset_u8(b: Builder, x_int: str) -> str:
    """int8 -> uint8 holding x + 128. MatMulInteger then runs as uint8 x uint8 with zero point 128:
    ORT's uint8 x int8 kernels saturate 16-bit pair sums on CPUs without VNNI (255 * -128 * 2)."""
    return b.op("Cast", b.op("Add", b.op("Cast", x_int, to=INT32), b.const(128, np.int32)), to=UINT8)


def _matmul_int(b: Builder, a_u8: str, w_u8: str, a_offset: bool = False) -> str:
    """Exact integer product of uint8 A (or int8 stored +128 when a_offset) and int8 B stored +128."""
    zp = b.const(128, np.uint8, "zero_point_128")
    return b.op("MatMulInteger", a_u8, w_u8, zp if a_offset else "", zp)


def _part_weights(b: Builder, w_int8: str, rows: int, groups: int, width: int) -> tuple[str, str]:
    """int8 [rows, groups*width] -> ([groups, width, rows] as uint8 + 128, group sums [groups, 1, rows] int32)."""
    w = b.op("Transpose", b.op("Reshape", w_int8, b.i64(rows, groups, width)), perm=[1, 2, 0])
    wsum = b.op("ReduceSum", b.op("Cast", w, to=INT32), b.i64(1), keepdims=1)
    return _offset_u8(b, w), wsum


def _grouped_gemm(b: Builder, q_u8: str, scale: str, zp: str, w: str, wsum: str, wscale: str) -> str:
    """sum_g float32(acc_g - z * wsum_g) * sx * sw: q_u8 [G, T, g], w [G, g, N], wscale [G, 1, N] -> [T, N]."""
    acc = _matmul_int(b, q_u8, w)
    corr = b.op("Sub", acc, b.op("Mul", b.op("Cast", zp, to=INT32), wsum))
    part = b.op("Mul", b.op("Mul", b.op("Cast", corr, to=FLOAT), scale), wscale)
    return b.op("ReduceSum", part, b.i64(0), keepdims=0)


def linear_function(sig: LinearSignature) -> onnx.FunctionProto:
    b = Builder(prefix="f")
    x2 = b.op("Reshape", "X", b.i64(-1, sig.k))
    parts = []  # (start, groups, width, a_bits, int8 weights [N, width*groups], wscale columns)
    w_low = _unpack_int4(b, "qweight_low", sig.n, sig.k_low)
    parts.append((0, sig.low_groups, sig.k_low // sig.low_groups, sig.a_bits_low, w_low, 0))
    if sig.high_groups:
        kh = sig.k - sig.k_low
        parts.append((sig.k_low, sig.high_groups, kh // sig.high_groups, sig.a_bits_high, "qweight_high",
                      sig.low_groups))
    wscale_t = b.op("Unsqueeze", b.op("Transpose", "wscale", perm=[1, 0]), b.i64(1))  # [G, 1, N]
    if sig.float_activations:
        weights = []
        for start, groups, width, _, w, g0 in parts:
            sw = b.op("Slice", wscale_t, b.i64(g0), b.i64(g0 + groups), b.i64(0))  # [groups, 1, N]
            wf = b.op("Transpose", b.op("Reshape", b.op("Cast", w, to=FLOAT), b.i64(sig.n, groups, width)), perm=[1, 2, 0])
            deq = b.op("Mul", wf, sw)  # [groups, width, N]
            weights.append(b.op("Reshape", deq, b.i64(groups * width, sig.n)))
        w_all = b.op("Concat", *weights, axis=0) if len(weights) > 1 else weights[0]
        y = b.op("MatMul", x2, w_all)
        if sig.lqer_rank:
            a = b.op("Mul", b.op("Cast", "lqer_a", to=FLOAT), b.op("Unsqueeze", "lqer_a_scale", b.i64(1)))
            bm = b.op("Mul", b.op("Cast", "lqer_b", to=FLOAT), b.op("Unsqueeze", "lqer_b_scale", b.i64(1)))
            xa = b.op("MatMul", x2, b.op("Transpose", a, perm=[1, 0]))
            y = b.op("Add", y, b.op("MatMul", xa, b.op("Transpose", bm, perm=[1, 0])))
    else:
        y = None
        xa = None
        for start, groups, width, bits, w, g0 in parts:
            xs = b.op("Slice", x2, b.i64(start), b.i64(start + groups * width), b.i64(1))
            xs = b.op("Transpose", b.op("Reshape", xs, b.i64(-1, groups, width)), perm=[1, 0, 2])  # [G, T, g]
            q, scale, zp = _quantize_asym(b, xs, bits)
            q_u8 = b.op("Cast", q, to=UINT8)
            wt, wsum = _part_weights(b, w, sig.n, groups, width)
            sw = b.op("Slice", wscale_t, b.i64(g0), b.i64(g0 + groups), b.i64(0))
            part = _grouped_gemm(b, q_u8, scale, zp, wt, wsum, sw)
            y = part if y is None else b.op("Add", y, part)
            if sig.lqer_rank:
                a_part = b.op("Slice", "lqer_a", b.i64(start), b.i64(start + groups * width), b.i64(1))
                at, asum = _part_weights(b, a_part, sig.lqer_rank, groups, width)
                a_scale = b.op("Reshape", "lqer_a_scale", b.i64(1, 1, sig.lqer_rank))
                xa_part = _grouped_gemm(b, q_u8, scale, zp, at, asum, a_scale)
                xa = xa_part if xa is None else b.op("Add", xa, xa_part)
        if sig.lqer_rank:
            sa = b.op("Div", b.op("ReduceMax", b.op("Abs", xa), b.i64(-1), keepdims=1), b.const(127.0))
            sa = b.op("Where", b.op("Greater", sa, b.const(0.0)), sa, b.const(1.0))
            qa = b.op("Cast", b.op("Clip", b.op("Round", b.op("Div", xa, sa)), b.const(-128.0), b.const(127.0)), to=INT8)
            acc = _matmul_int(b, _offset_u8(b, qa), _offset_u8(b, b.op("Transpose", "lqer_b", perm=[1, 0])), a_offset=True)
            lr = b.op("Mul", b.op("Mul", b.op("Cast", acc, to=FLOAT), sa), b.op("Unsqueeze", "lqer_b_scale", b.i64(0)))
            y = b.op("Add", y, lr)
    if sig.has_bias:
        y = b.op("Add", y, "bias")
    out_shape = b.op("Concat", b.op("Slice", b.op("Shape", "X"), b.i64(0), b.i64(-1), b.i64(0)), b.i64(sig.n), axis=0)
    b.op("Reshape", y, out_shape, outputs=["Y"])
    return helper.make_function(
        DOMAIN, "ResQMixedLinear", LINEAR_INPUTS, ["Y"], b.nodes, [helper.make_opsetid("", OPSET)],
        attributes=[], overload=sig.overload,
    )
