"""GPU benchmark of the resq kernels against FP16 cuBLAS (torch.matmul) and FP16 attention (torch
SDPA) at Llama-3-8B layer shapes: the Triton cubins of the mixed linear (libresq_triton.so, loaded by
our loader and launched through our launch seam's CUDA launcher, as the plugins and
tools/triton_gpu_check.py run them) and of the KV attention's flash-decoding, tensor-core prefill and
append (kv_launch.py, the same seam). One command on a GPU machine (tools/gpu_session.sh runs it):

    python tools/bench_kernels.py --lib build/plugins/libresq_triton.so --out out/benchmarks-gpu.md

Times are CUDA-event medians of CUDA-graph replays after warm-up, each side rotating through input
sets (weight copies) that together are several times the L2 cache (so device memory is measured, not
the cache); every row runs both sides back to back in one process. Per GEMM row: quantiser + GEMM
(the whole op, float16 x in and y out) and the GEMM alone (on codes quantised beforehand).
Correctness is checked (against the package's reference executor) by tests/plugins/test_gpu_kernels.py
and tools/triton_gpu_check.py.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resq_export.config import QuantConfig  # noqa: E402
from resq_export.layout import role_layouts  # noqa: E402
from resq_export.models.config import ModelConfig  # noqa: E402

# Llama-3-8B's linears in the default ResQ layouts (docs/ops.md): qkv/up-like rows keep the last 1/8
# of channels at 8 bits, in groups of 128 (--group-size auto); down_proj's input is 4-bit, in groups of 64.
LLAMA3_8B = ModelConfig("llama", 128256, 4096, 32, 32, 8, 128, 14336, 1e-5, 500000.0)
_LAYOUTS = role_layouts(LLAMA3_8B, QuantConfig.for_method("resq"))
GEMMS = [("4096x4096", 4096, _LAYOUTS["attn_qkv"].op_parts()), ("4096x14336", 14336, _LAYOUTS["mlp_gate_up"].op_parts()),
         ("14336x4096", 4096, _LAYOUTS["mlp_down"].op_parts())]  # (name K x N, N, the op's K parts)
MS = [1, 16, 128, 2048]
CONTEXTS = [4096, 16384, 32768]
BATCHES = [1, 16]
PREFILLS = [2048, 8192]  # new positions of a whole-prompt prefill (batch 1, past_length 0)
KV_HEADS = (32, 8, 128, 16)  # Llama-3-8B: query heads, KV heads, head_dim, high channels (ResQ's 1/8)


def kv_bytes(batch: int, context: int) -> tuple[int, int]:
    """(resq, FP16) bytes of K and V one decode step reads: a cached row is C code bytes plus a float32
    scale and a uint8 zero point per group (ops.json); FP16 two bytes per value."""
    from resq_export.kernels.kv_launch import KVAttrs

    h, hkv, d, r = KV_HEADS
    a = KVAttrs(h, hkv, d, r)
    rows = 2 * batch * hkv * context
    return rows * (a.row_bytes + 5 * a.groups), rows * d * 2


def input_sets(bytes_per_set: int, l2_bytes: int) -> int:
    """How many input sets to rotate through so that one pass reads about 4x the L2 cache (H100: 50
    MB): repeated calls on one set would measure the cache, not device memory."""
    return max(2, min(64, math.ceil(4 * l2_bytes / max(bytes_per_set, 1))))


def _l2() -> int:
    import torch

    return torch.cuda.get_device_properties(0).L2_cache_size


def timed(calls: list, warmup: int, reps: int) -> tuple[float, str]:
    """Median milliseconds per call of running `calls` in turn (one input set each), from replays of
    a CUDA graph that holds them all (no launch gaps: ctypes and torch dispatch cost different
    host time); eagerly, with events around the whole pass, where capture fails."""
    import torch

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
    import torch

    src = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = timed([partial(dst.copy_, src)], warmup, reps)
    return 2 * src.numel() * 4 / ms / 1e6


def weight_bytes(n: int, parts) -> int:
    """What the GEMM must read of one weight set: packed 4-bit + 8-bit codes, and per output and group
    a float32 scale and an int32 code sum."""
    groups = parts.low_groups + parts.high_groups
    return n * (parts.k_low // 2 + (parts.k - parts.k_low) + 8 * groups)


def gemm_row(name: str, m: int, k: int, n: int, parts, fp16_ms: float, gemm_ms: float, linear_ms: float,
             sets: list[int], timing: list[str]) -> dict:
    """One record row from the three medians (milliseconds per call)."""
    w_bytes = weight_bytes(n, parts)
    return {"kind": "gemm", "shape": name, "m": m, "fp16_ms": fp16_ms, "resq_gemm_ms": gemm_ms,
            "resq_linear_ms": linear_ms, "speedup_gemm": fp16_ms / gemm_ms, "speedup_linear": fp16_ms / linear_ms,
            "quant_overhead": linear_ms / gemm_ms - 1, "fp16_weight_gbps": 2 * k * n / fp16_ms / 1e6,
            "resq_weight_gbps": w_bytes / gemm_ms / 1e6, "sets": sets, "timing": timing}


def random_prepared(n: int, parts):
    """A weight set in the plugin's layout (launch.Prepared) with random codes and scales on the GPU:
    what the kernels read, at no cost of quantising a real matrix; no LQER."""
    import torch

    from resq_export.export.kernel_layout import PaddedLayout
    from resq_export.kernels.launch import Prepared

    pad = PaddedLayout(parts.k, parts.k_low, parts.low_groups, parts.high_groups)

    def codes(cols):
        return torch.randint(-128, 128, (n, max(cols, 1)), dtype=torch.int8, device="cuda")

    return Prepared(parts, pad, codes(pad.w_low_pitch), codes(pad.w_high_pitch),
                    torch.rand(n, pad.groups, device="cuda") * 0.01,
                    torch.randint(-5000, 5000, (n, pad.groups), dtype=torch.int32, device="cuda"),
                    torch.zeros(n, device="cuda"), None)


def gemm_only(act, prep, out_dtype):
    """The GEMM with its epilogue on codes quantised beforehand (launch.mixed_linear without step 1)."""
    from resq_export.kernels import launch

    return launch.grouped_gemm(act, prep.parts, prep.pad, prep.w_low, prep.w_high, prep.pad.w_low_pitch, 4,
                               prep.wscale, (prep.wscale.shape[1], 1), prep.wsum, prep.bias, prep.n, None, out_dtype)


def gemm_rows(warmup: int, reps: int, ms: list[int]) -> list[dict]:
    import torch

    from resq_export.kernels import launch

    rows = []
    l2 = _l2()
    for name, n, parts in GEMMS:
        k = parts.k
        sets = input_sets(weight_bytes(n, parts), l2)
        ours = [random_prepared(n, parts) for _ in range(sets)]
        fp16_sets = input_sets(2 * k * n, l2)
        w16 = [torch.randn(k, n, dtype=torch.float16, device="cuda") for _ in range(fp16_sets)]
        for m in ms:
            x16 = torch.randn(m, k, dtype=torch.float16, device="cuda")
            act = launch.quantize_act(x16, parts, ours[0].pad)
            out16 = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_fp16, mode16 = timed([partial(torch.matmul, x16, w, out=out16) for w in w16], warmup, reps)
            t_gemm, mode = timed([partial(gemm_only, act, p, torch.float16) for p in ours], warmup, reps)
            t_full, _ = timed([partial(launch.mixed_linear, x16, p, torch.float16) for p in ours], warmup, reps)
            rows.append(gemm_row(name, m, k, n, parts, t_fp16, t_gemm, t_full, [fp16_sets, sets], [mode16, mode]))
            print(rows[-1], flush=True)
        del ours, w16
    return rows


def attention_rows(warmup: int, reps: int) -> list[dict]:
    """Decode (one new token) at Llama-3-8B's heads: FP16 SDPA (enable_gqa) on a float16 K/V against
    our flash-decoding over the quantised cache (kv_launch.decode_attention, through the seam), with
    a float16 Q (as SDPA) and a float32 Q (the plugin's), and the append of the new token's K/V. The
    cache's values do not change the work: random codes, scales and zero points."""
    import torch

    from resq_export.kernels import kv_launch

    rows = []
    l2 = _l2()
    h, hkv, d, r = KV_HEADS
    a = kv_launch.KVAttrs(h, hkv, d, r)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for b in BATCHES:
        for ctx in CONTEXTS:
            resq_bytes, fp16_bytes = kv_bytes(b, ctx)
            fp16_sets, sets = input_sets(fp16_bytes, l2), input_sets(resq_bytes, l2)

            def cache():
                return (torch.randint(0, 256, (b, hkv, ctx, a.row_bytes), dtype=torch.uint8, device="cuda"),
                        torch.rand(b, hkv, ctx, a.groups, device="cuda") * 0.1 + 0.01,
                        torch.randint(0, 16, (b, hkv, ctx, a.groups), dtype=torch.uint8, device="cuda"))

            caches = [(cache(), cache()) for _ in range(sets)]
            fp16 = [(torch.randn(b, hkv, ctx, d, dtype=torch.float16, device="cuda"),
                     torch.randn(b, hkv, ctx, d, dtype=torch.float16, device="cuda")) for _ in range(fp16_sets)]
            q = torch.randn(b, h, 1, d, device="cuda")
            q16 = q.half()
            last = torch.full((b,), ctx - 1, dtype=torch.int32, device="cuda")  # the new token's row, on the device
            t_fp16, mode16 = timed([partial(sdpa, q16, k16, v16, enable_gqa=True) for k16, v16 in fp16], warmup, reps)
            t_resq, mode = timed([partial(kv_launch.decode_attention, a, q16, kc, vc, last) for kc, vc in caches],
                                 warmup, reps)
            t_resq32, _ = timed([partial(kv_launch.decode_attention, a, q, kc, vc, last) for kc, vc in caches],
                                warmup, reps)
            new_k, new_v = torch.randn(b, hkv, 1, d, device="cuda"), torch.randn(b, hkv, 1, d, device="cuda")
            t_append, _ = timed([partial(kv_launch.append, a, new_k, new_v, kc, vc, last) for kc, vc in caches],
                                warmup, reps)
            rows.append({"kind": "decode_attention", "batch": b, "context": ctx, "fp16_sdpa_ms": t_fp16,
                         "resq_ms": t_resq, "resq_f32q_ms": t_resq32, "resq_append_ms": t_append,
                         "speedup": t_fp16 / t_resq, "resq_gbps": resq_bytes / t_resq / 1e6,
                         "fp16_gbps": fp16_bytes / t_fp16 / 1e6, "sets": [fp16_sets, sets], "timing": [mode16, mode]})
            print(rows[-1], flush=True)
            del caches, fp16
    return rows


def prefill_bytes(seq: int) -> tuple[int, int]:
    """(resq, FP16) compulsory bytes of one prefill launch at Llama-3-8B heads, batch 1, past_length 0:
    ours reads q and writes y in float32 and reads the S cached rows of K and V (docs/benchmarks-gpu.md,
    "Limits of one prefill launch"); FP16 flash reads q, k, v and writes o in float16."""
    from resq_export.kernels.kv_launch import KVAttrs

    h, hkv, d, r = KV_HEADS
    a = KVAttrs(h, hkv, d, r)
    return 2 * h * seq * d * 4 + 2 * hkv * seq * (a.row_bytes + 5 * a.groups), 2 * (h + hkv) * seq * d * 2


# Peaks of docs/benchmarks-gpu.md ("The Triton kernels at the hardware's limits"): bytes/s, FP16 tensor-core
# FLOP/s (FP32 accumulation), FP32 non-FMA operations/s, exp2/s (SMs x 16 SFU lanes x clock)
PEAKS = {"H100 SXM": (3.35e12, 989e12, 33.5e12, 4.18e12), "H200 SXM": (4.8e12, 989e12, 33.5e12, 4.18e12),
         "RTX 4090": (1008e9, 165.2e12, 41.3e12, 5.16e12)}
# CUDA-core operations per computed score: ours (2 scale products and their sum, max, subtract, sum, 2 ratio
# products, 2 conversions: 10; the unpack of K and V, 3 per channel x 2 x 144 channels per key shared by the
# tile's 128 rows: 6.75; the rescale of 144 accumulator columns once per 16-key tile: 9), FP16 flash's
_OPS_PER_SCORE = {"resq": 25.75, "fp16": 7.0}


def prefill_work(seq: int) -> dict:
    """The counts of one prefill launch at Llama-3-8B heads, batch 1, past_length 0, S = seq (docs/
    benchmarks-gpu.md, "Limits of one prefill launch"): bytes (prefill_bytes), the (query head, key) pairs
    each computes (ours: every key tile up to its query tile's end, tiles of BLOCK_M rows = BLOCK_M / group
    positions; FP16 flash: the causal triangle), MMA FLOPs (4 x the MMA channels per pair: D_PAD + H_PAD
    for ours, D for FP16), CUDA-core operations and exp2 (one per computed score)."""
    from resq_export.kernels import kv_prefill
    from resq_export.kernels.kv_launch import KVAttrs

    h, hkv, d, r = KV_HEADS
    a = KVAttrs(h, hkv, d, r)
    dp = kv_prefill.d_pad(d)
    block_m = kv_prefill.PREFILL_TILES[dp][0]["BLOCK_M"]
    positions = block_m // a.group  # per query tile
    tiles = -(-seq // positions)
    ours_pairs = hkv * block_m * sum(min(positions * (m + 1), seq) for m in range(tiles))
    fp16_pairs = h * seq * (seq + 1) // 2
    resq_bytes, fp16_bytes = prefill_bytes(seq)
    return {"seq": seq, "resq_bytes": resq_bytes, "fp16_bytes": fp16_bytes, "resq_pairs": ours_pairs,
            "fp16_pairs": fp16_pairs, "resq_flop": 4 * (dp + kv_prefill.h_pad(r, dp)) * ours_pairs,
            "fp16_flop": 4 * d * fp16_pairs, "resq_ops": _OPS_PER_SCORE["resq"] * ours_pairs,
            "fp16_ops": _OPS_PER_SCORE["fp16"] * fp16_pairs, "resq_exp2": ours_pairs, "fp16_exp2": fp16_pairs}


def prefill_limits_markdown() -> str:
    """The two tables of docs/benchmarks-gpu.md's "Limits of one prefill launch" from prefill_work and
    PEAKS (microseconds; a limit is the largest of memory, MMA, and CUDA-core + exp2 time, which are
    not assumed to overlap)."""
    works = [prefill_work(s) for s in PREFILLS]
    out = ["| S | ours bytes | FP16 bytes | ours MMA FLOP | FP16 MMA FLOP | ours CUDA-core ops | FP16 ops | exp2 |",
           "|---|---|---|---|---|---|---|---|"]
    for w in works:
        out.append(f"| {w['seq']} | {w['resq_bytes'] / 1e6:.1f} MB | {w['fp16_bytes'] / 1e6:.1f} MB | "
                   f"{w['resq_flop'] / 1e9:.1f} G | {w['fp16_flop'] / 1e9:.1f} G | {w['resq_ops'] / 1e9:.2f} G | "
                   f"{w['fp16_ops'] / 1e9:.2f} G | {w['resq_exp2'] / 1e9:.3f} G |")
    out += ["", "| GPU | S | mem | MMA | ALU | exp2 | **ours** | FP16 mem | FP16 MMA | FP16 ALU+exp2 | **FP16 flash** "
            "| ours / FP16 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in works:
        for gpu, (bw, mma, alu, sfu) in PEAKS.items():
            mem, flop, ops, ex = (w["resq_bytes"] / bw * 1e6, w["resq_flop"] / mma * 1e6, w["resq_ops"] / alu * 1e6,
                                  w["resq_exp2"] / sfu * 1e6)
            fmem, fflop, fops = (w["fp16_bytes"] / bw * 1e6, w["fp16_flop"] / mma * 1e6,
                                 (w["fp16_ops"] / alu + w["fp16_exp2"] / sfu) * 1e6)
            ours, fp16 = max(mem, flop, ops + ex), max(fmem, fflop, fops)
            out.append(f"| {gpu} | {w['seq']} | {mem:.0f} | {flop:.0f} | {ops:.0f} | {ex:.0f} | **{ours:.0f}** | "
                       f"{fmem:.0f} | {fflop:.0f} | {fops:.0f} | **{fp16:.0f}** | {ours / fp16:.2f} |")
    return "\n".join(out) + "\n"


def _flash_sdpa(q16, k16, v16):
    """FP16 causal SDPA on the flash backend, GQA by enable_gqa where that backend takes it, else the
    K/V heads repeated (the row says which)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    group = q16.shape[1] // k16.shape[1]
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            sdpa(q16, k16, v16, is_causal=True, enable_gqa=True)
            return partial(_in_flash, sdpa, q16, k16, v16, True), "flash, enable_gqa"
        except RuntimeError:
            k16, v16 = k16.repeat_interleave(group, 1), v16.repeat_interleave(group, 1)
            sdpa(q16, k16, v16, is_causal=True)
            return partial(_in_flash, sdpa, q16, k16, v16, False), "flash, K/V heads repeated"


def _in_flash(sdpa, q, k, v, gqa):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return sdpa(q, k, v, is_causal=True, enable_gqa=gqa)


def prefill_rows(warmup: int, reps: int) -> list[dict]:
    """Prefill (S new tokens, batch 1, past_length 0) at Llama-3-8B's heads: FP16 SDPA on the flash
    backend (causal) on float16 q, k, v against our tensor-core prefill over the quantised cache
    (kv_launch.prefill_attention through the seam, the cache already holding the S rows as after the
    append) with a float16 q (as SDPA) and a float32 q (the plugin's), and the append of the S rows."""
    import torch

    from resq_export.kernels import kv_launch

    rows = []
    l2 = _l2()
    h, hkv, d, r = KV_HEADS
    a = kv_launch.KVAttrs(h, hkv, d, r)
    for seq in PREFILLS:
        resq_bytes, fp16_bytes = prefill_bytes(seq)
        fp16_sets, sets = input_sets(fp16_bytes, l2), input_sets(resq_bytes, l2)

        def cache():
            return (torch.randint(0, 256, (1, hkv, seq, a.row_bytes), dtype=torch.uint8, device="cuda"),
                    torch.rand(1, hkv, seq, a.groups, device="cuda") * 0.1 + 0.01,
                    torch.randint(0, 16, (1, hkv, seq, a.groups), dtype=torch.uint8, device="cuda"))

        caches = [(cache(), cache()) for _ in range(sets)]
        qs = [torch.randn(1, h, seq, d, device="cuda") for _ in range(sets)]
        fp16 = [_flash_sdpa(torch.randn(1, h, seq, d, dtype=torch.float16, device="cuda"),
                            torch.randn(1, hkv, seq, d, dtype=torch.float16, device="cuda"),
                            torch.randn(1, hkv, seq, d, dtype=torch.float16, device="cuda")) for _ in range(fp16_sets)]
        zero = torch.zeros(1, dtype=torch.int32, device="cuda")  # past_length, on the device
        names = {dt: kv_launch.prefill_name(a, seq, dt) for dt in (torch.float16, torch.float32)}
        t_fp16, mode16 = timed([call for call, _ in fp16], warmup, reps)
        t_resq, mode = timed([partial(kv_launch.prefill_attention, a, q.half(), kc, vc, zero, names[torch.float16])
                              for q, (kc, vc) in zip(qs, caches)], warmup, reps)
        t_resq32, _ = timed([partial(kv_launch.prefill_attention, a, q, kc, vc, zero, names[torch.float32])
                             for q, (kc, vc) in zip(qs, caches)], warmup, reps)
        new_k, new_v = torch.randn(1, hkv, seq, d, device="cuda"), torch.randn(1, hkv, seq, d, device="cuda")
        t_append, _ = timed([partial(kv_launch.append, a, new_k, new_v, kc, vc, zero) for kc, vc in caches],
                            warmup, reps)
        rows.append({"kind": "prefill_attention", "batch": 1, "seq": seq, "fp16_flash_ms": t_fp16, "resq_ms": t_resq,
                     "resq_f32q_ms": t_resq32, "resq_append_ms": t_append, "ratio": t_resq / t_fp16,
                     "baseline": fp16[0][1], "configs": [names[torch.float16], names[torch.float32]],
                     "sets": [fp16_sets, sets], "timing": [mode16, mode]})
        print(rows[-1], flush=True)
        del caches, qs, fp16
    return rows


def _table(rows: list[dict], kind: str, header: str, line) -> list[str]:
    """The table of the rows of one kind after a blank line, or nothing where there are none (no
    empty table in a record of GEMM rows only)."""
    chosen = [r for r in rows if r["kind"] == kind]
    if not chosen:
        return []
    return ["", header, "|" + "---|" * (header.count("|") - 1)] + [line(r) for r in chosen]


def _decode_line(r: dict) -> str:
    return (f"| {r['batch']} | {r['context']} | {r['fp16_sdpa_ms']:.4f} | {r['resq_ms']:.4f} | "
            f"{r['speedup']:.2f} | {r['fp16_gbps']:.0f} / {r['resq_gbps']:.0f} | {r['resq_f32q_ms']:.4f} | "
            f"{r['resq_append_ms']:.4f} | {' / '.join(r['timing'])} |")


def _prefill_line(r: dict) -> str:
    return (f"| {r['batch']} | {r['seq']} | {r['fp16_flash_ms']:.4f} | {r['resq_ms']:.4f} | {r['ratio']:.2f} | "
            f"{r['resq_f32q_ms']:.4f} | {r['resq_append_ms']:.4f} | {r['baseline']} | {' / '.join(r['timing'])} |")


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"# resq kernels against FP16, {meta['date']}", "",
           f"device {meta['device']} (sm_{meta['sm']}), torch {meta['torch']}, CUDA {meta['cuda']}; "
           f"Triton cubins of {meta['library']} ({meta['versions']})",
           f"command: `{meta['command']}`",
           f"device-to-device copy: {meta['copy_gbps']:.0f} GB/s (read + written); every row: median of "
           f"{meta['reps']} replays of a CUDA graph over enough input sets to read ~4x the L2 cache "
           "(timing column: 'graph', or eager where capture failed)", "",
           "| GEMM K x N | M | FP16 cuBLAS ms | resq GEMM ms | x | resq quant+GEMM ms | x | quantiser share "
           "| weights GB/s FP16 / resq | timing |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "gemm":
            out.append(f"| {r['shape']} | {r['m']} | {r['fp16_ms']:.4f} | {r['resq_gemm_ms']:.4f} | "
                       f"{r['speedup_gemm']:.2f} | {r['resq_linear_ms']:.4f} | {r['speedup_linear']:.2f} | "
                       f"{100 * r['quant_overhead']:+.0f} % | {r['fp16_weight_gbps']:.0f} / {r['resq_weight_gbps']:.0f} "
                       f"| {' / '.join(r['timing'])} |")
    out += _table(rows, "decode_attention", "| decode attention, batch | context | FP16 SDPA ms | resq 4+8-bit ms "
                  "(fp16 q) | x | K/V GB/s FP16 / resq | resq ms (fp32 q) | append ms | timing |", _decode_line)
    out += _table(rows, "prefill_attention", "| prefill attention, batch | S | FP16 flash ms | resq 4+8-bit ms "
                  "(fp16 q) | resq / FP16 | resq ms (fp32 q) | append ms | baseline | timing |", _prefill_line)
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, default=ROOT / "build" / "plugins" / "libresq_triton.so",
                    help="libresq_triton.so (the cubins and our loader)")
    ap.add_argument("--out", type=Path, help="write the dated markdown record here (and .json beside it)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--m", type=int, nargs="+", default=MS, help=f"token counts (default {MS})")
    ap.add_argument("--no-attention", action="store_true", help="GEMM rows only")
    ap.add_argument("--attention-only", action="store_true", help="the decode and prefill attention rows only")
    ap.add_argument("--limits", action="store_true",
                    help="print the prefill launch's counts and limit times (no GPU needed) and exit")
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.reps < 1 or min(args.m) < 1:
        ap.error("--warmup >= 0, --reps >= 1 and every --m >= 1")
    if args.no_attention and args.attention_only:
        ap.error("--no-attention and --attention-only exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.limits:
        print(prefill_limits_markdown(), end="")
        return 0
    if not args.lib.is_file():
        print(f"error: {args.lib} is missing: build it with cmake (target resq_triton) where triton 3.9.0 is, and carry it")
        return 1
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device: this benchmark needs a GPU")
        return 1
    from resq_export.kernels import launch
    from resq_export.kernels.configs import all_configs
    from resq_export.native import triton as T
    from resq_export.native.seam import SeamRunner

    try:  # every cubin of this SM loaded by our loader, outside any graph capture
        T.prepare(0, args.lib)
    except RuntimeError as e:
        print(f"error: loading the cubins on device 0: {e}")
        return 1
    launch._run = SeamRunner(all_configs(), "cuda", args.lib)  # launch.py's launches through our seam
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True  # cuBLAS at its fastest
    major, minor = torch.cuda.get_device_capability()
    meta = {"device": torch.cuda.get_device_name(), "sm": f"{major}{minor}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "library": str(args.lib),
            "versions": T.versions(args.lib), "command": "python " + " ".join(sys.argv)}
    meta["copy_gbps"], meta["reps"] = copy_bandwidth(args.warmup, args.reps), args.reps
    print(f"device-to-device copy {meta['copy_gbps']:.0f} GB/s", flush=True)
    rows = [] if args.attention_only else gemm_rows(args.warmup, args.reps, args.m)
    if not args.no_attention:
        rows += attention_rows(args.warmup, args.reps) + prefill_rows(args.warmup, args.reps)
    text = markdown(rows, meta)
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
