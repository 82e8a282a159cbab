"""ONNX Runtime benchmark on this machine: a quantised export against the FP32 export of the same
model, side by side in one run.

    .venv/bin/python tools/bench_onnx.py --quant out/bench/resq-onnx --fp out/bench/fp-onnx --out docs/onnx-bench.md

Reports file size, bytes per parameter, peak RSS, prefill tokens/s for a 512-token prompt, decode
ms/token at batch 1 and 8 (64-token context), and an ONNX Runtime profile of batch-1 decode (time by
operator type). Each measurement runs in its own subprocess (so peak RSS is its own), and the two
models alternate (A B B A ...) over --rounds, so a background load drifting during the run hits
both alike; every figure is the median over rounds of each round's median.
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
import tempfile
import time
from collections import Counter
from pathlib import Path

CONTEXT = 64


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(onnx_dir: str, prompt_len: int, decode_tokens: int, reps: int, threads: int) -> dict:
    import numpy as np

    from resq_export.validate.ort_runner import OrtDecoder

    session = OrtDecoder(Path(onnx_dir), optimization="all", threads=threads)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 1000, (1, prompt_len))
    out = {"prefill_tok_s": prompt_len / _median_time(lambda: session.forward(prompt), reps)}
    for batch in (1, 8):
        ids = rng.integers(0, 1000, (batch, CONTEXT))
        _, cache = session.forward(ids, session.new_cache(batch, CONTEXT + decode_tokens))
        token = ids[:, -1:]

        def decode(cache=cache, token=token):
            c = cache
            for _ in range(decode_tokens):
                _, c = session.forward(token, c)

        out[f"decode_ms_b{batch}"] = 1000 * _median_time(decode, reps) / decode_tokens
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def profile(onnx_dir: str, decode_tokens: int, threads: int) -> dict:
    """Share of batch-1 decode time per operator type, from ONNX Runtime's own profiler."""
    import numpy as np

    from resq_export.validate.ort_runner import OrtDecoder

    with tempfile.TemporaryDirectory() as tmp:
        runner = OrtDecoder(Path(onnx_dir), optimization="all", threads=threads, profile_prefix=str(Path(tmp) / "prof"))
        ids = np.random.default_rng(0).integers(0, 1000, (1, CONTEXT))
        _, cache = runner.forward(ids, runner.new_cache(1, CONTEXT + decode_tokens))
        for _ in range(decode_tokens):
            _, cache = runner.forward(ids[:, -1:], cache)
        trace = json.loads(Path(runner.session.end_profiling()).read_text())
    runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])
    decode_start = runs[0]["ts"] + runs[0]["dur"]  # the first run is the prefill of the context
    by_op: Counter = Counter()
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= decode_start:
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    return {op: dur / total for op, dur in by_op.most_common(8)}


def _child(args, folder: str, what: str) -> dict:
    cmd = [sys.executable, __file__, "--quant", args.quant, "--fp", args.fp, "--child", folder, "--what", what,
           "--prompt-len", str(args.prompt_len), "--decode-tokens", str(args.decode_tokens),
           "--reps", str(args.reps), "--threads", str(args.threads)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", required=True)
    ap.add_argument("--fp", required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/onnx-bench.md"))
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--what", default="measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = (measure(args.child, args.prompt_len, args.decode_tokens, args.reps, args.threads)
                  if args.what == "measure" else profile(args.child, args.decode_tokens, args.threads))
        print(json.dumps(result))
        return
    folders = {"FP32": args.fp, "quantised": args.quant}
    runs: dict[str, list[dict]] = {label: [] for label in folders}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = list(folders) if r % 2 == 0 else list(folders)[::-1]
        for label in order:
            runs[label].append(_child(args, folders[label], "measure"))
    rows = {}
    for label, folder in folders.items():
        res = {k: statistics.median(run[k] for run in runs[label]) for k in runs[label][0]}
        res["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs[label])
        res["size_mb"] = sum(f.stat().st_size for f in Path(folder).glob("model.onnx*") if f.is_file()) / 2**20
        res["method"] = json.loads((Path(folder) / "export.json").read_text())["method"]
        res["profile"] = _child(args, folder, "profile")
        rows[label] = res
    params = _fp_params(args.fp)
    write(args, rows, params, load_before, os.getloadavg())


def _fp_params(fp_dir: str) -> int:
    """Parameter count: the FP32 export's float initializers (the embedding counted once)."""
    import numpy as np
    import onnx

    model = onnx.load(str(Path(fp_dir) / "model.onnx"), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and np.prod(t.dims) > 1)


def write(args, rows: dict, params: int, load_before, load_after) -> None:
    fp, q = rows["FP32"], rows["quantised"]
    lines = [
        "# ONNX Runtime benchmark",
        "",
        f"`.venv/bin/python tools/bench_onnx.py --quant {args.quant} --fp {args.fp} --out {args.out}` on "
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"{args.threads} ORT threads, graph optimisation 'all'; {args.rounds} alternating rounds, each the median "
        f"of {args.reps} repetitions after a warm-up; decode after a {CONTEXT}-token context, "
        f"{args.decode_tokens} steps. Load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f}.",
        f"Parameters (FP32 export's float tensors, embedding counted once): {params / 1e6:.1f} M.",
        "",
        "| | size (MiB) | bytes/param | peak RSS (MiB) | prefill tok/s (512) | decode ms/token b1 | decode ms/token b8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(f"| {label} ({r['method']}) | {r['size_mb']:.1f} | {r['size_mb'] * 2**20 / params:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['prefill_tok_s']:.0f} | {r['decode_ms_b1']:.1f} | "
                     f"{r['decode_ms_b8']:.1f} |")
    lines.append(f"| ratio quantised / FP32 | {q['size_mb'] / fp['size_mb']:.3f} | | "
                 f"{q['peak_rss_mb'] / fp['peak_rss_mb']:.2f} | {q['prefill_tok_s'] / fp['prefill_tok_s']:.2f} | "
                 f"{q['decode_ms_b1'] / fp['decode_ms_b1']:.2f} | {q['decode_ms_b8'] / fp['decode_ms_b8']:.2f} |")
    lines += ["", "Batch-1 decode time by operator type (ONNX Runtime profiler, top 8):", ""]
    for label, r in rows.items():
        lines.append(f"- {label}: " + ", ".join(f"{op} {100 * share:.0f}%" for op, share in r["profile"].items()))
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
