"""torch wrappers of the CUDA kernel library (plugins/common/resq_kernels.h: the KV attention and its
rotation): CUDA tensors in and out, the current torch stream. Used by the GPU tests and
tools/bench_kernels.py. The mixed linear and the Hadamard run as Triton cubins (native/seam.py)."""

from __future__ import annotations

import ctypes

import torch

from . import params as P
from .loader import check, kv_cache_shapes, load

def _lib() -> ctypes.CDLL:
    lib = load("resq_kernels")
    lib.resq_cuda_last_error.restype = ctypes.c_char_p
    lib.resq_cuda_kv_attention_workspace.restype = ctypes.c_size_t
    return lib


def _call(name: str, params: ctypes.Structure) -> None:
    lib = _lib()
    code = getattr(lib, name)(ctypes.byref(params), _stream())
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


def rotate(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    y = torch.empty_like(x)
    _call("resq_cuda_rotate", P.RotateParams(x.numel() // d, d, _p(x), _p(u), _p(y)))
    return y


def kv_cache(shape: P.KVShape, capacity: int):
    codes, groups = kv_cache_shapes(shape, capacity)
    return _empty(codes, torch.uint8), _empty(groups, torch.float32), _empty(groups, torch.uint8)


def _kv(cache) -> P.KVCache:
    return P.KVCache(*(_p(c) for c in cache), cache[0].shape[2])


def _lengths(shape: P.KVShape, past_length) -> torch.Tensor:
    """past_length as the [batch] int32 device tensor the kernels read: an int stands for every sequence."""
    if isinstance(past_length, torch.Tensor):
        return past_length.to(device="cuda", dtype=torch.int32).expand(shape.batch).contiguous()
    return torch.full((shape.batch,), int(past_length), dtype=torch.int32, device="cuda")


def kv_append(shape: P.KVShape, x: torch.Tensor, cache, past_length) -> None:
    lengths = _lengths(shape, past_length)
    _call("resq_cuda_kv_append", P.KVAppendParams(shape, x.shape[2], _p(lengths), _p(x), _kv(cache)))


def kv_attention_workspace(shape: P.KVShape, seq: int) -> torch.Tensor:
    params = P.KVAttentionParams()
    params.shape, params.seq = shape, seq
    size = _lib().resq_cuda_kv_attention_workspace(ctypes.byref(params))
    return _empty((max(size, 1),), torch.uint8)


def kv_attention(shape: P.KVShape, q: torch.Tensor, k_cache, v_cache, past_length, workspace=None, out=None):
    """Query s of sequence b at cache row past_length[b] + s over rows 0 .. past_length[b] + s."""
    b, h, s, d = q.shape
    lengths = _lengths(shape, past_length)
    ws = workspace if workspace is not None else kv_attention_workspace(shape, s)
    y = out if out is not None else _empty((b, s, h * d), torch.float32)
    _call("resq_cuda_kv_attention", P.KVAttentionParams(shape, s, _p(lengths), _p(q), _kv(k_cache), _kv(v_cache),
                                                        _p(y), _p(ws), ws.numel()))
    return y
