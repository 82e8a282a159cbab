"""torch wrappers of the CUDA kernel library (plugins/common/resq_kernels.h): CUDA tensors in and
out, the current torch stream. Used by the GPU tests and tools/bench_kernels.py."""

from __future__ import annotations

import ctypes

import torch

from ..export.spec import PREPARED_LINEAR
from . import params as P
from .loader import check, kv_cache_shapes, layout_of, load

F32, F16, BF16 = 0, 1, 2
_DTYPES = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}


def _lib() -> ctypes.CDLL:
    lib = load("resq_kernels")
    lib.resq_cuda_last_error.restype = ctypes.c_char_p
    for name in ("resq_cuda_mixed_linear_workspace", "resq_cuda_kv_attention_workspace"):
        getattr(lib, name).restype = ctypes.c_size_t
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


def quantize_act(shape: P.LinearShape, x: torch.Tensor):
    lay = layout_of(shape)
    t = x.shape[0]
    out = (_empty((t, max(lay.act_low_pitch, 1)), torch.uint8), _empty((t, max(lay.act_high_pitch, 1)), torch.uint8),
           _empty((t, lay.groups), torch.float32), _empty((t, lay.groups), torch.int32))
    _call("resq_cuda_quantize_act", P.QuantizeActParams(shape, t, _p(x), _DTYPES[x.dtype], _act(out)))
    return out


def _act(act) -> P.ActCodes:
    return P.ActCodes(*(_p(a) for a in act))


def _inputs(**tensors) -> P.OpInputs:
    """ResQMixedLinearPrepared's input table from tensors named as in ops.json."""
    return P.op_inputs(PREPARED_LINEAR, {name: _p(t) for name, t in tensors.items()})


def _weights(weights, wscale) -> dict:
    return {"weight_low": weights[0], "weight_high": weights[1], "weight_sums": weights[2], "wscale": wscale}


def prepare_weights(shape: P.LinearShape, w_low: torch.Tensor | None, w_high: torch.Tensor | None, n: int):
    lay = layout_of(shape)
    out = (_empty((n, max(lay.w_low_pitch, 1)), torch.int8), _empty((n, max(lay.w_high_pitch, 1)), torch.int8),
           _empty((n, lay.groups), torch.int32))
    _call("resq_cuda_prepare_weights", P.PrepareWeightsParams(shape, n, _p(w_low), _p(w_high), *(_p(o) for o in out)))
    return out


def prepare_lqer_a(shape: P.LinearShape, a: torch.Tensor):
    lay = layout_of(shape)
    out = (_empty((a.shape[0], lay.a8_pitch), torch.int8), _empty((a.shape[0], lay.groups), torch.int32))
    _call("resq_cuda_prepare_lqer_a", P.PrepareLqerAParams(shape, a.shape[0], _p(a), *(_p(o) for o in out)))
    return out


def lqer_project(shape: P.LinearShape, act, a_p, asum, a_scale):
    t, rank = act[2].shape[0], a_p.shape[0]
    qa, sa = _empty((t, rank), torch.int8), _empty((t,), torch.float32)
    lqer = _inputs(lqer_a=a_p, lqer_a_sums=asum, lqer_a_scale=a_scale)
    _call("resq_cuda_lqer_project", P.LqerProjectParams(shape, t, rank, _act(act), lqer, _p(qa), _p(sa)))
    return qa, sa


def mixed_gemm(shape: P.LinearShape, act, weights, wscale, lqer=None, bias=None, out_dtype=torch.float32, out=None,
               mma: int = P.MMA_AUTO, inputs=None):
    """mma: P.MMA_AUTO, or P.MMA_INT4 / P.MMA_INT4_AS_INT8 to force one 4-bit MMA path; inputs: more of
    ResQMixedLinearPrepared's inputs by name (ops.json)."""
    t, n = act[2].shape[0], weights[2].shape[0]
    y = out if out is not None else _empty((t, n), out_dtype)
    qa, sa, lb, lbs = lqer if lqer is not None else (None, None, None, None)
    rank = 0 if qa is None else qa.shape[1]
    table = _inputs(**_weights(weights, wscale), bias=bias, lqer_b=lb, lqer_b_scale=lbs, **(inputs or {}))
    _call("resq_cuda_mixed_gemm", P.MixedGemmParams(shape, t, n, rank, _act(act), table, _p(qa), _p(sa), _p(y),
                                                    _DTYPES[y.dtype], mma))
    return y


def _linear_params(shape, t, rank) -> P.MixedLinearParams:
    params = P.MixedLinearParams()
    params.shape, params.tokens, params.rank = shape, t, rank
    return params


def mixed_linear_workspace(shape: P.LinearShape, t: int, rank: int) -> torch.Tensor:
    size = _lib().resq_cuda_mixed_linear_workspace(ctypes.byref(_linear_params(shape, t, rank)))
    return _empty((max(size, 1),), torch.uint8)


def mixed_linear(shape: P.LinearShape, x, weights, wscale, lqer_a=None, lqer_b=None, bias=None,
                 out_dtype=torch.float32, workspace=None, out=None, mma: int = P.MMA_AUTO, inputs=None):
    """lqer_a = (a_p, asum, a_scale) from prepare_lqer_a, lqer_b = (lqer_b, lqer_b_scale)."""
    t, n = x.shape[0], weights[2].shape[0]
    rank = 0 if lqer_a is None else lqer_a[0].shape[0]
    ws = workspace if workspace is not None else mixed_linear_workspace(shape, t, rank)
    y = out if out is not None else _empty((t, n), out_dtype)
    a_p, asum, a_scale = lqer_a if lqer_a is not None else (None, None, None)
    lb, lbs = lqer_b if lqer_b is not None else (None, None)
    table = _inputs(X=x, **_weights(weights, wscale), bias=bias, lqer_a=a_p, lqer_a_sums=asum, lqer_a_scale=a_scale,
                    lqer_b=lb, lqer_b_scale=lbs, **(inputs or {}))
    _call("resq_cuda_mixed_linear", P.MixedLinearParams(shape, t, n, rank, table, _DTYPES[x.dtype], _p(y),
                                                        _DTYPES[y.dtype], mma, _p(ws), ws.numel()))
    return y


def hadamard(x: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    y = torch.empty_like(x)
    _call("resq_cuda_hadamard", P.HadamardParams(x.numel() // n, n, left.shape[0], _p(x), _p(left), _p(y)))
    return y


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
