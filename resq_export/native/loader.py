"""Finding and loading the native libraries; the shapes of a linear and a KV cache as C structs."""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

from ..errors import NativeError
from ..export.spec import check_abi
from ..layout import LinearLayout
from .params import KVShape, LinearLayoutC, LinearShape

ENV_DIR = "RESQ_NATIVE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / "build" / "plugins"
ABI_FUNCTIONS = {"resq_cpu_ref": "resq_abi_version", "resq_kernels": "resq_cuda_abi_version",
                 "resq_triton": "resq_triton_abi_version"}


def library_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def library_path(name: str) -> Path:
    return library_dir() / f"lib{name}.so"


@cache
def load(name: str) -> ctypes.CDLL:
    path = library_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: build it with `cmake -S {REPO_ROOT} -B {REPO_ROOT / 'build'} && "
            f"cmake --build {REPO_ROOT / 'build'}` (or set {ENV_DIR})")
    lib = ctypes.CDLL(str(path))
    if name in ABI_FUNCTIONS:
        check_abi(path, getattr(lib, ABI_FUNCTIONS[name], None))
    return lib


def check(function: str, code: int) -> None:
    if code != 0:
        raise NativeError(function, code)


def linear_shape(layout: LinearLayout) -> LinearShape:
    """The C description of a quantised linear's groups (LinearLayout.op_parts)."""
    p = layout.op_parts()
    return LinearShape(p.k, p.k_low, p.low_groups, p.high_groups, p.a_bits_low, p.a_bits_high)


def kv_row_bytes(shape: KVShape) -> int:
    """Bytes of one cached K/V row of this shape, as the C layout computes them (resq_layout.h)."""
    n = load("resq_cpu_ref").resq_kv_row_bytes_of(ctypes.byref(shape))
    check("resq_kv_row_bytes_of", max(-n, 0))
    return n


def kv_cache_shapes(shape: KVShape, capacity: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of one cached tensor's codes and of its scales (= its zero points) at this capacity:
    [B, Hkv, L, C] and [B, Hkv, L, G], G = 2 with a high group, else 1 (resq_kv_groups)."""
    lead = (shape.batch, shape.num_kv_heads, capacity)
    return (*lead, kv_row_bytes(shape)), (*lead, 2 if shape.high_channels else 1)


def layout_of(shape: LinearShape) -> LinearLayoutC:
    out = LinearLayoutC()
    check("resq_layout_of", load("resq_cpu_ref").resq_layout_of(ctypes.byref(shape), ctypes.byref(out)))
    return out
