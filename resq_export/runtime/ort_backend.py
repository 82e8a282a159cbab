"""The ONNX Runtime backend: the ORT flavour of an exported folder (validate/ort_runner.OrtDecoder),
its cache carried between calls as host arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..validate.ort_runner import OrtCache, OrtDecoder
from .backend import check_reset, check_step


class OrtBackend:
    name = "onnxruntime"
    # the graph takes a cache of any size: the model's context (the loop checks it) is the bound
    capacity: int | None = None
    capacity_what = "the cache's capacity"
    max_batch: int | None = None
    batch_what = "the batch limit"
    max_step: int | None = None

    def __init__(self, decoder: OrtDecoder):
        self.decoder = decoder
        self.cache: OrtCache | None = None
        self.rows = 0

    @classmethod
    def open(cls, onnx_dir: Path, verify: str = "quick", threads: int | None = None) -> "OrtBackend":
        return cls(OrtDecoder(onnx_dir, threads=threads, verify=verify))

    def reset(self, batch: int, rows: int) -> None:
        check_reset(self, batch, rows)
        self.cache, self.rows = self.decoder.new_cache(batch, rows), rows

    def step(self, input_ids: np.ndarray, past_length: int) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("step before reset")
        _, s = check_step(self.rows, input_ids, past_length, self.cache.lengths.shape[0])
        self.cache.lengths[:] = past_length  # the loop's count is the one the graph sees
        logits, self.cache = self.decoder.forward(np.asarray(input_ids), self.cache)
        return logits[:, -1]
