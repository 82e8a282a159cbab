"""The compiled-code checks of the embedded Triton cubins, read from their SASS (the cuobjdump that
the triton wheel carries) and their compiled metadata (triton_kernels.json: Triton's and ptxas -v's).
One function per rule, each returning what is wrong (empty when the cubin passes), so the tests can
show each rule failing on a planted cubin."""

from __future__ import annotations

import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path

# Shared memory a block may opt in to (dynamic + static), per target: the SM's shared memory minus
# the 1 KiB the driver reserves per block (CUDA programming guide's table of technical
# specifications per compute capability; NVIDIA CCCL cuda/__device/arch_traits.h):
# 164 - 1 KiB on sm_80, 100 - 1 on sm_86/89/120, 228 - 1 on sm_90.
OPTIN_SHARED = {"80": 163 * 1024, "86": 99 * 1024, "89": 99 * 1024, "90a": 227 * 1024, "120": 99 * 1024}
# TensorRT-RTX's targets (GeForce/RTX parts run FP64 at 1/64 rate; sm_80 is one of its targets too)
RTX_TARGETS = {"80", "86", "89", "120"}
TENSOR_CORE = re.compile(r"\b(IMMA|HMMA|IGMMA|HGMMA)\.")
# wgmma: the integer one of the linear (IGMMA), the fp16 / bf16 one of the prefill attention (HGMMA)
WGMMA = re.compile(r"\b(IGMMA|HGMMA)\.")
FP64 = re.compile(r"\b(DADD|DMUL|DFMA|DSETP|DMNMX)\b")


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@cache
def sass(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(_cuobjdump()), "-sass", f.name], capture_output=True, text=True, check=True).stdout


def spills(meta: dict) -> list[str]:
    """From the -v report of the ptxas run that made the cubin (compile_triton.py records it). A stack
    frame without spills is a local array, not register pressure, and passes."""
    n = meta["spill_stores"] + meta["spill_loads"]
    return [f"{meta['spill_stores']} bytes spill stores, {meta['spill_loads']} bytes spill loads"] if n else []


def shared_over_limit(meta: dict) -> list[str]:
    total, limit = meta["shared"] + meta["static_shared"], OPTIN_SHARED[meta["arch"]]
    return [f"{total} bytes of shared memory, sm_{meta['arch']} allows {limit}"] if total > limit else []


def no_tensor_cores(code: str) -> list[str]:
    return [] if TENSOR_CORE.search(code) else ["no IMMA/HMMA/IGMMA instruction"]


def no_wgmma(code: str) -> list[str]:
    return [] if WGMMA.search(code) else ["no wgmma (IGMMA/HGMMA) instruction"]


def no_fp16_mma(code: str, arch: str) -> list[str]:
    """The prefill attention's rule: its tl.dot on the fp16 / bf16 tensor cores, wgmma (HGMMA) on
    sm_90a, mma.sync (HMMA) elsewhere (no_tensor_cores takes any MMA, the integer ones too)."""
    mma = "HGMMA." if arch == "90a" else "HMMA."
    return [] if mma in code else [f"no {mma[:-1]} instruction"]


def fp64(code: str) -> list[str]:
    found = sorted(set(FP64.findall(code)))
    return [f"FP64 instructions {', '.join(found)}"] if found else []


def problems(cubin: bytes, meta: dict) -> list[str]:
    """Every rule that applies to one compiled (configuration, arch), `meta` its entry of
    triton_kernels.json: no spills, shared memory within the arch's opt-in limit, tensor cores where
    the kernel has a tl.dot, wgmma on sm_90a where the tile has BLOCK_M >= 64 (wgmma's M is 64), no
    FP64 on an RTX target."""
    code, arch = sass(cubin), meta["arch"]
    out = spills(meta) + shared_over_limit(meta)
    if meta["uses_dot"]:
        out += no_tensor_cores(code)
        if arch == "90a" and meta["constexprs"].get("BLOCK_M", 0) >= 64:
            out += no_wgmma(code)
    if arch in RTX_TARGETS:
        out += fp64(code)
    return out
