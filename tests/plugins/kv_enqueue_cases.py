"""The KV attention's cases of the plugins' enqueue check (tools/op_enqueue_check.py), written to a
case file beside the linears' (plugin_enqueue_cases.py) so that the check runs them here under
Triton's interpreter and on a GPU machine, where neither the tiny models nor the reference are.

A case is a sequence of calls through one cache, as a model's layer makes them: a prefill then
decode steps, each appending at past_length (different per sequence of the batch) and attending over
the cache; the cache tensors are both the past inputs and the present outputs (one buffer each, as
TensorRT binds the aliased I/O), except in a step marked "aliased": False, where present is a buffer
of its own that the op fills with a copy of past first. Each step carries what the reference
executor gives (kv_cases.reference: the caches after the call, bit for bit, and Y) and Y's
tolerance on the path the policy takes (kv_cases.op_atol: the prefill kernel's bound or
flash-decoding's). op_atol is a worst-case bound (2^-7 max|V| or so at these sizes, 50-90x the
kernel's error), which roundings 8x coarser than the kernel's pass; so a prefill step also carries
the kernel's own arithmetic (tests/kernels/kv_rounding.py) and its tolerances (kv_rounding's rule:
at most 1 % of the outputs beyond 2^-17 max|V|, where exp2's last bit rounded a P weight the other way,
none beyond 2^-10): record mode holds Y to them; on a GPU (its MMA's order, its exp2) more such flips
may occur, so cuda mode reports the distance only.

{"case", "op", "fields", "cache": the six cache tensors before the first step (key codes, scales,
zeros, value codes, scales, zeros), "steps": [{"inputs": [Q, K, V, past_length(, key_rotation)],
"expected": Y, "expected_cache": the six after the step, "atol", "policy": kv_launch.kv_kernels,
"lengths", "aliased"(, "kernel_expected", "kernel_atol", "kernel_flip_atol", "kernel_share": the prefill
kernel's arithmetic)}]}."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

# the interpreter tests' KV cases live in tests/kernels (not a package): reachable from here too
_KERNEL_TESTS = str(Path(__file__).resolve().parents[1] / "kernels")
if _KERNEL_TESTS not in sys.path:
    sys.path.append(_KERNEL_TESTS)

from helpers import exported_attention  # noqa: E402
from kv_cases import cache, make_call, op_atol, quantizer, reference  # noqa: E402
from kv_rounding import ARITHMETIC_ATOL, FLIP_ATOL, FLIP_SHARE, kernel_rounded_prefill  # noqa: E402
from test_kernel_kv_decode import ATOL  # noqa: E402

from resq_export.decoder import rotate_keys_gpu  # noqa: E402
from resq_export.kernels.kv_launch import KVAttrs, kv_kernels, prefill_name  # noqa: E402

OP = "ResQKVCacheAttention"
FIELDS = ("num_heads", "num_kv_heads", "head_dim", "high_channels", "kv_bits", "high_bits")
TINY_ROTATED = "resq_lqer"  # an artifact of tests/conftest.py whose attention has U_C (tiny Qwen2-like: GQA 2:1)
PREFILL = 7  # new positions of the prefill step: not a multiple of any tile (BLOCK_M, BLOCK_T, 8 of the append)
DECODE_STEPS = 3


def _attrs(fields: dict) -> KVAttrs:
    return KVAttrs(*(fields[f] for f in FIELDS))


def _steps(a: KVAttrs, lengths: list[int], seqs: list[int], rotation: torch.Tensor | bool, seed: int,
           caches, unaliased: tuple[int, ...] = ()) -> list[dict]:
    """The steps of seqs new positions each, from `lengths`, the reference's caches carried along."""
    steps = []
    for i, seq in enumerate(seqs):
        call = make_call(a, lengths, seq, seed=seed + i, rotation=rotation is not False)
        if isinstance(rotation, torch.Tensor):
            call = dataclasses.replace(call, key_rotation=rotation)  # the exported U_C, not a random one
        k_ref, v_ref, y_ref = reference(call, *caches)
        inputs = [call.q, call.k, call.v, call.past_length]
        inputs += [] if call.key_rotation is None else [call.key_rotation]
        steps.append({"inputs": [t.contiguous() for t in inputs], "expected": y_ref.float().contiguous(),
                      "expected_cache": [t.contiguous() for t in k_ref + v_ref],
                      "atol": op_atol(call, k_ref, v_ref, ATOL[torch.float32]), "lengths": list(lengths),
                      "policy": kv_kernels(a, seq, call.key_rotation is not None), "aliased": i not in unaliased})
        if prefill_name(a, seq) is not None:
            steps[-1].update(_kernel_arithmetic(a, call, k_ref, v_ref, lengths))
        caches = (k_ref, v_ref)
        lengths = [n + seq for n in lengths]
    return steps


