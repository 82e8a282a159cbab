"""The earlier Python entry points of token streaming from an ONNX folder, kept for their callers;
the loop itself lives in resq_export/runtime/ (one loop for ONNX Runtime and TensorRT)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .runtime import loop
from .runtime.loop import PREFILL_CHUNK, Generator
from .runtime.ort_backend import OrtBackend
from .runtime.text import load_tokenizer, prompt_ids
from .validate.ort_runner import OrtCache, OrtDecoder

__all__ = ["PREFILL_CHUNK", "load_tokenizer", "prefill", "prompt_ids", "stream"]


def prefill(session: OrtDecoder, ids: list[int], capacity: int, chunk: int = PREFILL_CHUNK
            ) -> tuple[np.ndarray, OrtCache]:
    """(logits [1, 1, V] of the prompt's last token, cache) after the whole prompt, chunk by chunk,
    into a cache of `capacity` rows."""
    backend = OrtBackend(session)
    logits = loop.prefill(backend, ids, capacity, chunk)
    return logits[None, None], backend.cache


def stream(session: OrtDecoder, tokenizer, prompt: str, max_new_tokens: int, temperature: float, seed: int,
           chat: bool = False) -> Iterator[str]:
    """Yield the decoded text piece by piece (runtime.Generator.stream on this session)."""
    generator = Generator(tokenizer, lambda: OrtBackend(session))
    return generator.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, chat=chat)
