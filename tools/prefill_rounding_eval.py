"""What the prefill kernel's roundings cost in perplexity, measured without a GPU: an artifact's
perplexity with the reference executor as it is (the contract's attention: float64 over the
dequantised cache) and with its attention for S >= 2 new positions replaced by the prefill kernel's
arithmetic in torch (tests/kernels/kv_rounding.py: q rounded to fp16, P scaled per key and rounded to
fp16 per key tile, float32 online softmax; checked against the kernel under the interpreter by
tests/kernels/test_kernel_kv_prefill.py), on the same windows; the float model's beside them when
--model is given.

    python tools/prefill_rounding_eval.py --artifact ART [--model smollm2-135m] [--seqlen 512]
        [--max-tokens 4096] [--q-dtype float16|bfloat16] [--interpreter] [--json]

--interpreter (with TRITON_INTERPRET=1 in the environment): the prefill kernel itself
(kv_prefill.prefill_attention) under Triton's interpreter instead of its torch emulation, for a
third perplexity: slow (minutes per layer at SmolLM2's size), meant for tiny models, where it shows
the emulation's perplexity is the kernel's.

Only the attention changes: q, the cache (quantised as the reference executor quantises it) and
every other layer are the reference executor's. Exit 1 with one error line for an artifact without a
quantised KV cache (the kernel serves only that) or bad arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "kernels")]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--model", help="the float model too (HF folder, .gguf or a built-in name)")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--q-dtype", choices=("float16", "bfloat16"), default="float16",
                    help="the dot's dtype: float16 for the plugin's float32 q, bfloat16 for a bf16 q")
    ap.add_argument("--interpreter", action="store_true",
                    help="also the kernel itself under TRITON_INTERPRET=1 (tiny models: slow)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args(argv)
    if args.seqlen < 2 or args.max_tokens < 2:
        ap.error("--seqlen and --max-tokens are at least 2")
    return args


def _interpreted(q, k_parts, v_parts, quant, past, q_dtype):
    """The prefill kernel itself (Triton's interpreter) on the layer's cache -> [B, H, S, D]."""
    import torch

    from resq_export.kernels.kv_prefill import prefill_attention

    high = quant.group_sizes[1] if len(quant.group_sizes) > 1 else 0
    bits = (quant.bits[0], quant.bits[-1] if high else 8)
    total = past + q.shape[2]
    caches = [tuple(t[:, :, :total].contiguous() for t in parts) for parts in (k_parts, v_parts)]
    q_in = q.to(torch.bfloat16) if q_dtype == torch.bfloat16 else q
    past_length = torch.full((q.shape[0],), past, dtype=torch.int32)
    y = prefill_attention(q_in, *caches, past_length, high, *bits)
    return y.view(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).transpose(1, 2)


@contextmanager
def kernel_attention(q_dtype, interpreter: bool = False):
    """The reference executor's attention for S >= 2 replaced by the prefill kernel's arithmetic: the
    cache's stored form of the layer being computed is kept as KVCache.append leaves it, and
    decoder._attention (called right after, for the same layer) reads it."""
    from kv_rounding import kernel_rounded_prefill

    from resq_export import decoder
    from resq_export.kernels.kv_launch import KV_PREFILL_MIN_S

    stored = {}
    append, attention = decoder.KVCache.append, decoder._attention

    def keep(self, layer, k, v):
        out = append(self, layer, k, v)
        stored["parts"] = (self.quantizer, self.keys[layer], self.values[layer])
        return out

    def rounded(q, k, v, group, island):
        quant, k_parts, v_parts = stored.get("parts", (None, None, None))
        if quant is None or q.shape[2] < KV_PREFILL_MIN_S:  # decode: flash-decoding, not this kernel
            return attention(q, k, v, group, island)
        run = _interpreted if interpreter else kernel_rounded_prefill
        return run(q.float(), k_parts, v_parts, quant, k.shape[2] - q.shape[2], q_dtype)

    decoder.KVCache.append, decoder._attention = keep, rounded
    try:
        yield
    finally:
        decoder.KVCache.append, decoder._attention = append, attention


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.interpreter and os.environ.get("TRITON_INTERPRET") != "1":
        print("error: --interpreter needs TRITON_INTERPRET=1 in the environment")
        return 1
    from resq_export.errors import ResQError

    try:
        return run(args)
    except ResQError as e:
        print(f"error: {e}")
        return 1


def run(args) -> int:
    import torch

    from resq_export.artifact import open_artifact
    from resq_export.calib.data import evaluation_windows
    from resq_export.cli_support import check_artifact_dir
    from resq_export.validate.layerwise import reference_layers
    from resq_export.validate.ppl import perplexity

    reader = open_artifact(check_artifact_dir(args.artifact))
    if reader.quant.kv_bits == 16:
        print(f"error: {args.artifact} keeps the KV cache float (kv_bits 16): the prefill kernel reads a quantised one")
        return 1
    tokenizer = reader.tokenizer()
    windows = evaluation_windows(tokenizer, (), args.seqlen, args.max_tokens)
    model = reference_layers(reader)
    result = {"artifact": str(args.artifact), "method": reader.quant.method, "seqlen": args.seqlen,
              "max_tokens": args.max_tokens, "q_dtype": args.q_dtype, "windows": len(windows)}
    result["contract_ppl"] = perplexity(model, windows, progress=False)["ppl"]
    with kernel_attention(getattr(torch, args.q_dtype)):
        result["kernel_ppl"] = perplexity(model, windows, progress=False)["ppl"]
    if args.interpreter:
        with kernel_attention(getattr(torch, args.q_dtype), interpreter=True):
            result["interpreted_kernel_ppl"] = perplexity(model, windows, progress=False)["ppl"]
    if args.model:
        from resq_export.models.loader import open_model
        from resq_export.validate.layerwise import float_layers

        result["fp_ppl"] = perplexity(float_layers(open_model(args.model)), windows, progress=False)["ppl"]
    result["kernel_minus_contract"] = result["kernel_ppl"] - result["contract_ppl"]
    if args.json:
        print(json.dumps(result))
    else:
        fp = f", FP {result['fp_ppl']:.4f}" if "fp_ppl" in result else ""
        if "interpreted_kernel_ppl" in result:
            fp += f", the kernel itself (interpreter) {result['interpreted_kernel_ppl']:.4f}"
        print(f"perplexity over {len(windows)} windows of {args.seqlen}: contract {result['contract_ppl']:.4f}, "
              f"prefill kernel's roundings ({args.q_dtype} q and P) {result['kernel_ppl']:.4f} "
              f"({result['kernel_minus_contract']:+.4f}){fp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
