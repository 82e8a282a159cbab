"""Perplexity with the papers' protocol: non-overlapping windows, tail dropped,
PPL = exp(mean over windows of the mean token NLL)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..decoder import Decoder


@torch.inference_mode()
def perplexity(model: Decoder, windows: torch.Tensor, progress: bool = False) -> dict:
    nlls = []
    for window in tqdm(windows, desc="perplexity", disable=not progress):
        logits = model.forward(window[None])[0]
        nlls.append(F.cross_entropy(logits[:-1].float(), window[1:]).item())
    mean_nll = sum(nlls) / len(nlls)
    return {"ppl": math.exp(mean_nll), "nll": mean_nll, "windows": len(nlls), "tokens": int(windows.numel())}
