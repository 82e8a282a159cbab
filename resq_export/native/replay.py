"""Executes launches recorded by libresq_triton.so's recording launcher (native/triton.py) with
Triton's interpreter: each pointer argument becomes a view of the host tensor it points into, each
scalar is unpacked by its Triton type. The process must have been started with TRITON_INTERPRET=1
(Triton decides at import whether @triton.jit functions are interpreted)."""

from __future__ import annotations

import os
import struct

import torch

from .triton import Launch

_POINTEE = {"i8": torch.int8, "u8": torch.uint8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
            "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
_SCALAR = {"i1": "?", "i8": "b", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "i64": "q", "u64": "Q",
           "fp32": "f", "fp64": "d"}


class ReplayError(Exception):
    pass


def _view(address: int, pointee: str, buffers: list[torch.Tensor]) -> torch.Tensor:
    """The part of the buffer holding `address` from there to its end, as the pointee's dtype."""
    for buf in buffers:
        start = buf.data_ptr()
        end = start + buf.numel() * buf.element_size()
        if start <= address < end:
            dtype = _POINTEE[pointee]
            raw = buf.reshape(-1).view(torch.uint8)[address - start:]
            size = torch.empty((), dtype=dtype).element_size()
            return raw[: raw.numel() // size * size].view(dtype)
    raise ReplayError(f"pointer {address:#x} is in none of the {len(buffers)} host buffers")


def decode(config, data: bytes, buffers: list[torch.Tensor]) -> list:
    """The launch's argument bytes as the interpreter's arguments, in the signature's order."""
    args, offset = [], 0
    for name, ty in config.signature.items():
        if ty == "constexpr":
            continue
        if ty.startswith("*"):
            (address,) = struct.unpack_from("<Q", data, offset)
            # a null pointer is an operand the launch does not read (an absent part, rank 0); the
            # interpreter still wants a tensor there
            args.append(_view(address, ty[1:], buffers) if address else torch.zeros(1, dtype=_POINTEE[ty[1:]]))
            offset += 8
        else:
            fmt = "<" + _SCALAR[ty]
            (value,) = struct.unpack_from(fmt, data, offset)
            args.append(value)
            offset += struct.calcsize(fmt)
    if offset != len(data):
        raise ReplayError(f"{config.name}: {len(data)} argument bytes recorded, the signature takes {offset}")
    return args


def replay(launches: list[Launch], configs, buffers: list[torch.Tensor]) -> None:
    """Runs each launch, in order, with the interpreter on the host buffers."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise ReplayError("replaying needs TRITON_INTERPRET=1 in the environment before triton is imported")
    by_name = {c.name: c for c in configs}
    for launch in launches:
        if launch.name not in by_name:
            raise ReplayError(f"no configuration named {launch.name}")
        config = by_name[launch.name]
        config.fn[launch.grid](*decode(config, launch.args, buffers), **config.constexprs)
