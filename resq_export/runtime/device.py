"""Device memory and the stream for the TensorRT backend, behind one tiny interface so the binding
logic never touches a CUDA API itself: `alloc` (a zeroed buffer; its `.ptr` is what TensorRT is
given), `upload` / `download` (host numpy <-> buffer, ordered on `stream`), `synchronize`,
`used_bytes` (device memory in use). Two well-kept libraries provide it: torch's CUDA tensors
where torch has CUDA, else cuda-python's runtime bindings (`cuda.bindings`, an optional import);
HostMemory (plain host arrays at their addresses) stands in for them in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TensorRTMissing


@dataclass
class Buffer:
    ptr: int  # the address bound to TensorRT
    nbytes: int
    owner: Any  # what keeps the memory alive (a tensor, an array, a cuda-python pointer)


class HostMemory:
    """Host arrays at their addresses: what a stand-in execution context reads and writes in tests."""

    stream = 0
    name = "host"

    def alloc(self, nbytes: int) -> Buffer:
        array = np.zeros(max(nbytes, 1), np.uint8)
        return Buffer(array.ctypes.data, nbytes, array)

    def upload(self, buf: Buffer, array: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        buf.owner[offset:offset + raw.size] = raw

    def download(self, buf: Buffer, dtype, count: int, offset: int = 0) -> np.ndarray:
        n = count * np.dtype(dtype).itemsize
        return buf.owner[offset:offset + n].copy().view(dtype)

    def synchronize(self) -> None:
        pass

    def used_bytes(self) -> int | None:
        return None


class TorchMemory:
    """torch CUDA tensors (uint8) on one torch stream."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self._stream = torch.cuda.Stream()
        self.stream = self._stream.cuda_stream

    def alloc(self, nbytes: int) -> Buffer:
        t = self.torch.zeros(max(nbytes, 1), dtype=self.torch.uint8, device="cuda")
        self.torch.cuda.synchronize()  # zeroed on the default stream before our stream uses it
        return Buffer(t.data_ptr(), nbytes, t)

    def upload(self, buf: Buffer, array: np.ndarray, offset: int = 0) -> None:
        raw = self.torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
        with self.torch.cuda.stream(self._stream):
            buf.owner[offset:offset + raw.numel()].copy_(raw)

    def download(self, buf: Buffer, dtype, count: int, offset: int = 0) -> np.ndarray:
        n = count * np.dtype(dtype).itemsize
        with self.torch.cuda.stream(self._stream):
            out = buf.owner[offset:offset + n].cpu()  # synchronous on this stream
        return out.numpy().view(dtype)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def used_bytes(self) -> int | None:
        free, total = self.torch.cuda.mem_get_info()
        return total - free


class CudaPythonMemory:
    """cuda-python's runtime bindings (`pip install cuda-python`): cudaMalloc'd buffers, one stream."""

    name = "cuda-python"

    def __init__(self):
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.stream = int(self._ok(cudart.cudaStreamCreate(), "cudaStreamCreate"))

    def _ok(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, nbytes: int) -> Buffer:
        ptr = self._ok(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
        self._ok(self.rt.cudaMemsetAsync(ptr, 0, max(nbytes, 1), self.stream), "cudaMemsetAsync")
        return Buffer(int(ptr), nbytes, ptr)

    def upload(self, buf: Buffer, array: np.ndarray, offset: int = 0) -> None:
        host = np.ascontiguousarray(array)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(buf.ptr + offset, host.ctypes.data, host.nbytes, kind, self.stream),
                 "cudaMemcpyAsync")
        self.synchronize()  # the host array may go as soon as this returns

    def download(self, buf: Buffer, dtype, count: int, offset: int = 0) -> np.ndarray:
        out = np.empty(count, dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(out.ctypes.data, buf.ptr + offset, out.nbytes, kind, self.stream),
                 "cudaMemcpyAsync")
        self.synchronize()
        return out

    def synchronize(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def used_bytes(self) -> int | None:
        free, total = self._ok(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return total - free


def device_memory():
    """torch's CUDA where torch has it, else cuda-python; TensorRTMissing naming both when neither."""
    try:
        import torch

        if torch.cuda.is_available():
            return TorchMemory()
    except ImportError:
        pass
    try:
        return CudaPythonMemory()
    except ImportError:
        raise TensorRTMissing("running a TensorRT plan needs device memory from torch with CUDA or from cuda-python "
                              "(`pip install cuda-python`): neither is available here") from None
