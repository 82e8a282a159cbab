"""Our cubins through our loader and launch seam against the reference executor: the linear cases of
tests/kernels (layouts of every bit combination, LQER, bias, SmolLM2 and Llama-3-8B layer shapes with
N cut to a few tiles) at decode and prefill and the online Hadamard, bit for bit; the KV attention
(kv_launch.kv_attention: U_C, append, flash-decoding and its combine, or the prefill kernel) on the
interpreter tests' layouts (tests/kernels/kv_cases.py) at the first token, a batch with a full cache
and a prefill of 37 rows: the appended bytes bit for bit, Y within kv_cases.op_atol.

    python tools/triton_gpu_check.py --lib build/plugins/libresq_triton.so [--mode cuda|record] [--out report.json]

cuda (a GPU, tools/gpu_session.sh): loads every cubin for the device (resq_triton_prepare), runs the
kernels on CUDA tensors through the CUDA launcher. record (here, under TRITON_INTERPRET=1): the same
launches recorded and executed by the interpreter, which checks this script's steps without a GPU.
Exit 0 when every case passes, 1 otherwise; one line per case."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "plugins"), str(ROOT / "tests" / "kernels")]


def prepare_cuda(lib: Path, report: dict) -> bool:
    """Every kernel's cubin for device 0 (its SM), shared memory checked, loaded into the context;
    the device's name and the time it took go into `report`. False (and the error line) on failure."""
    import torch

    from resq_export.native import triton as T

    t0 = time.perf_counter()
    try:
        T.prepare(0, lib)
    except RuntimeError as e:
        print(f"error: loading the cubins on device 0: {e}")
        return False
    report.update(device=torch.cuda.get_device_name(0), prepare_s=round(time.perf_counter() - t0, 3))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", type=Path, default=ROOT / "build" / "plugins" / "libresq_triton.so")
    parser.add_argument("--mode", choices=("cuda", "record"), default="cuda")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true",
                        help="two linear layouts, one Hadamard, the tiny KV layout only")
    args = parser.parse_args()
    if not args.lib.is_file():
        print(f"error: {args.lib} is missing: build it with cmake (target resq_triton) where triton 3.9.0 is, and carry it")
        return 1
    if args.mode == "record" and os.environ.get("TRITON_INTERPRET") != "1":
        print("error: --mode record needs TRITON_INTERPRET=1 in the environment")
        return 1
    from resq_export.kernels import launch
    from resq_export.kernels.configs import all_configs
    from resq_export.native import triton as T
    from resq_export.native.seam import SeamRunner

    dev = "cuda" if args.mode == "cuda" else "cpu"
    report = {"mode": args.mode, "library": str(args.lib), "versions": T.versions(args.lib), "cases": []}
    if args.mode == "cuda" and not prepare_cuda(args.lib, report):
        return 1
    runner = SeamRunner(all_configs(), args.mode, args.lib)
    launch._run = runner

    from triton_cases import (check_hadamard, check_kv, check_linear, hadamard_sizes, kv_calls, kv_layouts,
                              linear_cases, token_counts)

    failed = 0
    for name, lay, n, rank in linear_cases(args.quick):
        for m in token_counts(args.quick):
            diff, total = check_linear(lay, n, rank, m, dev)
            failed += diff > 0
            report["cases"].append({"linear": name, "m": m, "rank": rank, "outputs": total, "differ": diff})
            print(f"{'ok ' if diff == 0 else 'BAD'} linear {name} M={m} rank={rank}: {diff} of {total} differ")
    for n in hadamard_sizes(args.quick):
        diff, total = check_hadamard(n, dev)
        failed += diff > 0
        report["cases"].append({"hadamard": n, "outputs": total, "differ": diff})
        print(f"{'ok ' if diff == 0 else 'BAD'} hadamard n={n}: {diff} of {total} differ")
    for name, a in kv_layouts(args.quick):
        for lengths, seq in kv_calls():
            differ, err, atol = check_kv(a, lengths, seq, dev)
            bad = differ > 0 or not err <= atol
            failed += bad
            report["cases"].append({"kv": name, "lengths": lengths, "seq": seq, "cache_differ": differ, "y_err": err,
                                    "atol": atol})
            print(f"{'BAD' if bad else 'ok '} kv {name} lengths={lengths} S={seq}: {differ} cache entries differ, "
                  f"|Y - reference| {err:.3g} (tolerance {atol:.3g})")
    report["launches"] = dict(sorted(runner.launches.items()))
    print(f"{sum(runner.launches.values())} launches of {len(runner.launches)} configurations through the seam; "
          f"{failed} case(s) failed")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
