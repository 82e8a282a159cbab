"""The artifact's embedding and head: rotated and streamed block of rows by block."""

from __future__ import annotations

import torch

from ..config import QuantConfig
from ..models.loader import ModelSource
from ..tensorfile import Entry, row_blocks
from ..transforms import rotate

def embedding_blocks(src: ModelSource, u_a: torch.Tensor | None, ids: torch.Tensor | None,
                     gathered: torch.Tensor | None):
    """The (rotated) float32 embedding, block of rows by block; the rows of the calibration tokens
    `ids` are copied into `gathered` on the way (they are the calibration's first activations)."""
    for a, b in row_blocks(src.config.vocab_size):
        rows = src.rows(src.embed_name, a, b)
        if u_a is not None:
            rows = rotate.rotate_rows(rows, u_a)
        if ids is not None:
            hit = (ids >= a) & (ids < b)
            gathered[hit] = rows[ids[hit] - a]
        yield rows


def head_entries(src: ModelSource, u_a: torch.Tensor | None, dtype: torch.dtype) -> list[Entry]:
    """The artifact's output-head tensors: lm_head with the final norm folded in and U_A on its
    input side, streamed block by block; a tied head as the [hidden, hidden] factor that turns the
    (rotated) embedding into it (decoder.TiedHead), so the embedding is stored once."""
    final_norm = src.final_norm()
    if src.tied_head:
        factor = rotate.fold_head_norm(torch.eye(src.config.hidden_size), final_norm)
        return [Entry.of("lm_head.factor", rotate.tied_head_factor(factor, u_a) if u_a is not None else factor)]

    def blocks():
        for a, b in row_blocks(src.config.vocab_size):
            rows = rotate.fold_head_norm(src.rows(src.head_name, a, b), final_norm)
            yield (rotate.rotate_rows(rows, u_a) if u_a is not None else rows).to(dtype)

    return [Entry("lm_head.weight", dtype, (src.config.vocab_size, src.config.hidden_size), blocks)]


def embed_dtype(quant: QuantConfig) -> torch.dtype:
    return torch.float16 if quant.quantizes_weights else torch.float32
