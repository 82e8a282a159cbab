"""Standard-op bodies of the custom ops (the ORT flavour): exactly docs/ops.md, integer GEMMs as
MatMulInteger. One overload per distinct static layout, so every size is a constant."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..algo.hadamard import sylvester
from .builder import DOUBLE, FLOAT, INT8, INT32, INT64, OPSET, UINT8, Builder
from .spec import DOMAIN, op_spec

LINEAR_INPUTS = [i["name"] for i in op_spec("ResQMixedLinear")["inputs"]]
ATTENTION_INPUTS = [i["name"] for i in op_spec("ResQKVCacheAttention")["inputs"]]
ATTENTION_OUTPUTS = [o["name"] for o in op_spec("ResQKVCacheAttention")["outputs"]]


def _function(op: str, inputs: list[str], outputs: list[str], b: Builder, overload: str) -> onnx.FunctionProto:
    """The body as a model-local function; it declares the spec's attributes so the nodes carry them
    (the plugin attributes included) in both flavours."""
    return helper.make_function(DOMAIN, op, inputs, outputs, b.nodes, [helper.make_opsetid("", OPSET)],
                                attributes=list(op_spec(op)["attributes"]), overload=overload)


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


# Stored byte -> code + 128 as uint8, by table lookup (Gather wraps the negative int8 indices). int4x2:
# a nibble v holds w = v - 16 [v > 7], and (v XOR 8) = w + 8, low nibble first.
_INT4X2_U8 = np.array([[((j & 15) ^ 8) + 120, ((j >> 4) ^ 8) + 120] for j in range(256)], np.uint8)
_INT4X2_SUM = np.array([((j & 15) ^ 8) + ((j >> 4) ^ 8) - 16 for j in range(256)], np.int32)
_INT8_U8 = np.array([(j + 128) % 256 for j in range(256)], np.uint8)
# Stored KV byte -> its two unsigned 4-bit codes, low nibble first.
_UINT4X2 = np.array([[j & 15, j >> 4] for j in range(256)], np.int32)


def _part_weights(b: Builder, w: str, rows: int, groups: int, width: int, packed: bool) -> tuple[str, str]:
    """Stored codes (int4x2 when packed, else int8) [rows, groups*width(/2)] -> ([groups, width, rows]
    as uint8 = code + 128, group sums [groups, 1, rows] int32).

    ONNX Runtime folds this into constants at session start and holds every intermediate of the
    fold until it ends, so it is table lookups on the stored bytes (~5 bytes per weight in flight)
    rather than a chain of int32 ops (~45 bytes per weight; docs/architecture.md, "Measured design
    choices")."""
    idx = b.op("Cast", w, to=INT32)
    if packed:
        u8 = b.op("Reshape", b.op("Gather", b.const(_INT4X2_U8, np.uint8, "int4x2_u8"), idx, axis=0),
                  b.i64(rows, groups * width))
        if width % 2 == 0:  # each byte inside one group: sum the bytes' nibble pairs
            sums, per = b.op("Gather", b.const(_INT4X2_SUM, np.int32, "int4x2_sum"), idx, axis=0), width // 2
        else:
            sums, per = b.op("Sub", b.op("Cast", u8, to=INT32), b.const(128, np.int32)), width
    else:
        u8, sums, per = b.op("Gather", b.const(_INT8_U8, np.uint8, "int8_u8"), idx, axis=0), idx, width
    wsum = b.op("ReduceSum", b.op("Reshape", sums, b.i64(rows, groups, per)), b.i64(2), keepdims=0)
    wsum = b.op("Unsqueeze", b.op("Transpose", wsum, perm=[1, 0]), b.i64(1))
    return b.op("Transpose", b.op("Reshape", u8, b.i64(rows, groups, width)), perm=[1, 2, 0]), wsum


def _grouped_gemm(b: Builder, q_u8: str, scale: str, zp: str, w: str, wsum: str, wscale64: str) -> str:
    """sum_g (acc_g - z * wsum_g) * sx * sw in float64: q_u8 [G, T, g], w [G, g, N], wscale64 [G, 1, N] -> [T, N]."""
    acc = _matmul_int(b, q_u8, w)
    corr = b.op("Sub", acc, b.op("Mul", b.op("Cast", zp, to=INT32), wsum))
    part = b.op("Mul", b.op("Mul", b.op("Cast", corr, to=DOUBLE), b.f64(scale)), wscale64)
    return b.op("ReduceSum", part, b.i64(0), keepdims=0)


def linear_function(sig: LinearSignature) -> onnx.FunctionProto:
    b = Builder(prefix="f")
    x2 = b.op("Reshape", "X", b.i64(-1, sig.k))
    parts = []  # (start, groups, width, a_bits, weights [groups, width, N] as code + 128, their sums, wscale column)
    if sig.low_groups:  # absent with 8-bit weights throughout
        width = sig.k_low // sig.low_groups
        parts.append((0, sig.low_groups, width, sig.a_bits_low,
                      *_part_weights(b, "qweight_low", sig.n, sig.low_groups, width, packed=True), 0))
    if sig.high_groups:
        width = (sig.k - sig.k_low) // sig.high_groups
        parts.append((sig.k_low, sig.high_groups, width, sig.a_bits_high,
                      *_part_weights(b, "qweight_high", sig.n, sig.high_groups, width, packed=False), sig.low_groups))
    wscale_t = b.op("Unsqueeze", b.op("Transpose", "wscale", perm=[1, 0]), b.i64(1))  # [G, 1, N]
    if sig.float_activations:
        weights = []
        for start, groups, width, _, wt, _, g0 in parts:
            sw = b.op("Slice", wscale_t, b.i64(g0), b.i64(g0 + groups), b.i64(0))  # [groups, 1, N]
            wf = b.op("Sub", b.op("Cast", wt, to=FLOAT), b.const(128.0))
            deq = b.op("Mul", wf, sw)  # [groups, width, N]
            weights.append(b.op("Reshape", deq, b.i64(groups * width, sig.n)))
        w_all = b.op("Concat", *weights, axis=0) if len(weights) > 1 else weights[0]
        x64 = b.f64(x2)
        y = b.op("MatMul", x64, b.f64(w_all))
        if sig.lqer_rank:
            a = b.op("Mul", b.op("Cast", "lqer_a", to=FLOAT), b.op("Unsqueeze", "lqer_a_scale", b.i64(1)))
            bm = b.op("Mul", b.op("Cast", "lqer_b", to=FLOAT), b.op("Unsqueeze", "lqer_b_scale", b.i64(1)))
            xa = b.op("MatMul", x64, b.f64(b.op("Transpose", a, perm=[1, 0])))
            y = b.op("Add", y, b.op("MatMul", xa, b.f64(b.op("Transpose", bm, perm=[1, 0]))))
    else:
        y = None
        xa = None
        for start, groups, width, bits, wt, wsum, g0 in parts:
            xs = b.op("Slice", x2, b.i64(start), b.i64(start + groups * width), b.i64(1))
            xs = b.op("Transpose", b.op("Reshape", xs, b.i64(-1, groups, width)), perm=[1, 0, 2])  # [G, T, g]
            q, scale, zp = _quantize_asym(b, xs, bits)
            q_u8 = b.op("Cast", q, to=UINT8)
            sw = b.f64(b.op("Slice", wscale_t, b.i64(g0), b.i64(g0 + groups), b.i64(0)))
            part = _grouped_gemm(b, q_u8, scale, zp, wt, wsum, sw)
            y = part if y is None else b.op("Add", y, part)
            if sig.lqer_rank:
                a_part = b.op("Slice", "lqer_a", b.i64(start), b.i64(start + groups * width), b.i64(1))
                at, asum = _part_weights(b, a_part, sig.lqer_rank, groups, width, packed=False)
                a_scale = b.f64(b.op("Reshape", "lqer_a_scale", b.i64(1, 1, sig.lqer_rank)))
                xa_part = _grouped_gemm(b, q_u8, scale, zp, at, asum, a_scale)
                xa = xa_part if xa is None else b.op("Add", xa, xa_part)
        if sig.lqer_rank:
            xa = b.f32(xa)
            sa = b.op("Div", b.op("ReduceMax", b.op("Abs", xa), b.i64(-1), keepdims=1), b.const(127.0))
            sa = b.op("Where", b.op("Greater", sa, b.const(0.0)), sa, b.const(1.0))
            qa = b.op("Cast", b.op("Clip", b.op("Round", b.op("Div", xa, sa)), b.const(-128.0), b.const(127.0)), to=INT8)
            acc = _matmul_int(b, _offset_u8(b, qa), _offset_u8(b, b.op("Transpose", "lqer_b", perm=[1, 0])), a_offset=True)
            lr = b.op("Mul", b.op("Mul", b.op("Cast", acc, to=DOUBLE), b.f64(sa)),
                      b.f64(b.op("Unsqueeze", "lqer_b_scale", b.i64(0))))
            y = b.op("Add", y, lr)
    if sig.has_bias:
        y = b.op("Add", y, b.f64("bias"))
    out_shape = b.op("Concat", b.op("Slice", b.op("Shape", "X"), b.i64(0), b.i64(-1), b.i64(0)), b.i64(sig.n), axis=0)
    b.op("Reshape", b.f32(y), out_shape, outputs=["Y"])
    return _function("ResQMixedLinear", LINEAR_INPUTS, ["Y"], b, sig.overload)


# Up to this order the Walsh-Hadamard part is one MatMul with the +-1 matrix (int8 in the file,
# 256 KiB at 512): a handful of nodes instead of 5 per butterfly stage, which is what decode time
# in ONNX Runtime is made of. Larger orders keep the n log n butterflies.
DENSE_WALSH_MAX = 512


def hadamard_function(n: int, left_order: int) -> onnx.FunctionProto:
    """X @ kron(left, S / sqrt(b)) with b = n / a: the Walsh-Hadamard part S over the last b channels,
    then left; a float island."""
    b = Builder(prefix="f")
    width = n // left_order
    y = b.op("Reshape", b.f64("X"), b.i64(-1, left_order, width))
    if width <= DENSE_WALSH_MAX:
        y = b.op("MatMul", y, b.f64(b.const(sylvester(width).numpy(), np.int8, "sylvester")))
    else:
        h = 1
        while h < width:
            pairs = b.op("Reshape", y, b.i64(-1, left_order, width // (2 * h), 2, h))
            x0, x1 = b.op("Split", pairs, axis=3, num_outputs=2, outputs=2)
            y = b.op("Concat", b.op("Add", x0, x1), b.op("Sub", x0, x1), axis=3)
            h *= 2
        y = b.op("Reshape", y, b.i64(-1, left_order, width))
    y = b.op("Div", y, b.const(np.sqrt(width), np.float64))
    if left_order > 1:
        y = b.op("Transpose", b.op("MatMul", b.op("Transpose", y, perm=[0, 2, 1]), b.f64("left")), perm=[0, 2, 1])
    b.op("Reshape", b.f32(y), b.op("Shape", "X"), outputs=["Y"])
    return _function("ResQHadamard", ["X", "left"], ["Y"], b, f"n{n}_a{left_order}")


@dataclass(frozen=True)
class AttentionSignature:
    num_heads: int
    num_kv_heads: int
    head_dim: int
    high_channels: int
    kv_bits: int
    high_bits: int
    key_rotation: bool

    @property
    def overload(self) -> str:
        return (f"h{self.num_heads}_kv{self.num_kv_heads}_d{self.head_dim}_r{self.high_channels}"
                f"_b{self.kv_bits}x{self.high_bits}{'_rot' if self.key_rotation else ''}")

    @property
    def parts(self) -> list[tuple[int, int, int]]:
        """(start, width, bits) of each quantisation group of a head."""
        low = self.head_dim - self.high_channels
        out = [(0, low, self.kv_bits)]
        if self.high_channels:
            out.append((low, self.high_channels, self.high_bits))
        return out


def _quantize_kv(b: Builder, x: str, sig: AttentionSignature) -> tuple[str, str, str]:
    """x [B, Hkv, S, D] -> the stored row (docs/ops.md): codes uint8 [B, Hkv, S, C], each 4-bit group
    packed two per byte (channel 2j in the low nibble), scales, zero points uint8."""
    codes, scales, zeros = [], [], []
    for start, width, bits in sig.parts:
        part = b.op("Slice", x, b.i64(start), b.i64(start + width), b.i64(3))
        q, s, z = _quantize_asym(b, part, bits)
        if bits == 4:  # exact in float: low + 16 * high <= 255
            pairs = b.op("Reshape", q, b.i64(0, 0, 0, width // 2, 2))
            even = b.op("Slice", pairs, b.i64(0), b.i64(1), b.i64(4))
            odd = b.op("Slice", pairs, b.i64(1), b.i64(2), b.i64(4))
            q = b.op("Reshape", b.op("Add", even, b.op("Mul", odd, b.const(16.0))), b.i64(0, 0, 0, width // 2))
        codes.append(q)
        scales.append(s)
        zeros.append(z)
    cat = lambda xs: b.op("Concat", *xs, axis=3) if len(xs) > 1 else xs[0]  # noqa: E731
    return b.op("Cast", cat(codes), to=UINT8), cat(scales), b.op("Cast", cat(zeros), to=UINT8)


def _dequantize_kv(b: Builder, codes: str, scales: str, zeros: str, sig: AttentionSignature) -> str:
    parts, at = [], 0
    for g, (_, width, bits) in enumerate(sig.parts):
        n = width * bits // 8
        q = b.op("Cast", b.op("Slice", codes, b.i64(at), b.i64(at + n), b.i64(3)), to=INT32)
        at += n
        if bits == 4:  # byte j -> codes 2j (low nibble), 2j + 1, one lookup for the whole cache
            pairs = b.op("Gather", b.const(_UINT4X2, np.int32, "uint4x2"), q, axis=0)
            q = b.op("Reshape", pairs, b.i64(0, 0, 0, width))
        z = b.op("Cast", b.op("Slice", zeros, b.i64(g), b.i64(g + 1), b.i64(3)), to=INT32)
        s = b.op("Slice", scales, b.i64(g), b.i64(g + 1), b.i64(3))
        parts.append(b.op("Mul", b.op("Cast", b.op("Sub", q, z), to=FLOAT), s))
    return b.op("Concat", *parts, axis=3) if len(parts) > 1 else parts[0]


def _repeat_kv(b: Builder, x: str, num_heads: int, num_kv_heads: int, head_dim: int) -> str:
    """[B, Hkv, T, D] -> [B, H, T, D]: query head j reads KV head j // (H / Hkv)."""
    group = num_heads // num_kv_heads
    if group == 1:
        return x
    shape = b.op("Shape", x)
    bt = b.op("Gather", shape, b.i64(0), axis=0)
    tt = b.op("Gather", shape, b.i64(2), axis=0)
    expanded = b.op("Expand", b.op("Unsqueeze", x, b.i64(2)),
                    b.op("Concat", bt, b.i64(num_kv_heads, group), tt, b.i64(head_dim), axis=0))
    return b.op("Reshape", expanded, b.op("Concat", bt, b.i64(num_heads), tt, b.i64(head_dim), axis=0))


def write_rows(b: Builder, cache: str, new: str, past_length: str, output: str | None = None) -> str:
    """cache [B, Hkv, L, x] with new [B, Hkv, S, x] at rows past_length[b] + s (the op's in-place
    update). ScatterElements writes into a copy of the cache: ONNX Runtime does not alias a graph
    input to an output, so this flavour keeps an O(L) copy per call (the TensorRT plugin aliases)."""
    shape = b.op("Shape", new)
    s_len = b.op("Squeeze", b.op("Gather", shape, b.i64(2), axis=0))
    rows = b.op("Reshape", b.op("Range", b.const(0, np.int64), s_len, b.const(1, np.int64)), b.i64(1, 1, -1, 1))
    pos = b.op("Add", b.op("Reshape", b.op("Cast", past_length, to=INT64), b.i64(-1, 1, 1, 1)), rows)
    return b.op("ScatterElements", cache, b.op("Expand", pos, shape), new, axis=2, outputs=[output] if output else 1)


def filled_rows(b: Builder, past_length: str, new: str) -> str:
    """[1]: the cache rows any sequence of the batch uses after this call, max(past_length) + S."""
    s_len = b.op("Gather", b.op("Shape", new), b.i64(2), axis=0)
    return b.op("Add", b.op("ReduceMax", b.op("Cast", past_length, to=INT64), keepdims=1), s_len)


def leading_rows(b: Builder, cache: str, rows: str) -> str:
    return b.op("Slice", cache, b.i64(0), rows, b.i64(2))


def causal_attention(b: Builder, q: str, keys: str, values: str, past_length: str, num_heads: int,
                     num_kv_heads: int, head_dim: int, output: str | None = None, float64: bool = True) -> str:
    """Softmax attention of query s of sequence b (cache row past_length[b] + s) over cache rows
    0 .. past_length[b] + s; q [B, H, S, D], keys/values [B, Hkv, T, D] (the cache's first T rows)
    -> [B, S, H * D]. A float island unless float64 is False (float graphs and the TensorRT flavour,
    where nothing downstream quantises or where the GPU computes in its own precision)."""
    dtype = np.float64 if float64 else np.float32
    if float64:
        q, keys, values = b.f64(q), b.f64(keys), b.f64(values)
    keys = _repeat_kv(b, keys, num_heads, num_kv_heads, head_dim)
    values = _repeat_kv(b, values, num_heads, num_kv_heads, head_dim)
    scores = b.op("Mul", b.op("MatMul", q, b.op("Transpose", keys, perm=[0, 1, 3, 2])),
                  b.const(1.0 / math.sqrt(head_dim), dtype))
    s_len = b.op("Squeeze", b.op("Gather", b.op("Shape", q), b.i64(2), axis=0))
    t_len = b.op("Squeeze", b.op("Gather", b.op("Shape", keys), b.i64(2), axis=0))
    zero, one = b.const(0, np.int64), b.const(1, np.int64)
    rows = b.op("Add", b.op("Reshape", b.op("Cast", past_length, to=INT64), b.i64(-1, 1, 1, 1)),
                b.op("Reshape", b.op("Range", zero, s_len, one), b.i64(1, 1, -1, 1)))  # [B, 1, S, 1]
    cols = b.op("Reshape", b.op("Range", zero, t_len, one), b.i64(1, 1, 1, -1))
    scores = b.op("Where", b.op("LessOrEqual", cols, rows), scores, b.const(-np.inf, dtype))
    out = b.op("Transpose", b.op("MatMul", b.op("Softmax", scores, axis=-1), values), perm=[0, 2, 1, 3])
    if float64:
        out = b.f32(out)
    return b.op("Reshape", out, b.i64(0, 0, num_heads * head_dim), outputs=[output] if output else 1)


def rotate_keys(b: Builder, x: str, rotation: str) -> str:
    """x @ U_C, a float island."""
    return b.f32(b.op("MatMul", b.f64(x), b.f64(rotation)))


def attention_function(sig: AttentionSignature) -> onnx.FunctionProto:
    b = Builder(prefix="f")
    q, k = "Q", "K"
    if sig.key_rotation:
        q, k = rotate_keys(b, q, "key_rotation"), rotate_keys(b, k, "key_rotation")
    present = []
    for new, prefix in ((k, "key"), ("V", "value")):
        for t, name in zip(_quantize_kv(b, new, sig), ("codes", "scales", "zeros")):
            present.append(write_rows(b, f"past_{prefix}_{name}", t, "past_length", f"present_{prefix}_{name}"))
    rows = filled_rows(b, "past_length", "K")
    cached = [leading_rows(b, t, rows) for t in present]  # only the rows in use are dequantised
    keys, values = _dequantize_kv(b, *cached[:3], sig), _dequantize_kv(b, *cached[3:], sig)
    causal_attention(b, q, keys, values, "past_length", sig.num_heads, sig.num_kv_heads, sig.head_dim, output="Y")
    return _function("ResQKVCacheAttention", ATTENTION_INPUTS, ATTENTION_OUTPUTS, b, sig.overload)
