"""The model context a tokenizer records (a leaf without torch: generation reads it, and the served
ONNX Runtime path runs where torch is not installed)."""

from __future__ import annotations

# Tokenizers without a known context report this sentinel (transformers' VERY_LARGE_INTEGER).
_UNKNOWN_CONTEXT = 10**12


def context_length(tokenizer) -> int | None:
    """The model context a tokenizer records, or None where it records none."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < _UNKNOWN_CONTEXT else None
