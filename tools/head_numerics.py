"""The LM head's numerics in the TensorRT flavour against the FP32 head, on the evaluation windows.

    python tools/head_numerics.py ARTIFACT [--eval-max-tokens 2048]

The reference executor of the artifact gives the head's input x (the final norm's output) on the
windows validation reads (the packaged evaluation text, 512-token windows); each head below is
then applied to the same x, and compared with the FP32 head of the ONNX Runtime flavour (the fp16
table widened to FP32, FP32 products and sums): top-1 agreement over every position, and the
largest relative logit error as validation measures it (per window max |d| / max |logit|).
Heads (docs/ops.md, "the LM head"):
  fp16-gemm     the TensorRT flavour: x (after the FP32 rotation factor of a tied head) rounded to
                fp16, products of fp16 values summed in FP32, the logits rounded to fp16
  fp16-factor   also the rotation factor in fp16 (x, factor and its output rounded to fp16)
  tf32          the FP32 head with TF32 tensor cores: both matmuls' inputs rounded to TF32
A measuring tool (docs/plugins.md), not imported by the package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from resq_export.artifact import load_artifact
from resq_export.build import EVAL_SEQLEN
from resq_export.calib.data import evaluation_windows
from resq_export.decoder import TiedHead, rms_norm


def tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32's 10 mantissa bits, to nearest even (the tensor cores' input rounding)."""
    i = t.contiguous().view(torch.int32)
    i = (i + 0xFFF + ((i >> 13) & 1)) & ~0x1FFF
    return i.view(torch.float32)


def half(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(torch.float32)


def heads(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head's logits for x [S, H] (float32)."""
    tied = isinstance(model.lm_head, TiedHead)
    table = (model.embed if tied else model.lm_head.weight).to(torch.float16).to(torch.float32)  # as exported
    f_t = model.lm_head.factor.T.contiguous() if tied else None
    y = x @ f_t if tied else x
    out = {"fp32": y @ table.T}
    # fp16 x fp16 products are exact in FP32; the sum is FP32 as in the GEMM's accumulator
    out["fp16-gemm"] = half(half(y) @ table.T)
    if tied:
        out["fp16-factor"] = half(half(half(x) @ half(f_t)) @ table.T)
    y32 = tf32(x) @ tf32(f_t) if tied else x
    out["tf32"] = tf32(y32) @ tf32(table).T
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--eval-max-tokens", type=int, default=2048)
    a = p.parse_args(argv)
    if not (a.artifact / "manifest.json").is_file():
        print(f"error: {a.artifact} is no artifact folder (no manifest.json)", file=sys.stderr)
        return 1
    model, _, tokenizer = load_artifact(a.artifact)
    windows = evaluation_windows(tokenizer, (), EVAL_SEQLEN, a.eval_max_tokens)
    stats: dict[str, dict] = {}
    with torch.no_grad():
        for ids in windows:
            h = model.hidden_states(ids[None])
            x = rms_norm(h, model.final_norm, model.config.rms_norm_eps, model.island)[0].to(torch.float32)
            logits = heads(model, x)
            ref = logits.pop("fp32")
            top = ref.argmax(-1)
            for name, got in logits.items():
                s = stats.setdefault(name, {"agree": 0, "positions": 0, "max_rel_err": 0.0})
                s["agree"] += int((got.argmax(-1) == top).sum())
                s["positions"] += top.numel()
                s["max_rel_err"] = max(s["max_rel_err"], float((got - ref).abs().max() / ref.abs().max()))
    for s in stats.values():
        s["top1_agreement"] = s["agree"] / s["positions"]
    print(json.dumps({"windows": len(windows), "seqlen": EVAL_SEQLEN, "heads": stats}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
