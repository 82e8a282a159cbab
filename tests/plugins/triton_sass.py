"""The compiled-code checks of the embedded Triton cubins, read from the SASS and the resource usage
with the cuobjdump that the triton wheel carries. One function per rule, each returning what is
wrong (empty when the cubin passes), so the tests can show each rule failing on a planted cubin."""

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
RTX_TARGETS = {"80", "86", "89", "120"}  # TensorRT-RTX's targets: FP64 at 1/64 rate there
TENSOR_CORE = re.compile(r"\b(IMMA|HMMA|IGMMA|HGMMA)\.")
WGMMA = re.compile(r"\bIGMMA\.")
FP64 = re.compile(r"\b(DADD|DMUL|DFMA|DSETP|DMNMX)\b")
LOCAL = re.compile(r"\b(LDL|STL)\b")


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@cache
def disassemble(cubin: bytes) -> tuple[str, dict]:
    """(SASS text, resource usage {REG, STACK, SHARED, LOCAL}) of one cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([str(_cuobjdump()), "-sass", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([str(_cuobjdump()), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    usage = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res)}
    return sass, usage


def spills(cubin: bytes) -> list[str]:
    sass, usage = disassemble(cubin)
    out = [f"{k} {usage[k]} bytes" for k in ("STACK", "LOCAL") if usage.get(k)]
    n = len(LOCAL.findall(sass))
    return out + ([f"{n} local-memory loads/stores (LDL/STL)"] if n else [])


def shared_over_limit(cubin: bytes, arch: str, dynamic_shared: int) -> list[str]:
    _, usage = disassemble(cubin)
    total = dynamic_shared + usage.get("SHARED", 0)
    return [f"{total} bytes of shared memory, sm_{arch} allows {OPTIN_SHARED[arch]}"] if total > OPTIN_SHARED[arch] else []


def no_tensor_cores(cubin: bytes) -> list[str]:
    return [] if TENSOR_CORE.search(disassemble(cubin)[0]) else ["no IMMA/HMMA/IGMMA instruction"]


def no_wgmma(cubin: bytes) -> list[str]:
    return [] if WGMMA.search(disassemble(cubin)[0]) else ["no wgmma (IGMMA) instruction"]


def fp64(cubin: bytes) -> list[str]:
    found = sorted(set(FP64.findall(disassemble(cubin)[0])))
    return [f"FP64 instructions {', '.join(found)}"] if found else []


def problems(cubin: bytes, arch: str, dynamic_shared: int, uses_dot: bool, block_m: int | None) -> list[str]:
    """Every rule that applies to one embedded (configuration, arch): no spills, shared memory within
    the arch's opt-in limit, tensor cores where the kernel has a tl.dot, wgmma on sm_90a where the
    tile has BLOCK_M >= 64 (wgmma's M is 64), no FP64 on an RTX target."""
    out = spills(cubin) + shared_over_limit(cubin, arch, dynamic_shared)
    if uses_dot:
        out += no_tensor_cores(cubin)
        if arch == "90a" and (block_m or 0) >= 64:
            out += no_wgmma(cubin)
    if arch in RTX_TARGETS:
        out += fp64(cubin)
    return out
