"""Summarise a quantize run, finished (artifact folder) or not (its `.partial` work folder), as
markdown: per-layer times and the process peak RSS recorded after each step. For docs/scale.md.

    python tools/scale_summary.py /work/scale-bench/out-8b-gptq      # or .../out-8b-gptq.partial
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def load(path: Path) -> tuple[dict, list[dict], str]:
    if (path / "stats.json").is_file():
        details = json.loads((path / "stats.json").read_text())
        manifest = json.loads((path / "manifest.json").read_text())
        return {**details.get("timings_s", {}), **manifest["stats"]}, details["layers"], "finished artifact"
    partial = path if (path / "state.json").is_file() else path.with_name(path.name + ".partial")
    state = json.loads((partial / "state.json").read_text())
    n = max([int(k) for k in state["layers"]] + [-1]) + 1
    head = {k: state.get(k) for k in ("pass1_done", "bases_done", "bases_s", "globals_done", "globals_s",
                                      "globals_peak_rss_mb", "pass2_done")}
    return head, [state["layers"].get(str(i), {}) for i in range(n)], f"unfinished ({partial})"


def main(path: str) -> None:
    head, layers, kind = load(Path(path))
    print(f"{path}: {kind}")
    for k, v in head.items():
        if v is not None and not isinstance(v, dict | list):
            print(f"- {k}: {v}")
    print("\n| layer | pass 1 s | pass 2 s | peak RSS after pass 2 (MB) |\n|---|---|---|---|")
    for i, r in enumerate(layers):
        print(f"| {i} | {r.get('pass1_s', '')} | {r.get('pass2_s', '')} | {r.get('pass2_peak_rss_mb', '')} |")
    for key in ("pass1_s", "pass2_s"):
        xs = [r[key] for r in layers if r.get(key)]
        if xs:
            print(f"\n{key}: {len(xs)} layers, median {statistics.median(xs):.1f}, min {min(xs):.1f}, max {max(xs):.1f}")
    steps = [r["pass2_steps"] for r in layers if r.get("pass2_steps")]
    if steps:
        print(f"\npass 2 by step ({len(steps)} layers): | step | median s | max s | highest peak RSS after it (MB) |")
        print("|---|---|---|---|")
        for name in steps[0]:
            xs = [st[name]["s"] for st in steps]
            print(f"| {name} | {statistics.median(xs):.1f} | {max(xs):.1f} | {max(st[name]['peak_rss_mb'] for st in steps)} |")
    recorded = sum(r.get(k) or 0.0 for r in layers for k in ("pass1_s", "pass2_s"))
    recorded += sum(head.get(k) or 0.0 for k in ("bases_s", "globals_s"))
    print(f"\nsum of the recorded step times: {recorded:.0f} s (not counted: each process's start-up and source"
          " hashing, and the final assembly)")


if __name__ == "__main__":
    main(sys.argv[1])
