"""Shared cases of the KV-cache attention kernel tests: layouts, a cache filled with quantised history,
and the reference executor's result for one ResQKVCacheAttention call (decoder.py's attention in
float64 over KVQuantizer's dequantised rows, U_C in the GPU order of decoder.rotate_keys_gpu)."""

import math
from dataclasses import dataclass

import torch

from resq_export.decoder import _attention, rotate_keys_gpu
from resq_export.kernels.kv_launch import KVAttrs
from resq_export.layout import KVQuantizer

# (id, attributes): the tiny models' (head_dim 16, 2 high channels: rows of 9 bytes, no 4-byte
# alignment), Llama-3-8B's heads at ResQ's 1/8 high channels, no high part, 8-bit low with a 4-bit
# high part, odd 8-bit part widths (27 + 3 channels), head_dim 256
LAYOUTS = [
    ("tiny_d16", KVAttrs(4, 2, 16, 2)),
    ("llama_d128", KVAttrs(32, 8, 128, 16)),
    ("d64_no_high", KVAttrs(8, 8, 64, 0)),
    ("d64_b8_b4", KVAttrs(6, 2, 64, 8, 8, 4)),
    ("odd_8bit", KVAttrs(3, 1, 30, 3, 8, 8)),
    ("d256", KVAttrs(8, 1, 256, 32)),
]


def quantizer(a: KVAttrs) -> KVQuantizer:
    r = a.high_channels
    return KVQuantizer((a.head_dim - r, r) if r else (a.head_dim,), (a.kv_bits, a.high_bits) if r else (a.kv_bits,))


def cache(a: KVAttrs, batch: int, capacity: int, seed: int):
    """(codes, scales, zeros) holding quantised random rows in every slot (the history and, past the
    lengths, finite leftovers the kernels must not read)."""
    g = torch.Generator().manual_seed(seed)
    return quantizer(a).quantize(torch.randn(batch, a.num_kv_heads, capacity, a.head_dim, generator=g) * 2)


@dataclass
class Call:
    a: KVAttrs
    q: torch.Tensor  # [B, H, S, D]
    k: torch.Tensor  # [B, Hkv, S, D]
    v: torch.Tensor
    past_length: torch.Tensor  # int32 [B]
    key_rotation: torch.Tensor | None


def make_call(a: KVAttrs, lengths: list[int], seq: int, seed: int, rotation: bool = True) -> Call:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    u = torch.linalg.qr(rnd(a.head_dim, a.head_dim))[0] if rotation else None
    return Call(a, rnd(b, a.num_heads, seq, a.head_dim), rnd(b, a.num_kv_heads, seq, a.head_dim) * 1.5,
                rnd(b, a.num_kv_heads, seq, a.head_dim), torch.tensor(lengths, dtype=torch.int32), u)


def reference(call: Call, k_cache, v_cache):
    """The op on the reference executor: the caches with the new rows written (copies) and Y."""
    a, quant = call.a, quantizer(call.a)
    q, k = call.q.float(), call.k
    if call.key_rotation is not None:
        q, k = rotate_keys_gpu(q, call.key_rotation), rotate_keys_gpu(k, call.key_rotation)
    seq = q.shape[2]
    k_out, v_out = [t.clone() for t in k_cache], [t.clone() for t in v_cache]
    ys = []
    for b, past in enumerate(call.past_length.tolist()):
        for out, new in ((k_out, k), (v_out, call.v)):
            for t, part in zip(out, quant.quantize(new[b])):
                t[b, :, past:past + seq] = part
        keys = quant.dequantize(*(t[b, :, :past + seq] for t in k_out))
        values = quant.dequantize(*(t[b, :, :past + seq] for t in v_out))
        y = _attention(q[b:b + 1], keys[None], values[None], a.group, torch.float64)
        ys.append(y.transpose(1, 2).reshape(1, seq, a.num_heads * a.head_dim))
    return k_out, v_out, torch.cat(ys)


def op_atol(call: Call, k_out, v_out, decode_atol: float) -> float:
    """The tolerance of Y for kv_launch.kv_attention's path at this call: decode_atol where flash-decoding
    serves it (tests/kernels/test_kernel_kv_decode.py says why), else the prefill kernel's bound
    (tests/kernels/test_kernel_kv_prefill.py says why): P rounded to fp16 once, 2^-10 max |V|, plus for
    a float32 q its rounding to fp16, which moves a score by at most eps = 2^-11 max_j sum_c |q_c k_jc| /
    sqrt(D) and the softmax's output by 2 eps max |V| (eps here the maximum over every row and key:
    looser than per row, still a bound). k_out, v_out: the reference's caches after the call."""
    from resq_export.kernels.kv_launch import prefill_name

    a = call.a
    if prefill_name(a, call.q.shape[2], call.q.dtype) is None:
        return decode_atol
    quant, q = quantizer(a), call.q.float()
    if call.key_rotation is not None:
        q = rotate_keys_gpu(q, call.key_rotation)
    vmax, score = 0.0, 0.0
    for b, past in enumerate(call.past_length.tolist()):
        end = past + q.shape[2]
        keys = quant.dequantize(*(t[b, :, :end] for t in k_out)).abs().repeat_interleave(a.group, 0)
        values = quant.dequantize(*(t[b, :, :end] for t in v_out))
        vmax = max(vmax, values.abs().max().item())
        score = max(score, (q[b].abs() @ keys.transpose(1, 2)).max().item() / math.sqrt(a.head_dim))
    eps = 2.0**-11 * score if call.q.dtype == torch.float32 else 0.0  # an fp16 q is the dot's operand as it is
    rounding = 2.0**-7 if call.q.dtype == torch.bfloat16 else 2.0**-10
    return (rounding + 2 * eps) * vmax
