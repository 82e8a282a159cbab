"""A safetensors writer that streams: tensors (or blocks of rows of one tensor) are produced and written
one at a time, so a file larger than memory can be written, and the bytes are the same however the
rows were produced. Files are written under a temporary name, fsynced, then renamed (atomic).

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON
header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with spaces to a multiple
of 8, then the raw little-endian tensor bytes in header order.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .fileio import atomic_file

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


@dataclass
class Entry:
    """One tensor to write: its name, dtype and shape up front, its data from `blocks()` (row blocks
    in order, or the whole tensor)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    blocks: Callable[[], Iterable[torch.Tensor]]

    @classmethod
    def of(cls, name: str, t: torch.Tensor) -> Entry:
        return cls(name, t.dtype, tuple(t.shape), lambda: [t])

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def write_safetensors(path: Path, entries: list[Entry], metadata: dict[str, str] | None = None) -> None:
    """Write `entries` (in this order) to `path` atomically."""
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for e in entries:
        if e.name in header:
            raise ValueError(f"duplicate tensor name {e.name}")
        header[e.name] = {"dtype": _DTYPES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_file(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for e in entries:
            written = 0
            for block in e.blocks():
                if block.dtype != e.dtype:
                    raise ValueError(f"{e.name}: block dtype {block.dtype}, declared {e.dtype}")
                data = block.contiguous().reshape(-1).view(torch.uint8).numpy()
                f.write(data)
                written += data.nbytes
            if written != e.nbytes:
                raise ValueError(f"{e.name}: wrote {written} bytes, its shape needs {e.nbytes}")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomic save of an in-memory dict (sorted by name, so the bytes depend only on the contents)."""
    write_safetensors(path, [Entry.of(k, tensors[k]) for k in sorted(tensors)], metadata)


ROW_BLOCK = 8192  # rows of an embedding-sized matrix read or transformed at once (bounds their memory)


def row_blocks(rows: int, block: int = ROW_BLOCK) -> list[tuple[int, int]]:
    """[start, stop) of consecutive blocks of `block` rows covering `rows`."""
    return [(a, min(a + block, rows)) for a in range(0, rows, block)]


class SafetensorsFile:
    """Reads tensors, or blocks of rows of one tensor, with positional reads of just their bytes.

    Not memory-mapped on purpose: pages of a mapping stay in the process's resident set while the
    file is open, so a streaming pass over a 16 GB model would show (and, under memory pressure,
    compete with) 16 GB of RSS. Plain reads go through the page cache, which the kernel can drop."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short for a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError(f"implausible safetensors header length {n}")
            header = json.loads(f.read(n))
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        dtypes = {v: k for k, v in _DTYPES.items()}
        self._index = {}
        for name, info in header.items():
            self._index[name] = (dtypes[info["dtype"]], tuple(info["shape"]), *info["data_offsets"])
        # A cut-off file is refused now, not when its last tensor is read hours into a run.
        end = max((entry[3] for entry in self._index.values()), default=0)
        size = self.path.stat().st_size
        if size < self._data_start + end:
            raise ValueError(f"truncated: {size} bytes where its header needs {self._data_start + end}")

    def names(self) -> list[str]:
        return list(self._index)

    def dtype(self, name: str) -> torch.dtype:
        return self._index[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._index[name][1]

    def _read(self, start: int, nbytes: int) -> bytearray:
        buf = bytearray(nbytes)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + start)
            if f.readinto(buf) != nbytes:
                raise ValueError(f"{self.path} is truncated")
        return buf

    def get(self, name: str) -> torch.Tensor:
        dtype, shape, a, b = self._index[name]
        return self._tensor(self._read(a, b - a), dtype, shape)

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        dtype, shape, a, _ = self._index[name]
        stop = min(stop, shape[0])
        row = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
        return self._tensor(self._read(a + start * row, (stop - start) * row), dtype, (stop - start, *shape[1:]))

    @staticmethod
    def _tensor(buf: bytearray, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if not buf:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)
