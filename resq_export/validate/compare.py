"""ONNX Runtime against the reference executor on the same windows, and the decode-cache check."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..decoder import Decoder
from .ort_runner import OrtDecoder

TOLERANCES = {"ppl_rel_diff": 0.005, "top1_agreement": 0.995}


def _nll(logits: np.ndarray, ids: np.ndarray) -> float:
    logits = torch.from_numpy(logits[:-1]).float()
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(ids[1:])).item()


@torch.inference_mode()
def compare(ort_model: OrtDecoder, reference: Decoder, windows: torch.Tensor, decode_steps: int = 16,
            progress: bool = False) -> dict:
    nll_ort, nll_ref, agree, total, max_rel = [], [], 0, 0, 0.0
    for window in tqdm(windows, desc="validate", disable=not progress):
        ids = window.numpy()
        ort_logits = ort_model.forward(ids[None])[0][0]
        ref_logits = reference.forward(window[None])[0].numpy()
        nll_ort.append(_nll(ort_logits, ids))
        nll_ref.append(_nll(ref_logits, ids))
        agree += int((ort_logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        total += ids.shape[0]
        max_rel = max(max_rel, float(np.abs(ort_logits - ref_logits).max() / np.abs(ref_logits).max()))
    ppl_ort = math.exp(sum(nll_ort) / len(nll_ort))
    ppl_ref = math.exp(sum(nll_ref) / len(nll_ref))
    decode = decode_check(ort_model, windows[0, :16].numpy(), decode_steps)
    result = {
        "ppl_ort": ppl_ort, "ppl_reference": ppl_ref, "ppl_rel_diff": abs(ppl_ort / ppl_ref - 1),
        "top1_agreement": agree / total, "max_rel_err": max_rel, "windows": len(windows),
        "tokens": int(windows.numel()), **decode,
    }
    result["passed"] = (result["ppl_rel_diff"] <= TOLERANCES["ppl_rel_diff"]
                        and result["top1_agreement"] >= TOLERANCES["top1_agreement"] and result["decode_match"])
    return result


def decode_check(ort_model: OrtDecoder, prompt: np.ndarray, steps: int) -> dict:
    """Greedy decoding through the KV cache, then one full forward of the whole sequence: the greedy
    tokens must be the full forward's argmax at every step."""
    logits, past = ort_model.forward(prompt[None])
    seq = list(prompt)
    step_logits = []
    for _ in range(steps):
        token = int(logits[0, -1].argmax())
        seq.append(token)
        step_logits.append(logits[0, -1])
        logits, past = ort_model.forward(np.array([[token]]), past)
    full = ort_model.forward(np.array([seq]))[0][0]
    positions = range(len(prompt) - 1, len(seq) - 1)
    match = all(int(full[p].argmax()) == seq[p + 1] for p in positions)
    err = max(float(np.abs(full[p] - s).max() / np.abs(full[p]).max()) for p, s in zip(positions, step_logits))
    return {"decode_match": match, "decode_steps": steps, "decode_max_rel_err": err}
