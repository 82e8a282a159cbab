"""The whole ResQMixedLinearPrepared path on the GPU kernels (quantiser, LQER projection, mixed GEMM with
its epilogue, split-K reduction) against the reference executor's GPU variant, bit for bit, and against
its float64 epilogue within a stated bound."""

import pytest
import torch
from kernel_cases import LAYOUTS
from helpers import activations, layout, random_linear

from resq_export.kernels.launch import DECODE_MAX_M, SPLIT_MAX_M, Prepared, mixed_linear

# The float32 epilogue against the float64 one (QuantLinear.__call__), relative to max |y| per token:
# each group's part is two float32 products (2 ulp) and enters at most G + G / 8 + 3 float32 additions
# (groups, runs, LQER, bias), so |error| <= (G + G / 8 + 5) * 2^-24 * sum |part| per output; sum |part|
# is within a small factor of max |y| for these activations (measured: worst 3e-7 on the cases below).
F32_EPILOGUE_VS_F64 = 2e-6


def check(lin, x, tiles=("decode", "small", "prefill")):
    prep = Prepared.from_linear(lin)
    expected = lin.gpu_reference(x)
    for tile in tiles:
        y = mixed_linear(x, prep, tile=tile)
        assert torch.equal(y, expected), f"{tile}: {(y != expected).sum().item()} of {y.numel()} outputs differ"
    exact = lin(x)
    scale = exact.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    assert ((y - exact).abs() / scale).max().item() < F32_EPILOGUE_VS_F64


@pytest.mark.parametrize("rank", [0, 5])
@pytest.mark.parametrize("name,lay,n", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_mixed_linear_equals_the_reference(name, lay, n, rank):
    """Decode (split over runs of groups), small and prefill (fused) tiles, bias, LQER, odd token counts."""
    lin = random_linear(lay, n, rank=rank, bias=True, seed=3)
    check(lin, activations(3, lay.in_features, seed=4))
    check(lin, activations(DECODE_MAX_M + 3, lay.in_features, seed=5), ("prefill", "decode", "small"))


def test_without_bias_and_large_rank():
    lay = LAYOUTS[0][1]
    check(random_linear(lay, 70, rank=37, bias=False, seed=9), activations(2, lay.in_features, seed=1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_output_is_the_float32_result_rounded_once(dtype):
    lay = LAYOUTS[0][1]
    lin = random_linear(lay, 70, rank=4, bias=True, seed=6)
    prep = Prepared.from_linear(lin)
    for m in (1, SPLIT_MAX_M + 1, DECODE_MAX_M + 1):
        x = activations(m, lay.in_features, seed=m).to(dtype)
        y = mixed_linear(x, prep, out_dtype=dtype)
        assert y.dtype == dtype and torch.equal(y, lin.gpu_reference(x.float()).to(dtype))


def test_launch_policy_picks_split_at_decode():
    """mixed_linear without a tile: M <= 4 runs the split kernels, larger M the fused ones; same bits."""
    lay = LAYOUTS[1][1]
    lin = random_linear(lay, 24, rank=3, bias=True, seed=2)
    prep = Prepared.from_linear(lin)
    for m in (1, SPLIT_MAX_M, SPLIT_MAX_M + 1, DECODE_MAX_M, DECODE_MAX_M + 1):
        x = activations(m, lay.in_features, seed=m)
        assert torch.equal(mixed_linear(x, prep), lin.gpu_reference(x))


# (name, layout, N): SmolLM2-135M's and Llama-3-8B's linears with the default ResQ layouts (docs/ops.md),
# N cut to a few output tiles (the kernels' tiles are independent along N). Llama-3-8B's o_proj: 32
# heads of 112 + 16 channels; down_proj: 224 groups of 64 (28 runs).
MODEL_SHAPES = [
    ("smollm2_qkv", layout([(7, 72, 4, 4), (1, 72, 8, 8)]), 96),
    ("smollm2_gate_up_f25", layout([(6, 72, 4, 4), (2, 72, 8, 8)]), 96),  # --gate-up-high-fraction 0.25
    ("smollm2_o", layout([(9, 56, 4, 4), (9, 8, 8, 8)]), 70),
    ("smollm2_down", layout([(24, 64, 4, 4)]), 65),
    ("llama3_qkv", layout([(28, 128, 4, 4), (4, 128, 8, 8)]), 80),
    ("llama3_o", layout([(32, 112, 4, 4), (32, 16, 8, 8)]), 64),
    ("llama3_down", layout([(224, 64, 4, 4)]), 64),
]


SLOW_SHAPES = {("llama3_o", "prefill"), ("llama3_down", "prefill")}  # 4-7 s each under the interpreter
SHAPE_CASES = [pytest.param(name, lay, n, tile, id=f"{name}-{tile}",
                            marks=[pytest.mark.slow] if (name, tile) in SLOW_SHAPES else [])
               for name, lay, n in MODEL_SHAPES for tile in ("decode", "prefill")]


@pytest.mark.parametrize("name,lay,n,tile", SHAPE_CASES)
def test_model_shapes(name, lay, n, tile):
    m = 1 if tile == "decode" else DECODE_MAX_M + 1
    lin = random_linear(lay, n, rank=8 if name.startswith("smollm2") else 0, bias=True, seed=11)
    check(lin, activations(m, lay.in_features, seed=12), (tile,))


def _linears(artifact):
    from resq_export.artifact import load_artifact

    model, _, _ = load_artifact(artifact)
    for i, layer in enumerate(model.layers):
        for attr in ("qkv", "o", "gate_up", "down"):
            yield f"{i}.{attr}", getattr(layer, attr)


@pytest.mark.parametrize("artifact", ["resq_lqer", "w8a8", "quarot"])
def test_tiny_model_linears(kernel_artifacts, artifact):
    """Every linear of a quantised tiny model (GPTQ codes, qkv bias, LQER rank 4, per-head o_proj groups,
    the down projection's groups of 32; W8A8; QuaRot's all-4-bit layout), decode and prefill."""
    seen = 0
    for name, lin in _linears(kernel_artifacts[artifact]):
        for m in (2, DECODE_MAX_M + 2):
            x = activations(m, lin.in_features, seed=m)
            y = mixed_linear(x, Prepared.from_linear(lin))
            assert torch.equal(y, lin.gpu_reference(x)), f"{artifact} layer {name}, M = {m}"
        seen += 1
    assert seen == 8
