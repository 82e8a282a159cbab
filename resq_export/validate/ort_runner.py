"""ONNX Runtime execution of an exported folder, with the (quantised) KV cache carried between calls."""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..export.spec import CACHE_DIM, PAST_LENGTH
from ..export.folder import ORT_FILE, check_onnx_folder


def empty_cache(inputs: dict[str, tuple[list, bool]], batch: int, capacity: int) -> dict[str, np.ndarray]:
    """Zero-filled cache buffers for graph inputs name -> (dims, uint8?): a dim is an int or a symbol,
    "batch" becoming `batch` and the cache's (graph.CACHE_DIM) `capacity` rows."""
    def size(d) -> int:
        if isinstance(d, int):
            return d
        if d not in ("batch", CACHE_DIM):
            raise ArtifactError(f"the graph's cache input has the dimension {d!r}: re-export it with this version")
        return batch if d == "batch" else capacity
    return {name: np.zeros([size(d) for d in dims], np.uint8 if is_uint8 else np.float32)
            for name, (dims, is_uint8) in inputs.items()}


@dataclass
class OrtCache:
    """The KV cache between calls: the graph's past.* buffers (capacity rows each) and how many rows
    each sequence has filled."""

    tensors: dict[str, np.ndarray]
    lengths: np.ndarray  # [batch] int32

    @property
    def capacity(self) -> int:
        return next(iter(self.tensors.values())).shape[2]

    def feeds(self, seq: int) -> dict[str, np.ndarray]:
        """The cache's graph inputs for a call of `seq` new tokens per sequence."""
        if int(self.lengths.max()) + seq > self.capacity:
            raise ConfigError(f"{int(self.lengths.max())} cached and {seq} new tokens exceed the cache's capacity "
                              f"of {self.capacity}: allocate a larger cache")
        return {**self.tensors, PAST_LENGTH: self.lengths}

    def advanced(self, present: dict[str, np.ndarray], seq: int) -> "OrtCache":
        return OrtCache({name.replace("present.", "past.", 1): v for name, v in present.items()
                         if name.startswith("present.")}, (self.lengths + seq).astype(np.int32))


def return_freed_memory() -> None:
    """Hand the heap that ONNX Runtime's constant folding freed back to the OS. glibc keeps it
    otherwise, and a session holds several times the memory it needs (docs/architecture.md,
    "Measured design choices")."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def session_options(optimization: str = "basic", threads: int | None = None, profile_prefix: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # "basic" folds the weight unpacking into constants but leaves MatMulInteger chains alone
    # (extended fusions may change the float epilogue, see DESIGN.md)
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


class OrtDecoder:
    """The whole graph in one session (generate, benchmarks); validate runs it layer by layer
    (onnx_layers.py)."""

    def __init__(self, onnx_dir: Path, optimization: str = "basic", threads: int | None = None,
                 profile_prefix: str | None = None, verify: str = "quick"):
        import onnxruntime as ort

        self.meta = check_onnx_folder(onnx_dir, verify)
        so = session_options(optimization, threads, profile_prefix)
        self.session = ort.InferenceSession(str(Path(onnx_dir) / ORT_FILE), so, providers=["CPUExecutionProvider"])
        return_freed_memory()
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past.")]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def new_cache(self, batch: int, capacity: int) -> OrtCache:
        dims = {i.name: (i.shape, "uint8" in i.type) for i in self.past_inputs}
        return OrtCache(empty_cache(dims, batch, capacity), np.zeros(batch, np.int32))

    def forward(self, input_ids: np.ndarray, cache: OrtCache | None = None
                ) -> tuple[np.ndarray, OrtCache]:
        """input_ids [B, S] continuing `cache` (a new one of S rows if None) -> (logits [B, S, V], the
        cache with the S tokens)."""
        batch, seq = input_ids.shape
        cache = self.new_cache(batch, seq) if cache is None else cache
        positions = cache.lengths[:, None].astype(np.int64) + np.arange(seq, dtype=np.int64)[None]
        feeds = {"input_ids": input_ids.astype(np.int64), "position_ids": positions, **cache.feeds(seq)}
        outs = dict(zip(self.output_names, self.session.run(None, feeds)))
        return outs["logits"], cache.advanced(outs, seq)
