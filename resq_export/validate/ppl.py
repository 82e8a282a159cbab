"""Perplexity with the papers' protocol: non-overlapping windows, tail dropped,
PPL = exp(mean over windows of the mean token NLL); the model read layer by layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layerwise import LayerwiseModel, run_layers


@torch.inference_mode()
def perplexity(model: LayerwiseModel, windows: torch.Tensor, progress: bool = False) -> dict:
    states = run_layers(model, [[w] for w in windows], "perplexity", progress)
    nlls = [F.cross_entropy(model.logits(s[0])[:-1].float(), w[1:]).item() for s, w in zip(states, windows)]
    mean_nll = sum(nlls) / len(nlls)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "windows": len(nlls), "tokens": int(windows.numel())}