def _kernel_arithmetic(a: KVAttrs, call, k_ref, v_ref, lengths: list[int]) -> dict:
    """The prefill kernel's Y by its arithmetic in torch (kv_rounding) on the caches after the append,
    and kv_rounding's tolerances in units of max|V| (the dequantised rows it reads)."""
    q = call.q if call.key_rotation is None else rotate_keys_gpu(call.q, call.key_rotation)
    quant, seq = quantizer(a), call.q.shape[2]
    ys, vmax = [], 0.0
    for b, past in enumerate(lengths):
        y = kernel_rounded_prefill(q[b:b + 1], [t[b:b + 1] for t in k_ref], [t[b:b + 1] for t in v_ref], quant, past)
        ys.append(y.transpose(1, 2).reshape(1, seq, a.num_heads * a.head_dim))
        vmax = max(vmax, quant.dequantize(*(t[b, :, :past + seq] for t in v_ref)).abs().max().item())
    return {"kernel_expected": torch.cat(ys).contiguous(), "kernel_atol": ARITHMETIC_ATOL * vmax,
            "kernel_flip_atol": FLIP_ATOL * vmax, "kernel_share": FLIP_SHARE}


def _case(label: str, fields: dict, lengths: list[int], capacity: int, seqs: list[int], rotation, seed: int,
          unaliased: tuple[int, ...] = ()) -> dict:
    a = _attrs(fields)
    caches = (cache(a, len(lengths), capacity, seed), cache(a, len(lengths), capacity, seed + 1))
    return {"case": label, "op": OP, "fields": dict(fields), "cache": [t.contiguous() for kv in caches for t in kv],
            "steps": _steps(a, lengths, seqs, rotation, seed + 2, caches, unaliased)}


def kv_cases(artifacts: dict[str, Path]) -> list[dict]:
    """A tiny model's layer-0 attention as its TensorRT flavour was exported (attributes and U_C), with
    and without U_C, and layouts it lacks: a prefill then DECODE_STEPS decode steps each."""
    node = exported_attention(artifacts[TINY_ROTATED])
    assert node.key_rotation is not None, f"{TINY_ROTATED}'s attention has no U_C"
    fields = {f: node.attrs[f] for f in FIELDS}
    run = [PREFILL] + [1] * DECODE_STEPS
    return [
        # sequences of different lengths, one starting empty (past_length 0); eleven inputs, the exported U_C;
        # the last decode step with present a buffer of its own (the copy a runtime without aliasing needs)
        _case(f"{TINY_ROTATED}{node.name.removeprefix('/model/layers.0')} with U_C", fields, [0, 3], 40, run,
              node.key_rotation, seed=1, unaliased=(DECODE_STEPS,)),
        # the same node as ten inputs (no U_C); three sequences, the first filled to the capacity by the last
        # decode step (past_length = capacity - S), lengths not multiples of any tile
        _case(f"{TINY_ROTATED} attention without U_C", fields, [19, 0, 5], 19 + PREFILL + DECODE_STEPS, run, False,
              seed=11),
        # a prefill that fills the cache (past_length = capacity - S) beside an empty sequence
        _case(f"{TINY_ROTATED} prefill to the capacity", fields, [22, 0], 22 + PREFILL, [PREFILL], node.key_rotation,
              seed=21),
        # GQA 4:1 with a 4-bit high part (no prefill configuration: flash-decoding serves S > 1 too), random U_C
        _case("random gqa4 d32 r4 b44", dict(num_heads=8, num_kv_heads=2, head_dim=32, high_channels=4, kv_bits=4,
                                             high_bits=4), [5, 17], 33, [5] + [1] * DECODE_STEPS, True, seed=31),
    ]
