"""ONNX Runtime decode over a long KV cache, two exports of the same artifact side by side: each
measured by the code that wrote it (its own checkout on PYTHONPATH, in a subprocess of its own, so
peak RSS is its own), alternating over rounds. Used to compare op contract versions (issue 16).

    .venv/bin/python tools/bench_kv_cache.py --a NEW_ONNX --a-code . --b OLD_ONNX --b-code /work/old \\
        --out /tmp/kv-bench.md

Per export: bytes per cached value (from the graph's past inputs), batch-1 decode ms/token after a
context of 64, 512 and 2048 tokens (median over rounds of the median of --reps runs of --steps
tokens), and peak RSS of the process that ran the longest context.
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

CONTEXTS = (64, 512, 2048)


def bytes_per_value(onnx_dir: Path) -> float:
    import numpy as np
    import onnx

    model = onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False)
    layer0 = {i.name: i.type.tensor_type for i in model.graph.input if i.name.startswith("past.0.key")}
    row = 0
    for t in layer0.values():
        last = t.shape.dim[-1].dim_value
        row += last * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    attention = next(n for n in model.graph.node if n.op_type == "ResQKVCacheAttention")
    d = next(a.i for a in attention.attribute if a.name == "head_dim")
    return row / d


def measure(onnx_dir: str, context: int, steps: int, reps: int, threads: int) -> dict:
    import numpy as np

    from resq_export.validate.ort_runner import OrtDecoder

    session = OrtDecoder(Path(onnx_dir), optimization="all", threads=threads)
    ids = np.random.default_rng(0).integers(0, 1000, (1, context))
    # either code's runner: a fixed-capacity cache (op contract v3) or one that grows (before)
    start = session.new_cache(1, context + steps) if hasattr(session, "new_cache") else None
    _, past = session.forward(ids, start)
    token = ids[:, -1:]
    times = []
    for _ in range(reps + 1):  # the first is a warm-up
        start, p = time.perf_counter(), past
        for _ in range(steps):
            _, p = session.forward(token, p)
        times.append((time.perf_counter() - start) / steps)
    return {"decode_ms": 1000 * statistics.median(times[1:]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(folder: str, code: str, context: int, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(code).resolve())}
    cmd = [sys.executable, __file__, "--child", folder, "--context", str(context), "--steps", str(args.steps),
           "--reps", str(args.reps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=code).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", help="ONNX folder A")
    ap.add_argument("--a-code", default=".", help="the checkout that reads A")
    ap.add_argument("--b", help="ONNX folder B")
    ap.add_argument("--b-code", help="the checkout that reads B")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.context, args.steps, args.reps, args.threads)))
        return
    sides = {"A": (args.a, args.a_code), "B": (args.b, args.b_code)}
    runs = {(s, c): [] for s in sides for c in CONTEXTS}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            for c in CONTEXTS:
                runs[(side, c)].append(_child(*sides[side], c, args))
    lines = [
        "`.venv/bin/python tools/bench_kv_cache.py --a {} --a-code {} --b {} --b-code {}` on {}, {} cores, {}, "
        "{} ORT threads; {} alternating rounds, batch 1, each the median of {} runs of {} decode steps after a "
        "warm-up. Load average before/after: {:.1f} / {:.1f}.".format(
            args.a, args.a_code, args.b, args.b_code, datetime.date.today().isoformat(), os.cpu_count(),
            platform.machine(), args.threads, args.rounds, args.reps, args.steps, load_before[0], os.getloadavg()[0]),
        "",
        "| export | bytes per cached value | " + " | ".join(f"decode ms/token @ {c}" for c in CONTEXTS)
        + f" | peak RSS @ {CONTEXTS[-1]} (MiB) |",
        "|---" * (3 + len(CONTEXTS)) + "|",
    ]
    for side, (folder, _) in sides.items():
        ms = [statistics.median(x["decode_ms"] for x in runs[(side, c)]) for c in CONTEXTS]
        rss = max(x["peak_rss_mb"] for x in runs[(side, CONTEXTS[-1])])
        lines.append(f"| {side}: `{folder}` | {bytes_per_value(Path(folder)):.3f} | "
                     + " | ".join(f"{m:.1f}" for m in ms) + f" | {rss:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
