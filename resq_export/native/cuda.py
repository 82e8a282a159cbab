"""ctypes access to libresq_kernels.so (plugins/common/resq_kernels.h): device queries and the CUDA
error of the last call. It holds no kernel: every op runs as Triton cubins (native/seam.py,
kernels/launch.py and kv_launch.py)."""

from __future__ import annotations

import ctypes

from .loader import load


def _lib() -> ctypes.CDLL:
    lib = load("resq_kernels")
    lib.resq_cuda_last_error.restype = ctypes.c_char_p
    return lib


def device_sm() -> int:
    """major * 10 + minor of the current device, or a negative ResQStatus (no device: -4)."""
    return _lib().resq_cuda_device_sm()


def last_error() -> str:
    return _lib().resq_cuda_last_error().decode()
