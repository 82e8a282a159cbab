"""numpy wrappers of the CPU references (plugins/include/resq_cpu_ref.h), one per kernel."""

from __future__ import annotations

import ctypes

import numpy as np

from .loader import KVShape, LinearShape, check, layout_of, load


def _p(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def _c(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def _lib() -> ctypes.CDLL:
    lib = load("resq_cpu_ref")
    lib.resq_spec_manifest.restype = ctypes.c_char_p
    return lib


def spec_manifest() -> str:
    return _lib().resq_spec_manifest().decode()


def quantize_act(shape: LinearShape, x: np.ndarray):
    """x [T, K] float32 -> (q_low [T, act_low_pitch] u8, q_high [T, act_high_pitch] u8, sx [T, G], zx [T, G])."""
    lay = layout_of(shape)
    x = _c(x, np.float32)
    t = x.shape[0]
    q_low = np.zeros((t, max(lay.act_low_pitch, 1)), np.uint8)
    q_high = np.zeros((t, max(lay.act_high_pitch, 1)), np.uint8)
    sx = np.zeros((t, lay.groups), np.float32)
    zx = np.zeros((t, lay.groups), np.int32)
    check("resq_cpu_quantize_act", _lib().resq_cpu_quantize_act(
        ctypes.byref(shape), _p(x), ctypes.c_int64(t), _p(q_low), _p(q_high), _p(sx), _p(zx)))
    return q_low, q_high, sx, zx


def prepare_weights(shape: LinearShape, w_low: np.ndarray | None, w_high: np.ndarray | None, n: int):
    """Contract qweight_low/qweight_high -> (w_low_p, w_high_p, wsum [N, G])."""
    lay = layout_of(shape)
    wl = np.zeros((n, max(lay.w_low_pitch, 1)), np.int8)
    wh = np.zeros((n, max(lay.w_high_pitch, 1)), np.int8)
    wsum = np.zeros((n, lay.groups), np.int32)
    w_low = None if w_low is None else _c(w_low, np.int8)
    w_high = None if w_high is None else _c(w_high, np.int8)
    check("resq_cpu_prepare_weights", _lib().resq_cpu_prepare_weights(
        ctypes.byref(shape), ctypes.c_int32(n), _p(w_low), _p(w_high), _p(wl), _p(wh), _p(wsum)))
    return wl, wh, wsum


def prepare_lqer_a(shape: LinearShape, a: np.ndarray):
    lay = layout_of(shape)
    a = _c(a, np.int8)
    a_p = np.zeros((a.shape[0], lay.a8_pitch), np.int8)
    asum = np.zeros((a.shape[0], lay.groups), np.int32)
    check("resq_cpu_prepare_lqer_a", _lib().resq_cpu_prepare_lqer_a(
        ctypes.byref(shape), ctypes.c_int32(a.shape[0]), _p(a), _p(a_p), _p(asum)))
    return a_p, asum


def lqer_project(shape: LinearShape, act, a_p: np.ndarray, asum: np.ndarray, a_scale: np.ndarray):
    """act = quantize_act(...) -> (qa int8 [T, R], sa float32 [T])."""
    q_low, q_high, sx, zx = act
    t, rank = sx.shape[0], a_p.shape[0]
    qa = np.zeros((t, rank), np.int8)
    sa = np.zeros((t,), np.float32)
    a_scale = _c(a_scale, np.float32)
    check("resq_cpu_lqer_project", _lib().resq_cpu_lqer_project(
        ctypes.byref(shape), ctypes.c_int64(t), ctypes.c_int32(rank), _p(q_low), _p(q_high), _p(sx), _p(zx),
        _p(a_p), _p(asum), _p(a_scale), _p(qa), _p(sa)))
    return qa, sa


def mixed_gemm(shape: LinearShape, act, weights, wscale: np.ndarray, lqer=None, bias=None) -> np.ndarray:
    """act from quantize_act, weights from prepare_weights, lqer = (qa, sa, lqer_b, lqer_b_scale) -> y [T, N]."""
    q_low, q_high, sx, zx = act
    wl, wh, wsum = weights
    t, n = sx.shape[0], wsum.shape[0]
    wscale = _c(wscale, np.float32)
    y = np.zeros((t, n), np.float32)
    rank, qa, sa, lb, lbs = 0, None, None, None, None
    if lqer is not None:
        qa, sa, lb, lbs = _c(lqer[0], np.int8), _c(lqer[1], np.float32), _c(lqer[2], np.int8), _c(lqer[3], np.float32)
        rank = qa.shape[1]
    bias = None if bias is None else _c(bias, np.float32)
    check("resq_cpu_mixed_gemm", _lib().resq_cpu_mixed_gemm(
        ctypes.byref(shape), ctypes.c_int64(t), ctypes.c_int32(n), _p(q_low), _p(q_high), _p(sx), _p(zx),
        _p(wl), _p(wh), _p(wscale), _p(wsum), ctypes.c_int32(rank), _p(qa), _p(sa), _p(lb), _p(lbs), _p(bias), _p(y)))
    return y


def hadamard(x: np.ndarray, left: np.ndarray) -> np.ndarray:
    x = _c(x, np.float32)
    left = _c(left, np.float32)
    n = x.shape[-1]
    y = np.zeros_like(x)
    check("resq_cpu_hadamard", _lib().resq_cpu_hadamard(
        _p(x), ctypes.c_int64(x.size // n), ctypes.c_int32(n), _p(left), ctypes.c_int32(left.shape[0]), _p(y)))
    return y


def rotate(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    x = _c(x, np.float32)
    u = _c(u, np.float32)
    d = x.shape[-1]
    y = np.zeros_like(x)
    check("resq_cpu_rotate", _lib().resq_cpu_rotate(_p(x), ctypes.c_int64(x.size // d), ctypes.c_int32(d), _p(u), _p(y)))
    return y


def kv_cache(shape: KVShape, capacity: int):
    """Empty cache buffers (codes, scales, zeros) of one tensor (K or V)."""
    g = 2 if shape.high_channels else 1
    lead = (shape.batch, shape.num_kv_heads, capacity)
    return (np.zeros((*lead, shape.head_dim), np.uint8), np.zeros((*lead, g), np.float32), np.zeros((*lead, g), np.uint8))


def kv_append(shape: KVShape, x: np.ndarray, cache, pos: int) -> None:
    """Quantise x [B, Hkv, S, D] into cache (from kv_cache) at positions pos.. in place."""
    x = _c(x, np.float32)
    codes, scales, zeros = cache
    check("resq_cpu_kv_append", _lib().resq_cpu_kv_append(
        ctypes.byref(shape), _p(x), ctypes.c_int32(x.shape[2]), _p(codes), _p(scales), _p(zeros),
        ctypes.c_int32(codes.shape[2]), ctypes.c_int32(pos)))


def kv_attention(shape: KVShape, q: np.ndarray, k_cache, v_cache, length: int) -> np.ndarray:
    q = _c(q, np.float32)
    b, h, s, d = q.shape
    out = np.zeros((b, s, h * d), np.float32)
    check("resq_cpu_kv_attention", _lib().resq_cpu_kv_attention(
        ctypes.byref(shape), _p(q), ctypes.c_int32(s), *(_p(a) for a in k_cache), *(_p(a) for a in v_cache),
        ctypes.c_int32(k_cache[0].shape[2]), ctypes.c_int32(length), _p(out)))
    return out
