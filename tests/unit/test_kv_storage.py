"""The KV cache's stored form (op contract v2, docs/ops.md): 4-bit codes two per byte, and the bytes
per cached value that this buys at the head dims of the models users run."""

import pytest
import torch

from resq_export.config import QuantConfig
from resq_export.errors import ConfigError
from resq_export.layout import KVQuantizer, kv_quantizer
from resq_export.models.config import ModelConfig

SHAPES = {  # name: (hidden, heads, kv heads, head_dim), the bytes-per-value target of issue 16
    "llama-3-8b": ((4096, 32, 8, 128), 0.65),
    "smollm2-135m": ((576, 9, 3, 64), 0.75),
}


def _config(hidden, heads, kv_heads, head_dim) -> ModelConfig:
    return ModelConfig("LlamaForCausalLM", 1000, hidden, 2, heads, kv_heads, head_dim, 4 * hidden, 1e-5, 1e4)


@pytest.mark.parametrize("name", SHAPES)
def test_bytes_per_cached_value_meet_the_target(name):
    dims, target = SHAPES[name]
    kvq = kv_quantizer(_config(*dims), QuantConfig())  # the defaults: 4-bit, r = d / 8 channels at 8 bits
    x = torch.randn(1, dims[2], 7, dims[3]) * 2
    stored = kvq.quantize(x)
    per_value = sum(t.numel() * t.element_size() for t in stored) / x.numel()
    d, r = dims[3], dims[3] // 8
    assert per_value == ((d - r) / 2 + r + 2 * (4 + 1)) / d  # codes, then a float32 scale + uint8 zero per group
    assert per_value <= target, f"{name}: {per_value:.3f} bytes per value > {target}"


@pytest.mark.parametrize("sizes,bits", [((56, 8), (4, 8)), ((64,), (4,)), ((24, 8), (8, 4)), ((32,), (8,))])
def test_stored_rows_round_trip_the_codes(sizes, bits):
    kvq = KVQuantizer(sizes, bits)
    x = torch.randn(2, 3, 5, sum(sizes)) * 4
    packed, scale, zero = kvq.quantize(x)
    assert packed.dtype == torch.uint8 and packed.shape[-1] == kvq.row_bytes
    from resq_export.algo.quant import quantize_groups

    codes, s, z = quantize_groups(x, sizes, bits)
    assert torch.equal(kvq.codes(packed), codes) and torch.equal(scale, s) and torch.equal(zero.int(), z)
    low = sizes[0]
    if bits[0] == 4:  # channel 2j in the low nibble of byte j, as the weights
        assert torch.equal(packed[..., 0].int(), codes[..., 0] + 16 * codes[..., 1])
    else:
        assert torch.equal(packed[..., :low].int(), codes[..., :low])


def test_odd_four_bit_group_is_refused():
    with pytest.raises(ConfigError, match="even width"):
        KVQuantizer((57, 7), (4, 8))
