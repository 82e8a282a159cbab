"""torch wrappers of the CUDA kernel library (plugins/include/resq_kernels.h): CUDA tensors in and
out, the current torch stream. Used by the GPU tests and tools/bench_kernels.py."""

from __future__ import annotations

import ctypes

import torch

from .loader import KVShape, LinearShape, check, layout_of, load

F32, F16, BF16 = 0, 1, 2
_DTYPES = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}


def _lib() -> ctypes.CDLL:
    lib = load("resq_kernels")
    lib.resq_cuda_last_error.restype = ctypes.c_char_p
    for name in ("resq_cuda_mixed_linear_workspace", "resq_cuda_kv_attention_workspace"):
        getattr(lib, name).restype = ctypes.c_size_t
    return lib


def _call(name: str, *args) -> None:
    lib = _lib()
    code = getattr(lib, name)(*args)
    if code == 3:
        raise RuntimeError(f"{name}: {lib.resq_cuda_last_error().decode()}")
    check(name, code)


def _p(t: torch.Tensor | None):
    if t is None:
        return None
    if not t.is_cuda or not t.is_contiguous():
        raise ValueError("kernel operands must be contiguous CUDA tensors")
    return ctypes.c_void_p(t.data_ptr())


def _stream():
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def device_sm() -> int:
    return _lib().resq_cuda_device_sm()


def _empty(shape, dtype) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device="cuda")


def quantize_act(shape: LinearShape, x: torch.Tensor):
    lay = layout_of(shape)
    t = x.shape[0]
    out = (_empty((t, max(lay.act_low_pitch, 1)), torch.uint8), _empty((t, max(lay.act_high_pitch, 1)), torch.uint8),
           _empty((t, lay.groups), torch.float32), _empty((t, lay.groups), torch.int32))
    _call("resq_cuda_quantize_act", ctypes.byref(shape), _p(x), _DTYPES[x.dtype], ctypes.c_int64(t),
          *(_p(o) for o in out), _stream())
    return out


def prepare_weights(shape: LinearShape, w_low: torch.Tensor | None, w_high: torch.Tensor | None, n: int):
    lay = layout_of(shape)
    out = (_empty((n, max(lay.w_low_pitch, 1)), torch.int8), _empty((n, max(lay.w_high_pitch, 1)), torch.int8),
           _empty((n, lay.groups), torch.int32))
    _call("resq_cuda_prepare_weights", ctypes.byref(shape), ctypes.c_int32(n), _p(w_low), _p(w_high),
          *(_p(o) for o in out), _stream())
    return out


def prepare_lqer_a(shape: LinearShape, a: torch.Tensor):
    lay = layout_of(shape)
    out = (_empty((a.shape[0], lay.a8_pitch), torch.int8), _empty((a.shape[0], lay.groups), torch.int32))
    _call("resq_cuda_prepare_lqer_a", ctypes.byref(shape), ctypes.c_int32(a.shape[0]), _p(a), *(_p(o) for o in out),
          _stream())
    return out


def lqer_project(shape: LinearShape, act, a_p, asum, a_scale):
    t, rank = act[2].shape[0], a_p.shape[0]
    qa, sa = _empty((t, rank), torch.int8), _empty((t,), torch.float32)
    _call("resq_cuda_lqer_project", ctypes.byref(shape), ctypes.c_int64(t), ctypes.c_int32(rank),
          *(_p(a) for a in act), _p(a_p), _p(asum), _p(a_scale), _p(qa), _p(sa), _stream())
    return qa, sa


def mixed_gemm(shape: LinearShape, act, weights, wscale, lqer=None, bias=None, out_dtype=torch.float32, out=None):
    t, n = act[2].shape[0], weights[2].shape[0]
    y = out if out is not None else _empty((t, n), out_dtype)
    qa, sa, lb, lbs = lqer if lqer is not None else (None, None, None, None)
    rank = 0 if qa is None else qa.shape[1]
    _call("resq_cuda_mixed_gemm", ctypes.byref(shape), ctypes.c_int64(t), ctypes.c_int32(n), *(_p(a) for a in act),
          _p(weights[0]), _p(weights[1]), _p(wscale), _p(weights[2]), ctypes.c_int32(rank), _p(qa), _p(sa), _p(lb),
          _p(lbs), _p(bias), _p(y), _DTYPES[y.dtype], _stream())
    return y


