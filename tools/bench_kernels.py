"""GPU benchmark of the resq kernels against FP16 cuBLAS (torch.matmul) and FP16 attention
(torch SDPA) at Llama-3-8B layer shapes. One command on a GPU machine:

    cmake -S . -B build -DRESQ_CUDA_ARCHS=90a && cmake --build build -j16 --target resq_kernels
    python tools/bench_kernels.py --out docs/benchmarks-gpu-run.md

Times are CUDA-event medians of CUDA-graph replays after warm-up, each side rotating through input
sets that together are several times the L2 cache (so device memory is measured, not the cache);
every row runs both sides back to back in one process.
Correctness is checked (against the package's reference executor) by tests/plugins/test_gpu_kernels.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resq_export.config import QuantConfig
from resq_export.layout import role_layouts
from resq_export.models.config import ModelConfig
from resq_export.native import cuda as K
from resq_export.native.params import KVShape, LinearShape

# Llama-3-8B's linears in the default ResQ layouts (docs/ops.md): qkv/up-like rows keep the last 1/8
# of channels at 8 bits, in groups of 128 (--group-size auto); down_proj's input is 4-bit, in groups of 64.
LLAMA3_8B = ModelConfig("llama", 128256, 4096, 32, 32, 8, 128, 14336, 1e-5, 500000.0)
_LAYOUTS = role_layouts(LLAMA3_8B, QuantConfig.for_method("resq"))
GEMMS = [("4096x4096", 4096, _LAYOUTS["attn_qkv"].op_parts()), ("4096x14336", 14336, _LAYOUTS["mlp_gate_up"].op_parts()),
         ("14336x4096", 4096, _LAYOUTS["mlp_down"].op_parts())]  # (name, N, the op's K parts)
MS = [1, 16, 128, 2048]
CONTEXTS = [1024, 4096, 16384]


def input_sets(bytes_per_set: int) -> int:
    """How many input sets to rotate through so that one pass reads about 4x the L2 cache (H100: 50
    MB): repeated calls on one set would measure the cache, not device memory."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(2, min(64, math.ceil(4 * l2 / max(bytes_per_set, 1))))


def timed(calls: list, warmup: int, reps: int) -> tuple[float, str]:
    """Median milliseconds per call of running `calls` in turn (one input set each), from replays of
    a CUDA graph that holds them all (no launch gaps: ctypes and torch dispatch cost different
    host time); eagerly, with events around the whole pass, where capture fails."""
    def run_all():
        for call in calls:
            call()

    for _ in range(warmup):
        run_all()
    torch.cuda.synchronize()
    mode = "graph"
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run_all()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run_all()
        run = graph.replay
        run()
    except Exception as e:  # noqa: BLE001 - report and fall back
        torch.cuda.synchronize()
        mode = f"eager ({type(e).__name__})"
        run = run_all
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    return statistics.median(times), mode


def copy_bandwidth(warmup: int, reps: int) -> float:
    """Device memory ceiling: GB/s of a 1 GiB device-to-device copy, bytes read plus written."""
    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = timed([partial(dst.copy_, src)], warmup, reps)
    return 2 * src.numel() * 4 / ms / 1e6


