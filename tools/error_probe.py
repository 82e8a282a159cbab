"""Where an artifact's W4A4KV4 error comes from, without re-quantising (issue 18, docs/results.md
"Session 12"): the artifact's integer weights are kept, and one variant of the activation or KV
quantisation is evaluated on the packaged eval text and on the texts given.

A measurement tool, not the executor: each linear's activations are fake-quantised here (quantise,
dequantise, float32) and multiplied with the dequantised weights in float64. With no variant it
equals the reference executor layer by layer to float rounding (about 1e-7 relative), so compare a
variant with this tool's own baseline, not with `resq-export eval`.

    python tools/error_probe.py --artifact ART --name NAME [--text OOD] [variant flags] >> probes.jsonl

Variants: --float-roles R1,R2 (those linears' inputs stay float; --layers A:B restricts it to layers
A..B-1), --kv-float, --clip C (4-bit activation ranges scaled by C), --kv-clip C, --sub N (the
4-bit activation groups of attn_qkv and mlp_gate_up split into sub-groups of N channels),
--float-weights ART16 (the weights of a transforms-only artifact instead of the integer ones: with
--float-roles and --kv-float the W16A4KV16 / W16A16KV4 rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from resq_export.algo.quant import group_bounds, quantize_asym, quantize_groups
from resq_export.artifact import open_artifact
from resq_export.calib.data import evaluation_windows
from resq_export.layout import KVQuantizer
from resq_export.validate.layerwise import reference_layers
from resq_export.validate.ppl import perplexity

LAYER_FIELDS = {"attn_qkv": "qkv", "attn_o": "o", "mlp_gate_up": "gate_up", "mlp_down": "down"}
RESIDUAL_ROLES = ("attn_qkv", "mlp_gate_up")


def fake_quant(x: torch.Tensor, bits: int, clip: float) -> torch.Tensor:
    q, scale, zero = quantize_asym(x, bits, clip)
    return (q - zero) * scale


class FakeQuantInput:
    """A QuantLinear whose input is fake-quantised by this variant, then run on float activations;
    float_lin: the same linear with float weights instead (the activation groups stay the QuantLinear's)."""

    def __init__(self, lin, sub: int, clip: float, keep_float: bool, float_lin=None):
        self.groups = list(zip(group_bounds(lin.layout.group_sizes), lin.layout.a_bits))
        self.lin = float_lin or dataclasses.replace(
            lin, layout=dataclasses.replace(lin.layout, a_bits=(16,) * len(self.groups)))
        self.sub, self.clip, self.keep_float = sub, clip, keep_float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.keep_float:
            x = x.to(torch.float32, copy=True)
            for (a, b), bits in self.groups:
                clip = self.clip if bits == 4 else 1.0
                if self.sub and b - a > self.sub and (b - a) % self.sub == 0:
                    x[..., a:b] = fake_quant(x[..., a:b].unflatten(-1, (-1, self.sub)), bits, clip).flatten(-2)
                else:
                    x[..., a:b] = fake_quant(x[..., a:b], bits, clip)
        return self.lin(x)


@dataclasses.dataclass(frozen=True)
class ClippedKVQuantizer(KVQuantizer):
    """The contract's stored KV form with the 4-bit groups' ranges scaled by clip."""

    clip: float = 1.0

    def quantize(self, x):
        return self.pack(*quantize_groups(x, self.group_sizes, self.bits, self.clip))


def same_basis(quantised, floating, i: int) -> None:
    """--float-weights must come from the same rotations (same model, calibration, seed): its online
    rotations equal the artifact's, and its weights match the dequantised ones to about the 4-bit
    rounding error rather than being unrelated."""
    for name in ("key_rotation", "down_rotation"):
        a, b = getattr(quantised, name), getattr(floating, name)
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
            raise SystemExit(f"--float-weights: layer {i}'s {name} differs from the artifact's (other rotations)")
    for field in LAYER_FIELDS.values():
        w, w_q = getattr(floating, field).weight.double(), getattr(quantised, field).dequantized_weight().double()
        rel = ((w - w_q).norm() / w.norm()).item()
        if rel > 0.5:
            raise SystemExit(f"--float-weights: layer {i}'s {field} weights differ by {rel:.2f} relative (other basis)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--text", action="append", default=[], help="out-of-domain text (repeatable)")
    p.add_argument("--float-roles", default="")
    p.add_argument("--layers", default="")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--sub", type=int, default=0)
    p.add_argument("--kv-clip", type=float, default=1.0)
    p.add_argument("--kv-float", action="store_true")
    p.add_argument("--float-weights", default="",
                   help="a transforms-only artifact of the same model, calibration and seed (resq-export quantize "
                        "--w-bits 16 --a-bits 16 --kv-bits 16): its float weights replace the integer ones")
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--seqlen", type=int, default=512)
    args = p.parse_args()
    reader = open_artifact(args.artifact)
    floats = open_artifact(args.float_weights) if args.float_weights else None
    float_roles = set(filter(None, args.float_roles.split(",")))
    first, stop = map(int, args.layers.split(":")) if args.layers else (0, reader.config.num_layers)
    read_layer = reader.layer

    def layer(i: int):
        lay = read_layer(i)
        float_lay = floats.layer(i) if floats else None
        if float_lay is not None:
            same_basis(lay, float_lay, i)
        for role, field in LAYER_FIELDS.items():
            sub = args.sub if role in RESIDUAL_ROLES else 0
            keep_float = role in float_roles and first <= i < stop
            float_lin = getattr(float_lay, field) if float_lay is not None else None
            setattr(lay, field, FakeQuantInput(getattr(lay, field), sub, args.clip, keep_float, float_lin))
        return lay

    reader.layer = layer  # this instance only: the tool's variants, the package untouched
    model = reference_layers(reader)
    kvq = model.shell.kv_quantizer
    if args.kv_float:
        model.shell.kv_quantizer = None
    elif args.kv_clip != 1.0 and kvq is not None:
        model.shell.kv_quantizer = ClippedKVQuantizer(kvq.group_sizes, kvq.bits, args.kv_clip)
    result = {"name": args.name, "args": vars(args)}
    for text in [None, *args.text]:
        windows = evaluation_windows(reader.tokenizer(), [text] if text else [], args.seqlen, args.max_tokens)
        t0 = time.time()
        result[text or "packaged"] = perplexity(model, windows)["ppl"]
        result.setdefault("seconds", []).append(round(time.time() - t0, 1))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
