"""The plugins' enqueue, bit for bit against the reference executor: each case of a case file (tiny
models' layer-0 linears and Hadamards as exported, random layouts; tests/plugins/plugin_enqueue_cases.py)
goes through the ops' TensorRT-free layer of libresq_triton.so (resq_op_check: the creator's attribute
checks, configurePlugin's tensor checks, the workspace; resq_op_enqueue: the launches), the code the
TensorRT plugins adapt, and its output is compared with what the reference executor gave on the CPU.

    python tools/op_enqueue_check.py --cases build/plugins/enqueue_cases.pt [--lib build/plugins/libresq_triton.so]
        [--mode cuda|record] [--harness libharness.so] [--out report.json]

cuda (a GPU, tools/gpu_session.sh): every cubin loaded for the device first (resq_triton_prepare),
then the real CUDA launcher on torch CUDA tensors and workspace, torch's current stream. record (here,
under TRITON_INTERPRET=1): the recording launcher takes host buffers and the recorded launches
(names, grids, argument bytes checked against the embedded cubins' parameters) are executed by the
interpreter; the launches must be what launch.py's policy names. --harness: the same through the
plugins' creators (a library built against TensorRT headers, tests/plugins/plugin_enqueue_harness.cpp).
Exit 0 when every case is exact, 1 otherwise (error: ... for bad arguments); one line per case."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "plugins"), str(ROOT / "tools")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=ROOT / "build" / "plugins" / "enqueue_cases.pt")
    parser.add_argument("--lib", type=Path, default=ROOT / "build" / "plugins" / "libresq_triton.so")
    parser.add_argument("--mode", choices=("cuda", "record"), default="cuda")
    parser.add_argument("--harness", type=Path, help="drive the plugins' creators through this harness library")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def problem(args: argparse.Namespace) -> str | None:
    """What makes the arguments unusable, before anything is loaded."""
    for what, path in (("--lib", args.lib), ("--cases", args.cases), ("--harness", args.harness)):
        if path is not None and not path.is_file():
            hint = {"--lib": "build it with cmake (target resq_triton) where triton 3.9.0 is, and carry it",
                    "--cases": "write it where the tiny models are: RESQ_ENQUEUE_CASES=<file> pytest "
                               "tests/plugins/test_plugin_enqueue.py, and carry it"}.get(what, "build it first")
            return f"{what} {path} is missing: {hint}"
    if args.mode == "record" and os.environ.get("TRITON_INTERPRET") != "1":
        return "--mode record needs TRITON_INTERPRET=1 in the environment"
    return None


def run_case(lib, case: dict, mode: str, triton_lib: Path) -> dict:
    """One case through the layer; its report line (differ: outputs not bit-equal to the reference)."""
    import torch

    from resq_export.native import triton as T

    dev = "cuda" if mode == "cuda" else "cpu"
    inputs = [t.to(dev).contiguous() for t in case["inputs"]]
    y = torch.full(case["expected"].shape, float("nan"), device=dev)
    workspace_bytes = lib.check(case["op"], case["fields"], inputs, [y])
    ws = torch.zeros(max(workspace_bytes, 1), dtype=torch.uint8, device=dev)
    launches = None
    if mode == "cuda":
        lib.enqueue(case["op"], case["fields"], inputs, [y], ws, torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
    else:
        from resq_export.kernels.configs import all_configs
        from resq_export.native.replay import replay

        with T.recording(8, 9, path=triton_lib) as records:
            lib.enqueue(case["op"], case["fields"], inputs, [y], ws)
        replay(records, all_configs(), [*inputs, y, ws])
        launches = [r.name for r in records]
    differ = int((y.cpu() != case["expected"]).sum())
    return {"case": case["case"], "differ": differ, "outputs": y.numel(), "workspace": workspace_bytes,
            "launches": launches, "policy": case["policy"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    bad = problem(args)
    if bad:
        print(f"error: {bad}")
        return 1
    import torch

    from plugin_enqueue_op import OpLibrary, OpRefused
    from resq_export.native import triton as T

    cases = torch.load(args.cases, weights_only=True)
    lib = OpLibrary(args.lib, args.harness)
    report = {"mode": args.mode, "route": lib.route, "library": str(args.lib), "versions": T.versions(args.lib),
              "cases": []}
    if args.mode == "cuda":
        from triton_gpu_check import prepare_cuda

        if not prepare_cuda(args.lib, report):
            return 1
    failed = 0
    for case in cases:
        try:
            line = run_case(lib, case, args.mode, args.lib)
        except OpRefused as e:
            line = {"case": case["case"], "refused": str(e), "differ": -1}
        # in record mode the launches are known: they must be launch.py's (the C++ policy follows it)
        bad = line["differ"] != 0 or (line.get("launches") is not None and line["launches"] != line["policy"])
        failed += bad
        report["cases"].append(line)
        detail = line.get("refused") or f"{line['differ']} of {line['outputs']} differ"
        if line.get("launches") is not None and line["launches"] != line["policy"]:
            detail += f"; launched {line['launches']}, launch.py launches {line['policy']}"
        print(f"{'BAD' if bad else 'ok '} {case['op']} {case['case']}: {detail}", flush=True)
    print(f"{len(cases)} cases through {lib.route} ({args.mode}); {failed} not exact")
    report["failed"] = failed
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
