"""What the decode loop asks of a runtime: one small interface, two implementations (ONNX Runtime:
ort_backend.py; TensorRT: trt_backend.py).

A backend holds the KV cache between calls. `reset(batch, rows)` gives it an empty cache for `batch`
sequences of up to `rows` tokens each; `step(input_ids, past_length)` runs `input_ids` [batch, S]
as the tokens at positions past_length .. past_length + S - 1 of every sequence, writes them into
the cache and returns the logits of each sequence's last token [batch, vocab]."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import ConfigError


class Backend(Protocol):
    name: str  # "onnxruntime" | "tensorrt"
    capacity: int | None  # the most cache rows it can hold (None: as many as memory allows)
    capacity_what: str  # what bounds it, for messages ("the plan's --max-context")
    max_batch: int | None
    batch_what: str  # likewise ("the plan's --max-batch")
    max_step: int | None  # the most tokens one call takes (prefill chunks are cut to it)

    def reset(self, batch: int, rows: int) -> None: ...

    def step(self, input_ids: np.ndarray, past_length: int) -> np.ndarray: ...


def check_reset(backend: Backend, batch: int, rows: int) -> None:
    """The shared refusals of reset: a batch or a cache beyond what the backend holds."""
    if batch < 1 or rows < 1:
        raise ConfigError(f"a cache of batch {batch} and {rows} rows: both must be >= 1")
    if backend.max_batch is not None and batch > backend.max_batch:
        raise ConfigError(f"a batch of {batch} sequences exceeds {backend.batch_what} of {backend.max_batch}")
    if backend.capacity is not None and rows > backend.capacity:
        raise ConfigError(f"{rows} tokens exceed {backend.capacity_what} of {backend.capacity} tokens")


def check_step(rows: int, input_ids: np.ndarray, past_length: int, batch: int) -> tuple[int, int]:
    """(batch, S) of a step, refused where the cache was not reset for it or would overflow."""
    if input_ids.ndim != 2 or input_ids.shape[1] < 1:
        raise ConfigError(f"input_ids must be [batch, tokens] with at least one token, not {list(input_ids.shape)}")
    b, s = input_ids.shape
    if b != batch:
        raise ConfigError(f"input_ids hold {b} sequences; the cache was reset for {batch}")
    if past_length < 0 or past_length + s > rows:
        raise ConfigError(f"{past_length} cached and {s} new tokens exceed the cache's capacity of {rows}: "
                          "reset it with more rows")
    return b, s
