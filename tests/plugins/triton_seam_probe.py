"""Run by test_triton_aot.py in a process started with TRITON_INTERPRET=1: launches the probe GEMM
through libresq_triton.so's seam (argv[1]) with the recording launcher, replays the records with the
interpreter on the host buffers, and compares with torch. Prints one JSON line."""

import json
import struct
import sys
from pathlib import Path

import torch

import triton_probe_kernel as probe
from resq_export.native import replay, triton

lib = Path(sys.argv[1])
torch.manual_seed(0)
m, n, k = 37, 96, 128
a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
b = torch.randint(-128, 128, (n, k), dtype=torch.int8)
c = torch.full((m, n), -1, dtype=torch.int32)
ptr = lambda t: struct.pack("<Q", t.data_ptr())  # noqa: E731
i32 = lambda v: struct.pack("<i", v)  # noqa: E731
with triton.recording(9, 0, path=lib) as records:
    triton.launch("probe_gemm_m64", (1, 1, 1), [ptr(a), ptr(b), ptr(c), i32(m), i32(n), i32(k)], path=lib)
    triton.launch("probe_gemm_m16", ((m + 15) // 16, (n + 63) // 64, 1), [ptr(a), ptr(b), ptr(c), i32(m), i32(n), i32(k)],
                  path=lib)
assert c.eq(-1).all(), "the recording launcher ran something"
replay.replay(records[1:], probe.configs(), [a, b, c])
exact = bool(torch.equal(c, a.int() @ b.int().T))
print(json.dumps({"records": [[r.name, list(r.grid), r.args.hex()] for r in records], "exact": exact}))