def mixed_linear_workspace(shape: LinearShape, t: int, rank: int) -> torch.Tensor:
    size = _lib().resq_cuda_mixed_linear_workspace(ctypes.byref(shape), ctypes.c_int64(t), ctypes.c_int32(rank))
    return _empty((max(size, 1),), torch.uint8)


def mixed_linear(shape: LinearShape, x, weights, wscale, lqer_a=None, lqer_b=None, bias=None,
                 out_dtype=torch.float32, workspace=None, out=None):
    """lqer_a = (a_p, asum, a_scale) from prepare_lqer_a, lqer_b = (lqer_b, lqer_b_scale)."""
    t, n = x.shape[0], weights[2].shape[0]
    rank = 0 if lqer_a is None else lqer_a[0].shape[0]
    ws = workspace if workspace is not None else mixed_linear_workspace(shape, t, rank)
    y = out if out is not None else _empty((t, n), out_dtype)
    a_p, asum, a_scale = lqer_a if lqer_a is not None else (None, None, None)
    lb, lbs = lqer_b if lqer_b is not None else (None, None)
    _call("resq_cuda_mixed_linear", ctypes.byref(shape), _p(x), _DTYPES[x.dtype], ctypes.c_int64(t), ctypes.c_int32(n),
          _p(weights[0]), _p(weights[1]), _p(wscale), _p(weights[2]), ctypes.c_int32(rank), _p(a_p), _p(asum),
          _p(a_scale), _p(lb), _p(lbs), _p(bias), _p(y), _DTYPES[y.dtype], _p(ws), ctypes.c_size_t(ws.numel()),
          _stream())
    return y


def hadamard(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    y = torch.empty_like(x)
    _call("resq_cuda_hadamard", _p(x), ctypes.c_int64(x.numel() // n), ctypes.c_int32(n), _p(left),
          ctypes.c_int32(left.shape[0]), _p(y), _stream())
    return y


def rotate(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    y = torch.empty_like(x)
    _call("resq_cuda_rotate", _p(x), ctypes.c_int64(x.numel() // d), ctypes.c_int32(d), _p(u), _p(y), _stream())
    return y


def kv_cache(shape: KVShape, capacity: int):
    g = 2 if shape.high_channels else 1
    lead = (shape.batch, shape.num_kv_heads, capacity)
    return (_empty((*lead, shape.head_dim), torch.uint8), _empty((*lead, g), torch.float32),
            _empty((*lead, g), torch.uint8))


def kv_append(shape: KVShape, x: torch.Tensor, cache, pos: int) -> None:
    _call("resq_cuda_kv_append", ctypes.byref(shape), _p(x), ctypes.c_int32(x.shape[2]), *(_p(c) for c in cache),
          ctypes.c_int32(cache[0].shape[2]), ctypes.c_int32(pos), _stream())


def kv_copy(shape: KVShape, past, past_len: int, cache) -> None:
    _call("resq_cuda_kv_copy", ctypes.byref(shape), *(_p(c) for c in past), ctypes.c_int32(past_len),
          *(_p(c) for c in cache), ctypes.c_int32(cache[0].shape[2]), _stream())


def kv_attention_workspace(shape: KVShape, seq: int, length: int) -> torch.Tensor:
    size = _lib().resq_cuda_kv_attention_workspace(ctypes.byref(shape), ctypes.c_int32(seq), ctypes.c_int32(length))
    return _empty((max(size, 1),), torch.uint8)


def kv_attention(shape: KVShape, q: torch.Tensor, k_cache, v_cache, length: int, workspace=None, out=None):
    b, h, s, d = q.shape
    ws = workspace if workspace is not None else kv_attention_workspace(shape, s, length)
    y = out if out is not None else _empty((b, s, h * d), torch.float32)
    _call("resq_cuda_kv_attention", ctypes.byref(shape), _p(q), ctypes.c_int32(s), *(_p(c) for c in k_cache),
          *(_p(c) for c in v_cache), ctypes.c_int32(k_cache[0].shape[2]), ctypes.c_int32(length), _p(y), _p(ws),
          ctypes.c_size_t(ws.numel()), _stream())
    return y
