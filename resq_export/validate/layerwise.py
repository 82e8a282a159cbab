"""Evaluation one decoder layer at a time, as the quantiser runs: every sequence goes through layer i
before layer i + 1 is read, so memory holds one layer's weights (plus the sequences' residual
streams) whatever the model's size. The same loop serves ONNX Runtime (onnx_layers.py), the
reference executor of an artifact and the float source model (TorchLayers here).

A sequence is a list of chunks of token ids that continue each other through the KV cache: one
chunk for a perplexity window, a prompt and then single tokens for the decode check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..decoder import Decoder, Layer, rms_norm
from ..tensorfile import row_blocks

class LayerStep(Protocol):
    def new_cache(self, capacity: int) -> Any: ...
    def __call__(self, state: Any, cache: Any) -> Any: ...
    def close(self) -> None: ...


class LayerwiseModel(Protocol):
    num_layers: int

    def embed(self, chunks: list[tuple[torch.Tensor, int]]) -> list[Any]: ...
    def layer(self, i: int) -> LayerStep: ...
    def logits(self, state: Any) -> torch.Tensor: ...


def run_layers(model: LayerwiseModel, sequences: list[list[torch.Tensor]], desc: str,
               progress: bool = False) -> list[list[Any]]:
    """Each chunk's state after the last layer (model.logits turns one into logits)."""
    chunks = []
    for seq in sequences:
        start = 0
        for ids in seq:
            chunks.append((ids, start))
            start += ids.numel()
    flat = model.embed(chunks)
    states, k = [], 0
    for seq in sequences:
        states.append(flat[k:k + len(seq)])
        k += len(seq)
    lengths = [sum(ids.numel() for ids in seq) for seq in sequences]  # each sequence's cache capacity
    # The bar counts sequences (the evaluation windows the summary reports), in fractions: each one
    # advances by 1 / num_layers as it passes a layer (the layers are the outer loop: each is read once).
    bar = tqdm(total=len(sequences), desc=desc, unit="window", disable=not progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} windows [{elapsed}<{remaining}]")
    for i in range(model.num_layers):
        step = model.layer(i)
        for seq_states, length in zip(states, lengths):
            cache = step.new_cache(length)
            for c, state in enumerate(seq_states):
                seq_states[c] = step(state, cache)
            bar.update(1 / model.num_layers)
        step.close()
        del step
    bar.n = len(sequences)  # not a float sum's 3.9999
    bar.close()
    return states


@dataclass
class TorchLayers:
    """Our decoder (decoder.py) read layer by layer: the reference executor of an artifact or the
    float source model. `shell` holds the config, the KV quantiser, the island dtype and the final
    norm; its own layers, embedding and head are unused."""

    shell: Decoder
    load_layer: Callable[[int], Layer]
    embed_rows: Callable[[int, int], torch.Tensor]  # float32 rows [a, b) of the embedding
    head_rows: Callable[[int, int], torch.Tensor]  # ... of the head (the embedding when tied)
    head_factor: torch.Tensor | None = None  # decoder.TiedHead's factor, for a tied head

    @property
    def num_layers(self) -> int:
        return self.shell.config.num_layers

    def embed(self, chunks: list[tuple[torch.Tensor, int]]) -> list[tuple[torch.Tensor, tuple]]:
        ids = torch.cat([c for c, _ in chunks])
        h = torch.empty(ids.numel(), self.shell.config.hidden_size)
        for a, b in row_blocks(self.shell.config.vocab_size):  # only the blocks the tokens hit are read
            hit = (ids >= a) & (ids < b)
            if hit.any():
                h[hit] = self.embed_rows(a, b)[ids[hit] - a]
        states, k = [], 0
        for c, start in chunks:
            positions = torch.arange(start, start + c.numel())[None]
            states.append((h[k:k + c.numel()][None].clone(), self.shell.rope(positions)))
            k += c.numel()
        return states

    def layer(self, i: int) -> "_TorchLayer":
        return _TorchLayer(self.shell, i, self.load_layer(i))

    @torch.inference_mode()
    def logits(self, state: tuple[torch.Tensor, tuple]) -> torch.Tensor:
        cfg = self.shell.config
        x = rms_norm(state[0][0], self.shell.final_norm, cfg.rms_norm_eps, self.shell.island)
        if self.head_factor is not None:
            x = x @ self.head_factor.to(torch.float32).T
        return torch.cat([x @ self.head_rows(a, b).T for a, b in row_blocks(self.shell.config.vocab_size)], -1)


class _TorchLayer:
    def __init__(self, shell: Decoder, i: int, layer: Layer):
        self.shell, self.i, self.layer_ = shell, i, layer

    def new_cache(self, capacity: int):
        return self.shell.new_cache()  # the executor's cache grows: no capacity to reserve

    @torch.inference_mode()
    def __call__(self, state, cache):
        h, rope = state
        return self.shell.layer_forward(self.i, self.layer_, h, rope, cache), rope

    def close(self) -> None:
        self.layer_ = None


def reference_layers(reader) -> TorchLayers:
    """An artifact (artifact.ArtifactReader) as the reference executor, layer by layer."""
    cfg = reader.config
    shell = Decoder(cfg, torch.empty(0), [], None, None, reader.kv_quantizer, float_islands=True)
    tied = reader.has("lm_head.factor")
    head = "embed" if tied else "lm_head.weight"
    return TorchLayers(shell, reader.layer, lambda a, b: reader.rows("embed", a, b),
                       lambda a, b: reader.rows(head, a, b), reader.tensor("lm_head.factor") if tied else None)


def float_layers(src) -> TorchLayers:
    """A float source model (models.loader.ModelSource), layer by layer."""
    shell = Decoder(src.config, torch.empty(0), [], None, src.final_norm())
    return TorchLayers(shell, src.layer, lambda a, b: src.rows(src.embed_name, a, b),
                       lambda a, b: src.rows(src.head_name, a, b))
