"""numpy wrappers of the CPU references (plugins/common/resq_cpu_ref.h), one per kernel."""

from __future__ import annotations

import ctypes

import numpy as np

from . import params as P
from ..export.spec import PREPARED_LINEAR
from .loader import check, kv_cache_shapes, layout_of, load


def _p(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def _c(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _lib() -> ctypes.CDLL:
    lib = load("resq_cpu_ref")
    lib.resq_spec_manifest.restype = ctypes.c_char_p
    lib.resq_params_manifest.restype = ctypes.c_char_p
    return lib


def _call(name: str, params: ctypes.Structure) -> None:
    check(name, getattr(_lib(), name)(ctypes.byref(params)))


def spec_manifest() -> str:
    return _lib().resq_spec_manifest().decode()


def params_manifest() -> str:
    return _lib().resq_params_manifest().decode()


def act_codes(act) -> P.ActCodes:
    return P.ActCodes(*(_p(a) for a in act))


def quantize_act(shape: P.LinearShape, x: np.ndarray):
    """x [T, K] float32 -> (q_low [T, act_low_pitch] u8, q_high [T, act_high_pitch] u8, sx [T, G], zx [T, G])."""
    lay = layout_of(shape)
    x = _c(x, np.float32)
    t = x.shape[0]
    out = (np.zeros((t, max(lay.act_low_pitch, 1)), np.uint8), np.zeros((t, max(lay.act_high_pitch, 1)), np.uint8),
           np.zeros((t, lay.groups), np.float32), np.zeros((t, lay.groups), np.int32))
    _call("resq_cpu_quantize_act", P.QuantizeActParams(shape, t, _p(x), 0, act_codes(out)))
    return out


def prepare_weights(shape: P.LinearShape, w_low: np.ndarray | None, w_high: np.ndarray | None, n: int):
    """Contract qweight_low/qweight_high -> (w_low_p, w_high_p, wsum [N, G])."""
    lay = layout_of(shape)
    wl = np.zeros((n, max(lay.w_low_pitch, 1)), np.int8)
    wh = np.zeros((n, max(lay.w_high_pitch, 1)), np.int8)
    wsum = np.zeros((n, lay.groups), np.int32)
    w_low = None if w_low is None else _c(w_low, np.int8)
    w_high = None if w_high is None else _c(w_high, np.int8)
    _call("resq_cpu_prepare_weights", P.PrepareWeightsParams(shape, n, _p(w_low), _p(w_high), _p(wl), _p(wh),
                                                             _p(wsum)))
    return wl, wh, wsum


def prepare_lqer_a(shape: P.LinearShape, a: np.ndarray):
    lay = layout_of(shape)
    a = _c(a, np.int8)
    a_p = np.zeros((a.shape[0], lay.a8_pitch), np.int8)
    asum = np.zeros((a.shape[0], lay.groups), np.int32)
    _call("resq_cpu_prepare_lqer_a", P.PrepareLqerAParams(shape, a.shape[0], _p(a), _p(a_p), _p(asum)))
    return a_p, asum


def lqer_project(shape: P.LinearShape, act, a_p: np.ndarray, asum: np.ndarray, a_scale: np.ndarray):
    """act = quantize_act(...) -> (qa int8 [T, R], sa float32 [T])."""
    t, rank = act[2].shape[0], a_p.shape[0]
    qa = np.zeros((t, rank), np.int8)
    sa = np.zeros((t,), np.float32)
    # converted arrays held by name: the input table keeps bare addresses, not the arrays
    a_p, asum, a_scale = _c(a_p, np.int8), _c(asum, np.int32), _c(a_scale, np.float32)
    lqer = P.op_inputs(PREPARED_LINEAR, {"lqer_a": _p(a_p), "lqer_a_sums": _p(asum), "lqer_a_scale": _p(a_scale)})
    _call("resq_cpu_lqer_project", P.LqerProjectParams(shape, t, rank, act_codes(act), lqer, _p(qa), _p(sa)))
    return qa, sa


def mixed_gemm(shape: P.LinearShape, act, weights, wscale: np.ndarray, lqer=None, bias=None, inputs=None) -> np.ndarray:
    """act from quantize_act, weights from prepare_weights, lqer = (qa, sa, lqer_b, lqer_b_scale) -> y [T, N].
    inputs: more of ResQMixedLinearPrepared's inputs by name (ops.json), contiguous arrays."""
    wl, wh, wsum = weights
    t, n = act[2].shape[0], wsum.shape[0]
    wscale = _c(wscale, np.float32)
    y = np.zeros((t, n), np.float32)
    qa, sa, lb, lbs = (None,) * 4
    if lqer is not None:
        qa, sa, lb, lbs = _c(lqer[0], np.int8), _c(lqer[1], np.float32), _c(lqer[2], np.int8), _c(lqer[3], np.float32)
    bias = None if bias is None else _c(bias, np.float32)
    table = P.op_inputs(PREPARED_LINEAR, {
        "weight_low": _p(wl), "weight_high": _p(wh), "wscale": _p(wscale), "weight_sums": _p(wsum), "bias": _p(bias),
        "lqer_b": _p(lb), "lqer_b_scale": _p(lbs), **{k: _p(v) for k, v in (inputs or {}).items()}})
    _call("resq_cpu_mixed_gemm", P.MixedGemmParams(shape, t, n, 0 if qa is None else qa.shape[1], act_codes(act), table,
                                                   _p(qa), _p(sa), _p(y), 0, P.MMA_AUTO))
    return y


def hadamard(x: np.ndarray, left: np.ndarray) -> np.ndarray:
    x = _c(x, np.float32)
    left = _c(left, np.float32)
    n = x.shape[-1]
    y = np.zeros_like(x)
    _call("resq_cpu_hadamard", P.HadamardParams(x.size // n, n, left.shape[0], _p(x), _p(left), _p(y)))
    return y


def rotate(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    x = _c(x, np.float32)
    u = _c(u, np.float32)
    d = x.shape[-1]
    y = np.zeros_like(x)
    _call("resq_cpu_rotate", P.RotateParams(x.size // d, d, _p(x), _p(u), _p(y)))
    return y


def kv_cache(shape: P.KVShape, capacity: int):
    """Empty cache buffers (codes, scales, zeros) of one tensor (K or V)."""
    codes, groups = kv_cache_shapes(shape, capacity)
    return np.zeros(codes, np.uint8), np.zeros(groups, np.float32), np.zeros(groups, np.uint8)


def _kv(cache) -> P.KVCache:
    return P.KVCache(*(_p(a) for a in cache), cache[0].shape[2])


def _lengths(shape: P.KVShape, past_length) -> np.ndarray:
    """past_length as the [batch] int32 array the entry points read: an int stands for every sequence."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(past_length, np.int32), (shape.batch,)))


def kv_append(shape: P.KVShape, x: np.ndarray, cache, past_length) -> None:
    """Quantise x [B, Hkv, S, D] into cache (from kv_cache) in place, at rows past_length[b].. of
    sequence b (an int: the same for all)."""
    x, lengths = _c(x, np.float32), _lengths(shape, past_length)
    _call("resq_cpu_kv_append", P.KVAppendParams(shape, x.shape[2], _p(lengths), _p(x), _kv(cache)))


def kv_attention(shape: P.KVShape, q: np.ndarray, k_cache, v_cache, past_length) -> np.ndarray:
    """Query s of sequence b at cache row past_length[b] + s over rows 0 .. past_length[b] + s."""
    q, lengths = _c(q, np.float32), _lengths(shape, past_length)
    b, h, s, d = q.shape
    out = np.zeros((b, s, h * d), np.float32)
    _call("resq_cpu_kv_attention", P.KVAttentionParams(shape, s, _p(lengths), _p(q), _kv(k_cache), _kv(v_cache),
                                                       _p(out), None, 0))
    return out
