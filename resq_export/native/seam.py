"""launch.py's launches (resq_export.kernels.launch._run: kernel, grid, arguments, tile) sent through
libresq_triton.so's launch seam instead of Triton's own launcher, which is what the C++ plugins do:
the arguments are packed into the bytes the cubin takes, by the configuration's signature, and the
loader checks them against the embedded metadata (count, sizes, the divisibility the cubin assumes).

mode "record" (CPU, TRITON_INTERPRET=1): the recording launcher keeps each launch and the record is
executed at once by the interpreter on the host tensors (replay.py), so the bytes, not the Python
objects, drive the kernel. mode "cuda" (a GPU): the CUDA launcher runs the embedded cubin on the
tensors' device, on torch's current stream."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

from . import triton as T

_PACK = {"i1": "?", "i8": "b", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "i64": "q", "u64": "Q",
         "fp32": "f", "fp64": "d"}


def _pointer_types() -> dict:
    import torch

    return {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.int8: "*i8",
            torch.uint8: "*u8", torch.int32: "*i32", torch.int64: "*i64", torch.float64: "*fp64"}


class _LazyTypes(dict):
    def get(self, key, default=None):  # torch is imported on first use, not with this module
        if not self:
            self.update(_pointer_types())
        return super().get(key, default)


_POINTER = _LazyTypes()


class SeamRunner:
    def __init__(self, configs, mode: str = "record", path: Path | None = None, sm: tuple[int, int] = (8, 9)):
        if mode not in ("record", "cuda"):
            raise ValueError(f"mode {mode!r}: record or cuda")
        self.configs, self.mode, self.path, self.sm = list(configs), mode, path, sm
        self.launches: Counter[str] = Counter()

    @staticmethod
    def _pointer_types_match(config, args) -> bool:
        """Variants of one kernel differ by constexprs or by their pointers' element types (the
        _f16/_bf16 configurations): a tensor argument must have its pointer's type."""
        types = [t for t in config.signature.values() if t != "constexpr"]
        return all(not (t.startswith("*") and hasattr(a, "dtype")) or _POINTER.get(a.dtype) == t
                   for t, a in zip(types, args))

    def config_of(self, kernel, constexprs: dict, warps: int, stages: int, args=()):
        same = [c for c in self.configs if c.fn is kernel and c.constexprs == constexprs]
        # the variant whose pointer types are the tensors'; else the one variant there is (a pointer the
        # launch leaves unused may have another type, e.g. y of the split decode GEMM)
        typed = [c for c in same if self._pointer_types_match(c, args)]
        for c in typed or (same if len(same) == 1 else []):
                if (c.num_warps, c.num_stages) != (warps, stages):
                    raise ValueError(f"{c.name}: launched with {warps} warps / {stages} stages, compiled with "
                                     f"{c.num_warps} / {c.num_stages}")
                return c
        name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", kernel)
        raise ValueError(f"no compiled configuration of {name} with {constexprs}")

    @staticmethod
    def pack(config, args) -> list[bytes]:
        types = [t for t in config.signature.values() if t != "constexpr"]
        if len(types) != len(args):
            raise ValueError(f"{config.name}: {len(args)} arguments, the signature has {len(types)}")
        out = []
        for ty, value in zip(types, args):
            if ty.startswith("*"):
                out.append(struct.pack("<Q", 0 if value is None else value.data_ptr()))
            else:
                out.append(struct.pack("<" + _PACK[ty], value))
        return out

    def __call__(self, kernel, grid, args, tile, **constexprs):
        consts, warps, stages = tile
        config = self.config_of(kernel, {**consts, **constexprs}, warps, stages, args)
        packed = self.pack(config, args)
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        self.launches[config.name] += 1
        if self.mode == "cuda":
            import torch

            T.launch(config.name, grid, packed, self.path, stream=torch.cuda.current_stream().cuda_stream)
            return
        from .replay import replay

        with T.recording(*self.sm, path=self.path) as records:
            T.launch(config.name, grid, packed, self.path)
        buffers = [a for a in args if hasattr(a, "data_ptr")]
        replay(records, self.configs, buffers)
