"""ONNX Runtime against the reference executor on the same windows, and the decode-cache check, both
run layer by layer (layerwise.py) so that an 8B model validates in a few GB."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .layerwise import LayerwiseModel, run_layers

TOLERANCES = {"ppl_rel_diff": 0.005, "top1_agreement": 0.995}
DECODE_PROMPT = 16  # tokens of the decode check's prompt, before the tokens fed one by one


def _nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return F.cross_entropy(logits[:-1].float(), ids[1:]).item()


def decode_sequences(tokens: torch.Tensor, steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The decode check's two sequences over the same text: a prompt followed by `steps` - 1 tokens
    fed one at a time through the cache, and the same tokens in one chunk (recomputation)."""
    n = DECODE_PROMPT + steps - 1
    if tokens.numel() < n:
        raise ConfigError(f"--decode-steps {steps} needs {n} tokens of evaluation text, it has {tokens.numel()}")
    seq = tokens[:n]
    return [seq[:DECODE_PROMPT], *seq[DECODE_PROMPT:].split(1)], [seq]


@torch.inference_mode()
def compare(ort: LayerwiseModel, reference: LayerwiseModel, windows: torch.Tensor, decode_steps: int = 16,
            progress: bool = False) -> dict:
    cached, whole = decode_sequences(windows.reshape(-1), decode_steps)
    ort_states = run_layers(ort, [[w] for w in windows] + [cached, whole],
                            "ONNX Runtime (with the 2 sequences of the decode check)", progress)
    ref_states = run_layers(reference, [[w] for w in windows], "reference", progress)
    nll_ort, nll_ref, agree, total, max_rel = [], [], 0, 0, 0.0
    for w, ids in enumerate(windows):
        ort_logits, ref_logits = ort.logits(ort_states[w][0]), reference.logits(ref_states[w][0])
        nll_ort.append(_nll(ort_logits, ids))
        nll_ref.append(_nll(ref_logits, ids))
        agree += int((ort_logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        total += ids.numel()
        max_rel = max(max_rel, float((ort_logits - ref_logits).abs().max() / ref_logits.abs().max()))
    # the cached path's logits at each position against recomputation's
    step_logits = torch.cat([ort.logits(s) for s in ort_states[len(windows)]])[DECODE_PROMPT - 1:]
    full = ort.logits(ort_states[-1][0])[DECODE_PROMPT - 1:]
    ppl_ort = math.exp(sum(nll_ort) / len(nll_ort))
    ppl_ref = math.exp(sum(nll_ref) / len(nll_ref))
    result = {
        "ppl_ort": ppl_ort, "ppl_reference": ppl_ref, "ppl_rel_diff": abs(ppl_ort / ppl_ref - 1),
        "top1_agreement": agree / total, "max_rel_err": max_rel, "windows": len(windows),
        "tokens": int(windows.numel()),
        "decode_match": bool((step_logits.argmax(-1) == full.argmax(-1)).all()), "decode_steps": decode_steps,
        "decode_max_rel_err": float(((step_logits - full).abs().max(-1).values / full.abs().max(-1).values).max()),
    }
    result["passed"] = (result["ppl_rel_diff"] <= TOLERANCES["ppl_rel_diff"]
                        and result["top1_agreement"] >= TOLERANCES["top1_agreement"] and result["decode_match"])
    return result
