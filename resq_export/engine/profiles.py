"""Optimisation profiles of the exported decoder: one for prefill (many tokens), one for decode (one
token), both over a cache buffer of up to max_context rows that the caller allocates once and the
engine updates in place. Pure: reads the ONNX inputs' symbolic dimension names."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import ConfigError
from ..export.spec import CACHE_DIM

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineLimits:
    max_batch: int = 1
    max_sequence: int = 2048  # prompt tokens in one prefill call
    max_context: int = 4096  # the cache's capacity: past + new tokens of any call
    opt_sequence: int = 512
    opt_context: int = 1024

    def __post_init__(self) -> None:
        # named as the flags of `resq-export engine` (max_*) and, for Python callers, the fields (opt_*)
        problems = [f"{name} {value} must be >= {low}" for name, value, low in (
            ("--max-batch", self.max_batch, 1), ("--max-sequence", self.max_sequence, 1),
            ("--max-context", self.max_context, 2), ("opt_sequence", self.opt_sequence, 1),
            ("opt_context", self.opt_context, 2)) if value < low]
        if problems:
            raise ConfigError("engine limits: " + "; ".join(problems) + " (sizes at least 1, contexts at least 2: "
                              "one past token and the new one)")
        if self.opt_sequence > self.max_sequence or self.opt_context > self.max_context:
            raise ConfigError(f"engine limits: opt_sequence {self.opt_sequence} / opt_context {self.opt_context} "
                              f"exceed --max-sequence {self.max_sequence} / --max-context {self.max_context}")
        if self.max_sequence > self.max_context:
            raise ConfigError(f"engine limits: --max-sequence {self.max_sequence} exceeds --max-context "
                              f"{self.max_context}: a prefill call writes its tokens into the cache")


def _ranges(limits: EngineLimits) -> dict[str, dict[str, tuple[int, int, int]]]:
    """(min, opt, max) of every symbolic dimension the exporter writes, per profile."""
    b = (1, 1, limits.max_batch)
    return {
        "prefill": {"batch": b, "sequence": (1, limits.opt_sequence, limits.max_sequence),
                    CACHE_DIM: (1, limits.opt_context, limits.max_context)},
        "decode": {"batch": b, "sequence": (1, 1, 1), CACHE_DIM: (2, limits.opt_context, limits.max_context)},
    }


def profile_shapes(model: onnx.ModelProto, limits: EngineLimits) -> dict[str, dict[str, tuple[Shape, Shape, Shape]]]:
    """profile name -> input name -> (min, opt, max) shapes."""
    out: dict[str, dict[str, tuple[Shape, Shape, Shape]]] = {}
    initializers = {i.name for i in model.graph.initializer}
    for profile, ranges in _ranges(limits).items():
        shapes = {}
        for inp in model.graph.input:
            if inp.name in initializers:
                continue
            mins, opts, maxs = [], [], []
            for dim in inp.type.tensor_type.shape.dim:
                if dim.dim_param:
                    if dim.dim_param not in ranges:
                        raise ConfigError(f"input {inp.name}: unknown dynamic dimension {dim.dim_param!r}")
                    lo, opt, hi = ranges[dim.dim_param]
                elif dim.dim_value > 0:
                    lo = opt = hi = dim.dim_value
                else:
                    raise ConfigError(f"input {inp.name}: a dimension with neither a size nor a name")
                mins.append(lo)
                opts.append(opt)
                maxs.append(hi)
            shapes[inp.name] = (tuple(mins), tuple(opts), tuple(maxs))
        out[profile] = shapes
    return out
