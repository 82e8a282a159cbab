"""The plugins' enqueue against the reference executor: each case of the case files goes through the
ops' TensorRT-free layer of libresq_triton.so (resq_op_check: the creator's attribute checks,
configurePlugin's tensor checks, the workspace; resq_op_enqueue: the launches), the code the TensorRT
plugins adapt, and its outputs are compared with what the reference executor gave on the CPU:
- tiny models' layer-0 linears and Hadamards as exported, random layouts
  (tests/plugins/plugin_enqueue_cases.py): bit for bit;
- the KV attention (tests/plugins/kv_enqueue_cases.py): a prefill then decode steps through one cache,
  the present outputs aliased to the past inputs: the cache bit for bit, Y within each step's tolerance.

    python tools/op_enqueue_check.py --cases build/plugins/enqueue_cases.pt [build/plugins/kv_enqueue_cases.pt]
        [--lib build/plugins/libresq_triton.so] [--mode cuda|record] [--harness libharness.so] [--out report.json]

cuda (a GPU, tools/gpu_session.sh): every cubin loaded for the device first (resq_triton_prepare),
then the real CUDA launcher on torch CUDA tensors and workspace, torch's current stream. record (here,
under TRITON_INTERPRET=1): the recording launcher takes host buffers and the recorded launches
(names, grids, argument bytes checked against the embedded cubins' parameters) are executed by the
interpreter; the launches must be what launch.py's / kv_launch.py's policy names. --harness: the same through the
plugins' creators (a library built against TensorRT headers, tests/plugins/plugin_enqueue_harness.cpp).
Exit 0 when every case passes, 1 otherwise (error: ... for bad arguments); one line per case."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, nargs="+", default=[ROOT / "build" / "plugins" / "enqueue_cases.pt"],
                        help="one or more case files (the linears', the KV attention's)")
    parser.add_argument("--lib", type=Path, default=ROOT / "build" / "plugins" / "libresq_triton.so")
    parser.add_argument("--mode", choices=("cuda", "record"), default="cuda")
    parser.add_argument("--harness", type=Path, help="drive the plugins' creators through this harness library")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def problem(args: argparse.Namespace) -> str | None:
    """What makes the arguments unusable, before anything is loaded."""
    for what, path in (("--lib", args.lib), *(("--cases", c) for c in args.cases), ("--harness", args.harness)):
        if path is not None and not path.is_file():
            hint = {"--lib": "build it with cmake (target resq_triton) where triton 3.9.0 is, and carry it",
                    "--cases": "write it where the tiny models are: RESQ_ENQUEUE_CASES=<file> pytest "
                               "tests/plugins/test_plugin_enqueue.py (RESQ_KV_ENQUEUE_CASES=<file> pytest "
                               "tests/plugins/test_kv_enqueue.py), and carry it"}.get(what, "build it first")
            return f"{what} {path} is missing: {hint}"
    if args.mode == "record" and os.environ.get("TRITON_INTERPRET") != "1":
        return "--mode record needs TRITON_INTERPRET=1 in the environment"
    return None


def _launch(lib, op: str, fields: dict, inputs: list, outputs: list, ws, mode: str, triton_lib: Path):
    """One enqueue: on the GPU (torch's current stream, then a sync), or recorded and the records
    executed by the interpreter on the host buffers; the launched configurations' names (record
    mode) or None."""
    import torch

    from resq_export.native import triton as T

    if mode == "cuda":
        lib.enqueue(op, fields, inputs, outputs, ws, torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        return None
    from resq_export.kernels.configs import all_configs
    from resq_export.native.replay import replay

    with T.recording(8, 9, path=triton_lib) as records:
        lib.enqueue(op, fields, inputs, outputs, ws)
    replay(records, all_configs(), [*inputs, *outputs, ws])
    return [r.name for r in records]


def _workspace(lib, case: dict, inputs: list, outputs: list, dev: str):
    import torch

    size = lib.check(case["op"], case["fields"], inputs, outputs)
    return size, torch.zeros(max(size, 1), dtype=torch.uint8, device=dev)


def run_case(lib, case: dict, mode: str, triton_lib: Path) -> dict:
    """One case through the layer; its report line (differ: outputs not bit-equal to the reference)."""
    if "steps" in case:
        return run_steps(lib, case, mode, triton_lib)
    import torch

    dev = "cuda" if mode == "cuda" else "cpu"
    inputs = [t.to(dev).contiguous() for t in case["inputs"]]
    y = torch.full(case["expected"].shape, float("nan"), device=dev)
    workspace_bytes, ws = _workspace(lib, case, inputs, [y], dev)
    launches = _launch(lib, case["op"], case["fields"], inputs, [y], ws, mode, triton_lib)
    differ = int((y.cpu() != case["expected"]).sum())
    return {"case": case["case"], "differ": differ, "outputs": y.numel(), "workspace": workspace_bytes,
            "launches": launches, "policy": case["policy"]}


def run_steps(lib, case: dict, mode: str, triton_lib: Path) -> dict:
    """A sequence of calls through one cache (the KV attention: tests/plugins/kv_enqueue_cases.py): the
    cache tensors are the past inputs and the present outputs at once (aliased, as TensorRT binds
    them), or, in a step marked unaliased, present is a buffer of its own and past must stay as it
    was. differ: cache bytes not equal to the reference's (and past bytes an unaliased step changed);
    Y within each step's atol and, for a prefill step in record mode, the prefill kernel's own
    arithmetic (kernel_expected: at most kernel_share of the outputs beyond kernel_atol, none beyond
    kernel_flip_atol; reported, not held, on a GPU)."""
    import torch

    dev = "cuda" if mode == "cuda" else "cpu"
    cache = [t.to(dev).contiguous() for t in case["cache"]]
    lines, launched, policy = [], [], []
    for step in case["steps"]:
        new = [t.to(dev).contiguous() for t in step["inputs"]]
        inputs = new[:3] + cache + new[3:]  # Q, K, V, the six past tensors, past_length (, key_rotation)
        y = torch.full(step["expected"].shape, float("nan"), device=dev)
        before = [t.clone() for t in cache]
        present = cache if step["aliased"] else [torch.full_like(t, 0x5A if t.dtype == torch.uint8 else float("nan"))
                                                 for t in cache]
        workspace_bytes, ws = _workspace(lib, case, inputs, [y, *present], dev)
        launches = _launch(lib, case["op"], case["fields"], inputs, [y, *present], ws, mode, triton_lib)
        differ = sum(int((got.cpu() != want).sum()) for got, want in zip(present, step["expected_cache"]))
        if not step["aliased"]:  # the past the runtime still holds is not the op's to write
            differ += sum(int((got != was).sum()) for got, was in zip(cache, before))
        err = float((y.cpu() - step["expected"]).abs().max()) if y.numel() else 0.0
        lines.append({"seq": step["expected"].shape[1], "lengths": step["lengths"], "aliased": step["aliased"],
                      "cache_differ": differ, "y_err": err, "atol": step["atol"], "workspace": workspace_bytes,
                      "launches": launches, "policy": step["policy"]})
        if "kernel_expected" in step:  # the prefill kernel's own arithmetic: held to it in record mode only
            d = (y.cpu() - step["kernel_expected"]).abs()
            share = float((d > step["kernel_atol"]).float().mean())
            lines[-1].update(kernel_err=float(d.max()), kernel_share=share, kernel_checked=mode == "record",
                             kernel_ok=share <= step["kernel_share"] and float(d.max()) <= step["kernel_flip_atol"],
                             kernel_atol=step["kernel_atol"])
        launched += launches or []
        policy += step["policy"]
        cache = present  # the next call's past is this one's present, as a runtime binds them
    return {"case": case["case"], "differ": sum(s["cache_differ"] for s in lines),
            "outputs": sum(s["seq"] for s in lines),
            "over_tolerance": sum(not s["y_err"] <= s["atol"] or (s.get("kernel_checked", False) and not s["kernel_ok"])
                                  for s in lines),
            "max_err_over_atol": max(s["y_err"] / s["atol"] for s in lines), "steps": lines,
            "launches": launched if mode == "record" else None, "policy": policy}


def _detail(line: dict) -> str:
    if line.get("refused"):
        return line["refused"]
    if "steps" in line:
        text = (f"{len(line['steps'])} steps, {line['differ']} cache bytes differ, "
                f"{line['over_tolerance']} beyond Y's tolerance (worst err/atol {line['max_err_over_atol']:.3g}")
        kernel = [s for s in line["steps"] if "kernel_err" in s]
        text += (f"; against the prefill kernel's arithmetic: {100 * max(s['kernel_share'] for s in kernel):.2f} % "
                 f"beyond 2^-17 max|V|, at most {max(s['kernel_err'] / s['kernel_atol'] for s in kernel):.3g} x 2^-17 "
                 "max|V|)") if kernel else ")"
    else:
        text = f"{line['differ']} of {line['outputs']} differ"
    if line.get("launches") is not None and line["launches"] != line["policy"]:
        text += f"; launched {line['launches']}, the Python policy launches {line['policy']}"
    return text


def is_bad(line: dict) -> bool:
    """Not exact (or, for a sequence, Y beyond its tolerance), or, in record mode, launches other than
    the Python policy's (the C++ policy follows launch.py / kv_launch.py)."""
    return (line["differ"] != 0 or line.get("over_tolerance", 0) != 0
            or (line.get("launches") is not None and line["launches"] != line["policy"]))


def main(argv=None) -> int:
    args = parse_args(argv)
    bad = problem(args)
    if bad:
        print(f"error: {bad}")
        return 1
    import torch

    from resq_export.native import triton as T
    from resq_export.native.triton import OpLibrary, OpRefused

    cases = [case for path in args.cases for case in torch.load(path, weights_only=True)]
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
        bad = is_bad(line)
        failed += bad
        report["cases"].append(line)
        print(f"{'BAD' if bad else 'ok '} {case['op']} {case['case']}: {_detail(line)}", flush=True)
    print(f"{len(cases)} cases through {lib.route} ({args.mode}); {failed} not exact")
    report["failed"] = failed
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
