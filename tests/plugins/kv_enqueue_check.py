"""Run by test_kv_enqueue.py in a process started with TRITON_INTERPRET=1: the real enqueue of
ResQKVCacheAttention (libresq_plugins.so, created through its creator with the tiny models' fields,
configured with the tensors' descriptions) on host buffers, the present outputs aliased to the past
inputs (one buffer each, as TensorRT binds them), with libresq_triton.so's recording launcher
installed; the recorded launches (U_C, append, then the prefill kernel for S > 1 or flash-decoding and
its combine) are executed by the interpreter. A prefill then decode steps through the same cache, each
against the reference executor: the cache bit for bit, Y within the interpreter tests' tolerance of
the path taken (kv_cases.op_atol). argv: the native folder, the
harness library. Prints one JSON line per step."""

import json
import sys
from pathlib import Path

import torch
from kv_cases import cache, make_call, op_atol, reference
from plugin_enqueue_op import OpLibrary
from test_kernel_kv_decode import ATOL

from resq_export.kernels.configs import all_configs
from resq_export.kernels.kv_launch import KVAttrs, kv_kernels
from resq_export.native import triton as T
from resq_export.native.replay import replay

native, harness_path = Path(sys.argv[1]), Path(sys.argv[2])
LIB = OpLibrary(native / "libresq_triton.so", harness_path)
CONFIGS = all_configs()


def enqueue(op: str, fields: dict, inputs: list, outputs: list):
    """The recorded launches of one enqueue and its workspace."""
    ws = torch.zeros(max(LIB.check(op, fields, inputs, outputs), 1), dtype=torch.uint8)
    with T.recording(8, 9, path=native / "libresq_triton.so") as records:
        LIB.enqueue(op, fields, inputs, outputs, ws)
    return records, ws


TINY = KVAttrs(4, 2, 16, 2)  # the tiny models' attention (tests/tiny_models.py): GQA 2:1, head_dim 16, r 2
CAPACITY = 40


def step(label, a: KVAttrs, caches, lengths: list[int], seq: int, rotation: bool, seed: int) -> dict:
    call = make_call(a, lengths, seq, seed=seed, rotation=rotation)
    k_ref, v_ref, y_ref = reference(call, *caches)
    past = [t for kv in caches for t in kv]  # key codes, scales, zeros, value codes, scales, zeros
    inputs = [t.contiguous() for t in [call.q, call.k, call.v]] + past + [call.past_length]
    inputs += [call.key_rotation.contiguous()] if rotation else []  # (qr's Q is column-major)
    y = torch.full((len(lengths), seq, a.num_heads * a.head_dim), float("nan"))
    fields = {"num_heads": a.num_heads, "num_kv_heads": a.num_kv_heads, "head_dim": a.head_dim,
              "high_channels": a.high_channels, "kv_bits": a.kv_bits, "high_bits": a.high_bits}
    records, ws = enqueue("ResQKVCacheAttention", fields, inputs, [y, *past])
    replay(records, CONFIGS, [*inputs, y, ws])
    differ = sum(int((got != want).sum()) for got, want in zip(past, k_ref + v_ref))
    return {"case": label, "seq": seq, "lengths": lengths, "launches": [r.name for r in records],
            "policy": kv_kernels(a, seq, rotation), "cache_differ": differ,
            "y_err": float((y - y_ref).abs().max()), "atol": op_atol(call, k_ref, v_ref, ATOL[torch.float32])}


for rotation in (True, False):  # eleven inputs (U_C last) and ten
    caches = (cache(TINY, 2, CAPACITY, 1), cache(TINY, 2, CAPACITY, 2))
    lengths = [0, 3]  # sequences of different lengths in one batch
    label = "tiny_uc" if rotation else "tiny_no_uc"
    print(json.dumps(step(label, TINY, caches, lengths, 7, rotation, seed=1)), flush=True)  # prefill
    lengths = [n + 7 for n in lengths]
    for i in range(3):  # decode steps through the same (aliased) cache
        print(json.dumps(step(label, TINY, caches, lengths, 1, rotation, seed=2 + i)), flush=True)
        lengths = [n + 1 for n in lengths]