def gemm_rows(warmup: int, reps: int) -> list[dict]:
    rows = []
    for name, n, parts in GEMMS:
        k, k_low, groups = parts.k, parts.k_low, parts.low_groups + parts.high_groups
        high = k - k_low
        shape = LinearShape(k, k_low, parts.low_groups, parts.high_groups, parts.a_bits_low, parts.a_bits_high)
        # what the decode GEMM must read: packed 4-bit + 8-bit weights and a float32 scale per group
        w_bytes = n * (k_low // 2 + high + 4 * groups)
        sets = input_sets(w_bytes)
        ours = []
        for _ in range(sets):
            w_low = torch.randint(-128, 128, (n, k_low // 2), dtype=torch.int8, device="cuda")
            w_high = torch.randint(-128, 128, (n, high), dtype=torch.int8, device="cuda") if high else None
            ours.append((K.prepare_weights(shape, w_low, w_high, n), torch.rand(n, groups, device="cuda") * 0.01))
        fp16_sets = input_sets(2 * k * n)
        w16 = [torch.randn(k, n, dtype=torch.float16, device="cuda") for _ in range(fp16_sets)]
        for m in MS:
            x16 = torch.randn(m, k, dtype=torch.float16, device="cuda")
            act = K.quantize_act(shape, x16)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            out16 = torch.empty(m, n, dtype=torch.float16, device="cuda")
            ws = K.mixed_linear_workspace(shape, m, 0)
            t_fp16, mode16 = timed([partial(torch.matmul, x16, w, out=out16) for w in w16], warmup, reps)
            t_gemm, mode = timed([partial(K.mixed_gemm, shape, act, w, sc, out=out) for w, sc in ours], warmup, reps)
            t_full, _ = timed([partial(K.mixed_linear, shape, x16, w, sc, workspace=ws, out=out) for w, sc in ours],
                              warmup, reps)
            rows.append({"kind": "gemm", "shape": name, "m": m, "fp16_ms": t_fp16, "resq_gemm_ms": t_gemm,
                         "resq_linear_ms": t_full, "speedup_gemm": t_fp16 / t_gemm, "speedup_linear": t_fp16 / t_full,
                         "fp16_weight_gbps": 2 * k * n / t_fp16 / 1e6, "resq_weight_gbps": w_bytes / t_gemm / 1e6,
                         "sets": [fp16_sets, sets], "timing": [mode16, mode]})
            print(rows[-1], flush=True)
        del ours, w16
    return rows


def attention_rows(warmup: int, reps: int) -> list[dict]:
    rows = []
    b, h, hkv, d, r = 1, 32, 8, 128, 16  # Llama-3-8B
    shape = KVShape(b, h, hkv, d, r, 4, 8)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for ctx in CONTEXTS:
        fp16_sets = input_sets(2 * b * hkv * ctx * d * 2)  # K and V
        # per token and head: d code bytes, then per group a float32 scale and a uint8 zero point
        sets = input_sets(2 * b * hkv * ctx * (d + 5 * (2 if r else 1)))
        caches = []
        for _ in range(sets):
            kc, vc = K.kv_cache(shape, ctx), K.kv_cache(shape, ctx)
            K.kv_append(shape, torch.randn(b, hkv, ctx, d, device="cuda"), kc, 0)
            K.kv_append(shape, torch.randn(b, hkv, ctx, d, device="cuda"), vc, 0)
            caches.append((kc, vc))
        fp16 = [(torch.randn(b, hkv, ctx, d, dtype=torch.float16, device="cuda"),
                 torch.randn(b, hkv, ctx, d, dtype=torch.float16, device="cuda")) for _ in range(fp16_sets)]
        q = torch.randn(b, h, 1, d, device="cuda")
        q16 = q.half()
        ws = K.kv_attention_workspace(shape, 1)
        out = torch.empty(b, 1, h * d, device="cuda")
        last = torch.full((b,), ctx - 1, dtype=torch.int32, device="cuda")  # the new token's row, on the device
        t_fp16, mode16 = timed([partial(sdpa, q16, k16, v16, enable_gqa=True) for k16, v16 in fp16], warmup, reps)
        t_resq, mode = timed([partial(K.kv_attention, shape, q, kc, vc, last, workspace=ws, out=out)
                              for kc, vc in caches], warmup, reps)
        new = torch.randn(b, hkv, 1, d, device="cuda")
        t_append, _ = timed([partial(K.kv_append, shape, new, kc, last) for kc, _ in caches], warmup, reps)
        rows.append({"kind": "decode_attention", "context": ctx, "fp16_sdpa_ms": t_fp16, "resq_ms": t_resq,
                     "resq_append_ms": t_append, "speedup": t_fp16 / t_resq, "sets": [fp16_sets, sets],
                     "timing": [mode16, mode]})
        print(rows[-1], flush=True)
        del caches, fp16
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"device {meta['device']} (sm_{meta['sm']}), {meta['date']}, torch {meta['torch']}, CUDA {meta['cuda']}",
           f"command: `{meta['command']}`",
           f"device-to-device copy: {meta['copy_gbps']:.0f} GB/s (read + written); every row: median of "
           f"{meta['reps']} replays of a CUDA graph over enough input sets to read ~4x the L2 cache "
           "(timing column: 'graph', or eager where capture failed)", "",
           "| GEMM K x N | M | FP16 cuBLAS ms | resq GEMM ms | x | resq quant+GEMM ms | x "
           "| weights GB/s FP16 / resq | timing |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "gemm":
            out.append(f"| {r['shape']} | {r['m']} | {r['fp16_ms']:.4f} | {r['resq_gemm_ms']:.4f} | "
                       f"{r['speedup_gemm']:.2f} | {r['resq_linear_ms']:.4f} | {r['speedup_linear']:.2f} | "
                       f"{r['fp16_weight_gbps']:.0f} / {r['resq_weight_gbps']:.0f} | {' / '.join(r['timing'])} |")
    out += ["", "| decode attention, context | FP16 SDPA ms | resq 4+8-bit ms | x | append ms | timing |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "decode_attention":
            out.append(f"| {r['context']} | {r['fp16_sdpa_ms']:.4f} | {r['resq_ms']:.4f} | {r['speedup']:.2f} | "
                       f"{r['resq_append_ms']:.4f} | {' / '.join(r['timing'])} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write a markdown table here (and .json beside it)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--reps", type=int, default=100)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True  # cuBLAS at its fastest
    meta = {"device": torch.cuda.get_device_name(), "sm": K.device_sm(), "date": datetime.date.today().isoformat(),
                "torch": torch.__version__, "cuda": torch.version.cuda, "command": "python " + " ".join(sys.argv)}
    meta["copy_gbps"], meta["reps"] = copy_bandwidth(args.warmup, args.reps), args.reps
    print(f"device-to-device copy {meta['copy_gbps']:.0f} GB/s", flush=True)
    rows = gemm_rows(args.warmup, args.reps) + attention_rows(args.warmup, args.reps)
    text = markdown(rows, meta)
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
