"""ctypes access to the ops' TensorRT-free layer (plugins/common/triton_op_call.h): a node given by
its op, INT fields and tensors is checked (the creator, configurePlugin, getWorkspaceSize) and
enqueued by libresq_triton.so's resq_op_check / resq_op_enqueue, the code the TensorRT plugins adapt;
or, with a harness library (plugin_enqueue_harness.cpp, built where TensorRT headers are), by the
plugins themselves through their creators. Used by tools/op_enqueue_check.py and the tests."""

from __future__ import annotations

import ctypes
from pathlib import Path

MAX_DIMS = 8  # RESQ_MAX_TENSOR_DIMS
DTYPES = {"torch.float32": b"float32", "torch.int8": b"int8", "torch.int32": b"int32", "torch.uint8": b"uint8",
          "torch.float16": b"float16"}


class TensorDesc(ctypes.Structure):
    _fields_ = [("nb_dims", ctypes.c_int32), ("dims", ctypes.c_int64 * MAX_DIMS), ("dtype", ctypes.c_char_p)]


class OpCall(ctypes.Structure):
    _fields_ = [("op", ctypes.c_char_p), ("n_fields", ctypes.c_int32), ("field_names", ctypes.POINTER(ctypes.c_char_p)),
                ("field_values", ctypes.POINTER(ctypes.c_int32)), ("nb_in", ctypes.c_int32),
                ("inputs", ctypes.POINTER(TensorDesc)), ("nb_out", ctypes.c_int32),
                ("outputs", ctypes.POINTER(TensorDesc))]


class OpRefused(Exception):
    """The layer (or the plugin) refused the node: its message."""


def _descs(tensors) -> ctypes.Array:
    out = (TensorDesc * max(len(tensors), 1))()
    for d, t in zip(out, tensors):
        d.nb_dims = t.dim()
        for i, size in enumerate(t.shape):
            d.dims[i] = size
        d.dtype = DTYPES[str(t.dtype)]
    return out


class OpLibrary:
    """resq_op_check / resq_op_enqueue of libresq_triton.so at `triton`, or the same two calls of a
    harness library that drives libresq_plugins.so's creators (harness_check / harness_enqueue)."""

    def __init__(self, triton: Path, harness: Path | None = None):
        # the instance whose process-wide launcher the recording installs; the plugin library links it
        self.triton = ctypes.CDLL(str(triton), mode=ctypes.RTLD_GLOBAL)
        self.triton.resq_triton_last_error.restype = ctypes.c_char_p
        lib, prefix = (ctypes.CDLL(str(harness)), "harness") if harness else (self.triton, "resq_op")
        self._check, self._enqueue = getattr(lib, f"{prefix}_check"), getattr(lib, f"{prefix}_enqueue")
        self._check.argtypes = [ctypes.POINTER(OpCall), ctypes.POINTER(ctypes.c_size_t)]
        self._enqueue.argtypes = [ctypes.POINTER(OpCall), ctypes.POINTER(ctypes.c_void_p),
                                  ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self._message = lib.harness_last_error if harness else self.triton.resq_triton_last_error
        self._message.restype = ctypes.c_char_p
        self.route = "plugin creator (harness)" if harness else "resq_op_enqueue"

    @staticmethod
    def _call(op: str, fields: dict[str, int], inputs, outputs):
        names = (ctypes.c_char_p * max(len(fields), 1))(*(k.encode() for k in fields))
        values = (ctypes.c_int32 * max(len(fields), 1))(*fields.values())
        ins, outs = _descs(inputs), _descs(outputs)
        call = OpCall(op.encode(), len(fields), names, values, len(inputs), ins, len(outputs), outs)
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
