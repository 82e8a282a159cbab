"""ctypes access to libresq_triton.so (plugins/common/triton_loader.h): the embedded Triton kernels
and their metadata, the loader's choice of cubin per SM, and the launch seam's recording launcher.
Needs no GPU and no driver; only listing and recording are meant to run here."""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .loader import load


class TritonKernelC(ctypes.Structure):
    """Mirror of ResQTritonKernel (triton_table.h)."""
    _fields_ = [("name", ctypes.c_char_p), ("arch", ctypes.c_char_p), ("sm", ctypes.c_int32),
                ("arch_specific", ctypes.c_int32), ("kernel", ctypes.c_char_p), ("num_warps", ctypes.c_int32),
                ("shared", ctypes.c_int32), ("static_shared", ctypes.c_int32), ("registers", ctypes.c_int32),
                ("num_params", ctypes.c_int32), ("params", ctypes.c_char_p), ("cubin", ctypes.c_void_p),
                ("cubin_bytes", ctypes.c_size_t), ("sha256", ctypes.c_char_p), ("constexprs", ctypes.c_char_p)]


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # Triton's: "*i8", "i32", "fp32", ...
    div16: bool  # the cubin was compiled assuming it divisible by 16


@dataclass(frozen=True)
class EmbeddedKernel:
    name: str
    arch: str
    sm: int
    arch_specific: bool
    kernel: str
    num_warps: int
    shared: int
    static_shared: int
    registers: int
    params: tuple[Param, ...]  # the two trailing scratch pointers included
    cubin: bytes
    sha256: str
    constexprs: dict[str, int]


@dataclass(frozen=True)
class Launch:
    """One recorded launch: the configuration's name, the grid, the arguments' bytes in order."""
    name: str
    grid: tuple[int, int, int]
    args: bytes


def _lib(path: Path | None = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path)) if path is not None else load("resq_triton")
    lib.resq_triton_kernel.restype = ctypes.POINTER(TritonKernelC)
    lib.resq_triton_versions.restype = ctypes.c_char_p
    lib.resq_triton_policy.restype = ctypes.c_char_p
    lib.resq_triton_last_error.restype = ctypes.c_char_p
    lib.resq_triton_record_begin.restype = ctypes.c_void_p
    lib.resq_triton_record_count.argtypes = [ctypes.c_void_p]
    lib.resq_triton_record_end.argtypes = [ctypes.c_void_p]
    lib.resq_triton_record_get.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                           ctypes.POINTER(ctypes.c_uint * 3), ctypes.POINTER(ctypes.c_void_p),
                                           ctypes.POINTER(ctypes.c_size_t)]
    lib.resq_triton_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_uint32), ctypes.c_int]
    return lib


def _params(text: str) -> tuple[Param, ...]:
    out = []
    for item in text.split(","):
        name, _, ty = item.partition(":")
        out.append(Param(name, ty.removesuffix("/16"), ty.endswith("/16")))
    return tuple(out)


def kernels(path: Path | None = None) -> list[EmbeddedKernel]:
    """Every embedded (configuration, arch) row, its cubin's bytes read out of the library."""
    lib = _lib(path)
    out = []
    for i in range(lib.resq_triton_kernel_count()):
        k = lib.resq_triton_kernel(i).contents
        out.append(EmbeddedKernel(k.name.decode(), k.arch.decode(), k.sm, bool(k.arch_specific), k.kernel.decode(),
                                  k.num_warps, k.shared, k.static_shared, k.registers, _params(k.params.decode()),
                                  ctypes.string_at(k.cubin, k.cubin_bytes), k.sha256.decode(),
                                  {n: int(v) for n, v in (c.split("=") for c in k.constexprs.decode().split(",") if c)}))
    return out


def prepare(device: int = 0, path: Path | None = None) -> None:
    """Loads every embedded kernel that has a cubin for the device's SM (a GPU tool's start-up)."""
    lib = _lib(path)
    status = lib.resq_triton_prepare(device)
    if status != 0:
        raise RuntimeError(f"status {status}: {lib.resq_triton_last_error().decode()}")


def versions(path: Path | None = None) -> str:
    """"triton X; ptxas Y" of the build that compiled the embedded cubins."""
    return _lib(path).resq_triton_versions().decode()


def policy(path: Path | None = None) -> dict[str, int]:
    """The launch policy's integers compiled in with the cubins (launch.py's upper-case constants)."""
    text = _lib(path).resq_triton_policy().decode()
    return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def select(name: str, major: int, minor: int, path: Path | None = None) -> str:
    """The arch of the cubin the loader runs on SM major.minor; ValueError with the loader's message."""
    lib = _lib(path)
    index = lib.resq_triton_select(name.encode(), major, minor)
    if index < 0:
        raise ValueError(lib.resq_triton_last_error().decode())
    return lib.resq_triton_kernel(index).contents.arch.decode()


def launch(name: str, grid, args: list[bytes], path: Path | None = None, stream: int | None = None) -> None:
    """One launch through the library's process-wide launcher (the recorder inside `recording`, else
    the CUDA one on `stream`, a cudaStream_t as an int)."""
    lib = _lib(path)
    buffers = [ctypes.create_string_buffer(a, len(a)) for a in args]
    values = (ctypes.c_void_p * len(args))(*(ctypes.cast(b, ctypes.c_void_p) for b in buffers))
    sizes = (ctypes.c_uint32 * len(args))(*(len(a) for a in args))
    g = tuple(grid) + (1,) * (3 - len(grid))
    status = lib.resq_triton_launch(name.encode(), g[0], g[1], g[2], stream, values, sizes, len(args))
    if status != 0:
        raise ValueError(f"status {status}: {lib.resq_triton_last_error().decode()}")


@contextmanager
def recording(sm_major: int = 8, sm_minor: int = 9, path: Path | None = None):
    """Installs the recording launcher for the block; yields a list that holds its Launch records
    once the block ends."""
    lib = _lib(path)
    recorder = lib.resq_triton_record_begin(sm_major, sm_minor)
    records: list[Launch] = []
    try:
        yield records
    finally:
        for i in range(lib.resq_triton_record_count(recorder)):
            name, grid = ctypes.c_char_p(), (ctypes.c_uint * 3)()
            args, size = ctypes.c_void_p(), ctypes.c_size_t()
            lib.resq_triton_record_get(recorder, i, ctypes.byref(name), ctypes.byref(grid), ctypes.byref(args),
                                       ctypes.byref(size))
            records.append(Launch(name.value.decode(), tuple(grid), ctypes.string_at(args, size.value)))
        lib.resq_triton_record_end(recorder)
