"""ONNX Runtime benchmark on this machine: an exported model against the FP32 export of the same
model, side by side in one run (each measurement in its own subprocess, so peak RSS is its own).

    .venv/bin/python tools/bench_onnx.py --quant out/bench/resq-onnx --fp out/bench/fp-onnx --out docs/onnx-bench.md

Reports file size, bytes per parameter, peak RSS, prefill tokens/s for a 512-token prompt, decode
ms/token at batch 1 and 8 (median of --reps runs after a warm-up).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(onnx_dir: str, prompt_len: int, decode_tokens: int, reps: int, threads: int) -> dict:
    import numpy as np

    from resq_export.validate.ort_runner import OrtDecoder

    session = OrtDecoder(Path(onnx_dir), optimization="all", threads=threads)
    rng = np.random.default_rng(0)
    out = {}
    prompt = rng.integers(0, 1000, (1, prompt_len))
    session.forward(prompt)  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        session.forward(prompt)
        times.append(time.perf_counter() - t)
    out["prefill_tok_s"] = prompt_len / statistics.median(times)
    for batch in (1, 8):
        ids = rng.integers(0, 1000, (batch, 64))
        _, past = session.forward(ids)
        token = ids[:, -1:]
        session.forward(token, past)  # warm-up
        steps = []
        for _ in range(reps):
            p = past
            t = time.perf_counter()
            for _ in range(decode_tokens):
                _, p = session.forward(token, p)
            steps.append((time.perf_counter() - t) / decode_tokens)
        out[f"decode_ms_b{batch}"] = 1000 * statistics.median(steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", required=True)
    ap.add_argument("--fp", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/onnx-bench.md"))
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.prompt_len, args.decode_tokens, args.reps, args.threads)))
        return
    rows = {}
    for label, folder in (("FP32", args.fp), ("quantised", args.quant)):
        cmd = [sys.executable, __file__, "--quant", args.quant, "--fp", args.fp, "--child", folder,
               "--prompt-len", str(args.prompt_len), "--decode-tokens", str(args.decode_tokens),
               "--reps", str(args.reps), "--threads", str(args.threads)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        size = sum(f.stat().st_size for f in Path(folder).glob("model.onnx*") if f.is_file())
        res["size_mb"] = size / 2**20
        res["method"] = json.loads((Path(folder) / "export.json").read_text())["method"]
        rows[label] = res
    write(args, rows)


def write(args, rows: dict) -> None:
    fp, q = rows["FP32"], rows["quantised"]
    lines = [
        "# ONNX Runtime benchmark",
        "",
        f"`.venv/bin/python tools/bench_onnx.py --quant {args.quant} --fp {args.fp} --out {args.out}` on "
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"{args.threads} ORT threads, graph optimisation 'all', median of {args.reps}.",
        "",
        "| | size (MiB) | peak RSS (MiB) | prefill tok/s (512) | decode ms/token b1 | decode ms/token b8 |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(f"| {label} ({r['method']}) | {r['size_mb']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['prefill_tok_s']:.0f} | {r['decode_ms_b1']:.1f} | {r['decode_ms_b8']:.1f} |")
    lines.append(f"| ratio quantised / FP32 | {q['size_mb'] / fp['size_mb']:.3f} | "
                 f"{q['peak_rss_mb'] / fp['peak_rss_mb']:.2f} | {q['prefill_tok_s'] / fp['prefill_tok_s']:.2f} | "
                 f"{q['decode_ms_b1'] / fp['decode_ms_b1']:.2f} | {q['decode_ms_b8'] / fp['decode_ms_b8']:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
