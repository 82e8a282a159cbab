"""ctypes access to libresq_triton.so (plugins/common/triton_loader.h): the embedded Triton kernels
and their metadata, the loader's choice of cubin per SM, the launch seam's recording launcher, and
the ops' TensorRT-free layer (plugins/common/triton_op_call.h: resq_op_check / resq_op_enqueue, the
code the TensorRT plugins adapt). Needs no GPU and no driver; only listing, checking and recording
are meant to run here."""

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


# --- the ops' TensorRT-free layer (triton_op_call.h) ---

MAX_DIMS = 8  # RESQ_MAX_TENSOR_DIMS
_DTYPES = {"torch.float32": b"float32", "torch.int8": b"int8", "torch.int32": b"int32", "torch.uint8": b"uint8",
           "torch.float16": b"float16"}


class TensorDescC(ctypes.Structure):
    """Mirror of ResQTensorDesc."""
    _fields_ = [("nb_dims", ctypes.c_int32), ("dims", ctypes.c_int64 * MAX_DIMS), ("dtype", ctypes.c_char_p)]


class OpCallC(ctypes.Structure):
    """Mirror of ResQOpCall."""
    _fields_ = [("op", ctypes.c_char_p), ("n_fields", ctypes.c_int32), ("field_names", ctypes.POINTER(ctypes.c_char_p)),
                ("field_values", ctypes.POINTER(ctypes.c_int32)), ("nb_in", ctypes.c_int32),
                ("inputs", ctypes.POINTER(TensorDescC)), ("nb_out", ctypes.c_int32),
                ("outputs", ctypes.POINTER(TensorDescC))]


class OpRefused(Exception):
    """The layer (or the plugin) refused the node: its message."""


def _descs(tensors) -> ctypes.Array:
    out = (TensorDescC * max(len(tensors), 1))()
    for d, t in zip(out, tensors):
        d.nb_dims = t.dim()
        for i, size in enumerate(t.shape):
            d.dims[i] = size
        d.dtype = _DTYPES[str(t.dtype)]
    return out


class OpLibrary:
    """resq_op_check / resq_op_enqueue of libresq_triton.so at `triton`, or the same two calls of a
    harness library that drives libresq_plugins.so's creators (harness_check / harness_enqueue: the
    tests' plugin_enqueue_harness.cpp, built where TensorRT headers are). Tensors are torch tensors
    (host ones with the recording launcher, CUDA ones with the real one)."""

    def __init__(self, triton: Path, harness: Path | None = None):
        # the instance whose process-wide launcher the recording installs; the plugin library links it
        self.triton = ctypes.CDLL(str(triton), mode=ctypes.RTLD_GLOBAL)
        self.triton.resq_triton_last_error.restype = ctypes.c_char_p
        lib, prefix = (ctypes.CDLL(str(harness)), "harness") if harness else (self.triton, "resq_op")
        self._check, self._enqueue = getattr(lib, f"{prefix}_check"), getattr(lib, f"{prefix}_enqueue")
        self._check.argtypes = [ctypes.POINTER(OpCallC), ctypes.POINTER(ctypes.c_size_t)]
        self._enqueue.argtypes = [ctypes.POINTER(OpCallC), ctypes.POINTER(ctypes.c_void_p),
                                  ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self._message = lib.harness_last_error if harness else self.triton.resq_triton_last_error
        self._message.restype = ctypes.c_char_p
        self.route = "plugin creator (harness)" if harness else "resq_op_enqueue"

    @staticmethod
    def _call(op: str, fields: dict[str, int], inputs, outputs):
        names = (ctypes.c_char_p * max(len(fields), 1))(*(k.encode() for k in fields))
        values = (ctypes.c_int32 * max(len(fields), 1))(*fields.values())
        ins, outs = _descs(inputs), _descs(outputs)
        call = OpCallC(op.encode(), len(fields), names, values, len(inputs), ins, len(outputs), outs)
        return call, (names, values, ins, outs)  # the arrays live as long as the call is used

    def check(self, op: str, fields: dict[str, int], inputs, outputs) -> int:
        """The workspace bytes the node needs; OpRefused with the message when refused."""
        call, keep = self._call(op, fields, inputs, outputs)
        size = ctypes.c_size_t(0)
        if self._check(ctypes.byref(call), ctypes.byref(size)) != 0:
            raise OpRefused(self._message().decode())
        return size.value

    def enqueue(self, op: str, fields: dict[str, int], inputs, outputs, workspace=None, stream: int | None = None):
        """The launches on `stream` (a cudaStream_t as an int; None with the recording launcher)."""
        call, keep = self._call(op, fields, inputs, outputs)
        ins = (ctypes.c_void_p * len(inputs))(*(t.data_ptr() for t in inputs))
        outs = (ctypes.c_void_p * len(outputs))(*(t.data_ptr() for t in outputs))
        ws, size = (None, 0) if workspace is None else (workspace.data_ptr(), workspace.numel())
        if self._enqueue(ctypes.byref(call), ins, outs, ws, size, stream) != 0:
            raise OpRefused(self._message().decode())
