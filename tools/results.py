"""Produce docs/results.md: SmolLM2-135M perplexity of FP and every quantisation setting, measured
in one run on this machine, with each quantisation's wall time and peak memory.

    .venv/bin/python tools/results.py --out docs/results.md [--max-tokens 16384]

Every row runs the real CLI in a subprocess (so peak RSS is that quantisation's own), on the
packaged evaluation text, which shares no topic with the packaged calibration corpus.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MODEL = "smollm2-135m"
SETTINGS = [  # (label, quantize flags)
    ("RTN W4A4KV4", ["--method", "rtn"]),
    ("QuaRot-style W4A4KV4 (GPTQ)", ["--method", "quarot"]),
    ("ResQ W4A4KV4 (GPTQ)", ["--method", "resq"]),
    ("ResQ W4A4KV4 (RTN weights)", ["--method", "resq", "--weight-algo", "rtn"]),
    ("ResQ W4A8KV8 (GPTQ)", ["--method", "resq", "--a-bits", "8", "--kv-bits", "8"]),
    ("ResQ W4A16KV16 (GPTQ)", ["--method", "resq", "--a-bits", "16", "--kv-bits", "16"]),
    ("LQER W4A8 (L²QER rank 32, g64)", ["--method", "lqer"]),
    ("ResQ + LQER rank 32 W4A4KV4 (GPTQ)", ["--method", "resq", "--lqer-rank", "32"]),
]


def cli() -> list[str]:
    return [sys.executable, "-m", "resq_export.cli"]


def run_json(args: list[str]) -> dict:
    out = subprocess.run(cli() + args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--workdir", type=Path, default=Path("out/results"))
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--only", nargs="*", help="labels (substring) of the settings to run")
    ap.add_argument("--reuse", action="store_true",
                    help="keep artifacts already in --workdir (their manifest holds the quantisation time and memory "
                         "measured when they were made); every perplexity is measured again")
    args = ap.parse_args()
    eval_flags = ["--max-tokens", str(args.max_tokens), "--json", "--quiet"]
    rows = []
    started = time.time()
    fp = run_json(["eval", "--model", MODEL, *eval_flags])
    rows.append({"label": "FP32 (dequantised Q4_1 GGUF)", "flags": "", "ppl": fp["ppl"]})
    for i, (label, flags) in enumerate(SETTINGS):
        if args.only and not any(o in label for o in args.only):
            continue
        art = args.workdir / f"setting{i}"
        if not (args.reuse and (art / "manifest.json").is_file()):
            subprocess.run(cli() + ["quantize", "--model", MODEL, "--out", str(art), "--quiet", *flags], check=True)
        stats = json.loads((art / "manifest.json").read_text())["stats"]
        ev = run_json(["eval", "--artifact", str(art), *eval_flags])
        rows.append({"label": label, "flags": " ".join(flags), "ppl": ev["ppl"], "stats": stats})
        print(f"{label}: ppl {ev['ppl']:.3f} ({ev['ppl'] / fp['ppl']:.3f}x FP)", file=sys.stderr, flush=True)
    write_report(args, fp, rows, time.time() - started)


def write_report(args, fp: dict, rows: list[dict], total_s: float) -> None:
    lines = [
        "# Results: SmolLM2-135M on this machine",
        "",
        f"Produced by `.venv/bin/python tools/results.py --out {args.out} --max-tokens {args.max_tokens}"
        f"{' --reuse' if args.reuse else ''}` "
        f"on {datetime.date.today().isoformat()}; machine: {os.cpu_count()} cores ({cpu_name()}), "
        f"Python {platform.python_version()}; whole run {total_s / 60:.1f} min"
        + (" (artifacts reused from an earlier invocation: their quantise time and memory are from when they were "
           "made; every perplexity here, FP included, was measured in this invocation)." if args.reuse else "."),
        "",
        f"Perplexity: packaged eval text (`resq_export/data/eval_en.txt`, not used for calibration), first "
        f"{fp['windows']} non-overlapping windows of {fp['seqlen']} tokens ({fp['tokens']} tokens), "
        "reference executor (exact integer semantics of docs/ops.md). Calibration: packaged corpus, "
        "64 windows x 512 tokens, seed 0 (the defaults). Times and peak RSS are of the whole "
        "`resq-export quantize` process (load, calibration, bases, GPTQ, writing).",
        "",
        "| setting | flags | perplexity | × FP | quantise wall time | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r.get("stats")
        t = f"{st['wall_time_s'] / 60:.1f} min" if st else "—"
        m = f"{st['peak_rss_mb'] / 1024:.2f} GB" if st else "—"
        flags = f"`{r['flags']}`" if r["flags"] else "`eval --model smollm2-135m`"
        lines.append(f"| {r['label']} | {flags} | {r['ppl']:.3f} | {r['ppl'] / fp['ppl']:.3f} | {t} | {m} |")
    resq = next((r for r in rows if r["label"].startswith("ResQ W4A4KV4 (GPTQ)")), None)
    if resq:
        share = resq["stats"].get("variance_in_high_subspace", {})
        lines += ["", "Share of calibration variance in the 8-bit subspace (top 1/8 eigenvalues), ResQ run: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in share.items()) + "."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
