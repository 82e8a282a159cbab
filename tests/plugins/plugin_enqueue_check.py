"""Run by test_plugin_enqueue.py in a process started with TRITON_INTERPRET=1: the real enqueue of
ResQMixedLinearPrepared and ResQHadamard (libresq_plugins.so, created through their creators with
the fields an export gives, configured with the tensors' descriptions) on host buffers, with
libresq_triton.so's recording launcher installed; the recorded launches are then executed by the
interpreter and the outputs compared with the reference executor. argv: the native folder, the
harness library. Prints one JSON line per case."""

import ctypes
import json
import sys
from pathlib import Path

import torch

from resq_export.algo.hadamard import hadamard_left_factor
from resq_export.export.spec import op_spec
from resq_export.kernels.configs import all_configs
from resq_export.kernels.launch import DECODE_MAX_M, SPLIT_MAX_M, Prepared, hadamard_kernels, linear_kernels
from resq_export.native import triton as T
from resq_export.native.replay import replay
from resq_export.reference import hadamard_gpu_reference

from helpers import activations, layout, random_linear  # noqa: E402  (tests/plugins on the path)

native, harness_path = Path(sys.argv[1]), Path(sys.argv[2])
triton_lib = native / "libresq_triton.so"
ctypes.CDLL(str(triton_lib), mode=ctypes.RTLD_GLOBAL)  # the instance the plugins' launcher lives in
harness = ctypes.CDLL(str(harness_path))
DTYPES = {torch.float32: 0, torch.int8: 2, torch.int32: 3, torch.uint8: 5}  # nvinfer1::DataType
CONFIGS = all_configs()


def enqueue(name, fields: dict, inputs: list[torch.Tensor], outputs: list[torch.Tensor]):
    """Returns the recorded launches and the workspace; raises with the harness's message."""
    names = (ctypes.c_char_p * len(fields))(*(k.encode() for k in fields))
    values = (ctypes.c_int32 * len(fields))(*fields.values())

    def desc(ts):
        nb = (ctypes.c_int * len(ts))(*(t.dim() for t in ts))
        dims = (ctypes.c_int64 * (8 * len(ts)))(*[d for t in ts for d in (list(t.shape) + [0] * (8 - t.dim()))])
        types = (ctypes.c_int * len(ts))(*(DTYPES[t.dtype] for t in ts))
        return nb, dims, types

    ins, outs = desc(inputs), desc(outputs)
    in_ptrs = (ctypes.c_void_p * len(inputs))(*(t.data_ptr() for t in inputs))
    out_ptrs = (ctypes.c_void_p * len(outputs))(*(t.data_ptr() for t in outputs))
    needed, err = ctypes.c_size_t(0), ctypes.create_string_buffer(512)

    def call(ws):
        ptr, size = (None, 0) if ws is None else (ws.data_ptr(), ws.numel())
        return harness.harness_enqueue(name.encode(), len(fields), names, values, len(inputs), *ins, len(outputs),
                                       *outs, in_ptrs, out_ptrs, ctypes.c_void_p(ptr), ctypes.c_size_t(size),
                                       ctypes.byref(needed), err, ctypes.c_size_t(len(err)))

    step = call(None)  # sizes only
    if step not in (0, 5):
        raise RuntimeError(err.value.decode())
    ws = torch.zeros(max(needed.value, 1), dtype=torch.uint8)
    with T.recording(8, 9, path=triton_lib) as records:
        step = call(ws)
    if step:
        raise RuntimeError(err.value.decode())
    return records, ws


def linear_case(label, lin, m):
    parts = lin.layout.op_parts()
    prep = Prepared.from_linear(lin)
    rank = 0 if prep.lqer is None else prep.lqer[0].shape[0]
    fields = {"k_low": parts.k_low, "low_groups": parts.low_groups, "high_groups": parts.high_groups,
              "a_bits_low": parts.a_bits_low, "a_bits_high": parts.a_bits_high, "lqer_rank": rank}
    x = activations(m, lin.in_features, seed=m).reshape(1, m, -1).contiguous()
    by_name = {"X": x, "weight_low": prep.w_low, "weight_high": prep.w_high, "wscale": prep.wscale,
               "weight_sums": prep.wsum, "bias": prep.bias}
    if rank:
        by_name.update(zip(("lqer_a", "lqer_a_sums", "lqer_a_scale", "lqer_b", "lqer_b_scale"), prep.lqer))
    present = {"weight_low": parts.low_groups > 0, "weight_high": parts.high_groups > 0}
    names = [i["name"] for i in op_spec("ResQMixedLinearPrepared")["inputs"]
             if present.get(i["name"], True) and (i["name"] in by_name)]
    inputs = [by_name[n].contiguous() for n in names]
    y = torch.full((1, m, prep.n), float("nan"))
    records, ws = enqueue("ResQMixedLinearPrepared", fields, inputs, [y])
    replay(records, CONFIGS, [*inputs, y, ws])
    expected = lin.gpu_reference(x.reshape(m, -1)).reshape(1, m, -1)
    return {"case": label, "m": m, "launches": [r.name for r in records], "policy": linear_kernels(parts, m, rank),
            "differ": int((y != expected).sum()), "outputs": y.numel()}


def hadamard_case(n, rows):
    left, _ = hadamard_left_factor(n)
    left = left.float().contiguous()
    x = torch.randn(1, rows, n, generator=torch.Generator().manual_seed(n))
    y = torch.full_like(x, float("nan"))
    records, ws = enqueue("ResQHadamard", {}, [x, left], [y])
    replay(records, CONFIGS, [x, left, y, ws])
    expected = hadamard_gpu_reference(x.reshape(rows, n), left).reshape(1, rows, n)
    return {"case": f"hadamard_{n}", "m": rows, "launches": [r.name for r in records],
            "policy": hadamard_kernels(n, left.shape[0]), "differ": int((y != expected).sum()), "outputs": y.numel()}


LINEARS = [  # (label, layout, N, LQER rank, bias): the ResQ layouts the exporter writes
    ("qkv_g72_bias_lqer", layout([(7, 72, 4, 4), (1, 72, 8, 8)]), 64, 4, True),  # SmolLM2 qkv: 9 + 3 + 3 heads
    ("o_heads", layout([(4, 14, 4, 4), (4, 2, 8, 8)]), 24, 0, False),  # per-head o_proj groups
    ("down_g64_runs", layout([(19, 64, 4, 4)]), 40, 0, False),  # QuaRot-like all 4-bit, 3 runs
    ("w8a8", layout([(3, 64, 8, 8)]), 32, 0, True),  # no 4-bit part
]
if __name__ == "__main__":  # kv_enqueue_check.py imports enqueue from here
    for label, lay, n, rank, bias in LINEARS:
        lin = random_linear(lay, n, rank=rank, bias=bias, seed=5)
        for m in (1, SPLIT_MAX_M + 3, DECODE_MAX_M + 3):  # the split decode, small and prefill tiles
            print(json.dumps(linear_case(label, lin, m)), flush=True)
    for n, rows in ((96, 3), (1536, 2)):
        print(json.dumps(hadamard_case(n, rows)), flush=True)
