"""The CPU references of the online Hadamard, U_C and the quantised KV cache against the package's
reference functions; the compiled op spec against ops.json."""

import numpy as np
import pytest
import torch
from tolerances import CPU_FLOAT32

from resq_export.algo.hadamard import apply_down_hadamard, fwht, hadamard_left_factor
from resq_export.decoder import _attention
from resq_export.errors import NativeError
from resq_export.export.spec import load_spec
from resq_export.layout import KVQuantizer
from resq_export.native.params import KVShape


def expected_manifest() -> str:
    lines = []
    for op, s in sorted(load_spec()["ops"].items()):
        ins = ",".join(i["name"] + ("?" if i.get("optional") else "") for i in s["inputs"])
        outs = ",".join(o["name"] for o in s["outputs"])
        lines.append(f"{op} v{s['version']} in={ins} out={outs} attrs={','.join(sorted(s['attributes']))}")
    return "\n".join(lines)


def test_compiled_spec_is_ops_json(cpu_ref):
    assert cpu_ref.spec_manifest() == expected_manifest()


@pytest.mark.parametrize("n", [64, 512, 2048])
def test_walsh_hadamard_bit_exact(cpu_ref, n):
    x = torch.randn(5, n)
    np.testing.assert_array_equal(cpu_ref.hadamard(x.numpy(), np.ones((1, 1), np.float32)), fwht(x).numpy())


@pytest.mark.parametrize("n", [96, 1536, 640])  # 12 * 8 (Paley), SmolLM2's 1536 = 12 * 128, 5 * 128 (random left)
def test_kron_hadamard_matches_reference(cpu_ref, n):
    left, _ = hadamard_left_factor(n)
    left = left.float()
    x = torch.randn(7, n)
    y = cpu_ref.hadamard(x.numpy(), left.numpy())
    # the butterflies are exact; the a x a factor is a float GEMM whose order the reference leaves to BLAS
    np.testing.assert_allclose(y, apply_down_hadamard(x, left).numpy(), **CPU_FLOAT32)
    a = left.shape[0]
    blocks = cpu_ref.hadamard(x.numpy(), np.eye(a, dtype=np.float32)).reshape(7, a, n // a)
    np.testing.assert_array_equal(blocks, fwht(x.reshape(7, a, n // a)).numpy())


def test_hadamard_refuses_non_power_of_two(cpu_ref):
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.hadamard(np.zeros((1, 96), np.float32), np.eye(1, dtype=np.float32))


def test_rotate(cpu_ref):
    x, u = torch.randn(6, 32), torch.linalg.qr(torch.randn(32, 32))[0]
    np.testing.assert_allclose(cpu_ref.rotate(x.numpy(), u.numpy()), (x @ u).numpy(), rtol=1e-5, atol=1e-6)


KV_CASES = [  # (head_dim, high channels, kv bits)
    (64, 8, 4), (128, 16, 4), (64, 0, 4), (32, 4, 8),
]


def kv_shape(b, h, hkv, d, r, bits):
    return KVShape(b, h, hkv, d, r, bits, 8)


def quantizer(d, r, bits):
    return KVQuantizer((d - r, r), (bits, 8)) if r else KVQuantizer((d,), (bits,))


@pytest.mark.parametrize("d,r,bits", KV_CASES)
def test_kv_append_matches_kv_quantizer(cpu_ref, d, r, bits):
    shape = kv_shape(2, 4, 2, d, r, bits)
    k = torch.randn(2, 2, 5, d) * 3
    cache = cpu_ref.kv_cache(shape, 9)
    cpu_ref.kv_append(shape, k[:, :, :3].numpy(), cache, 0)  # prefill, then two appends in place
    cpu_ref.kv_append(shape, k[:, :, 3:4].numpy(), cache, 3)
    cpu_ref.kv_append(shape, k[:, :, 4:].numpy(), cache, np.array([4, 4]))
    q_ref, s_ref, z_ref = quantizer(d, r, bits).quantize(k)
    codes, scales, zeros = cache
    np.testing.assert_array_equal(codes[:, :, :5], q_ref.numpy())
    np.testing.assert_array_equal(scales[:, :, :5], s_ref.numpy())
    np.testing.assert_array_equal(zeros[:, :, :5], z_ref.numpy())
    assert not codes[:, :, 5:].any(), "appends must not write past their positions"


@pytest.mark.parametrize("past,seq", [(0, 6), (6, 1), (5, 3)])
@pytest.mark.parametrize("d,r,bits", KV_CASES[:2])
def test_kv_attention_matches_decoder(cpu_ref, d, r, bits, past, seq):
    b, h, hkv = 2, 6, 2
    shape = kv_shape(b, h, hkv, d, r, bits)
    k, v = torch.randn(b, hkv, past + seq, d), torch.randn(b, hkv, past + seq, d)
    q = torch.randn(b, h, seq, d)
    kc, vc = cpu_ref.kv_cache(shape, past + seq + 4), cpu_ref.kv_cache(shape, past + seq + 4)
    for cache, x in ((kc, k), (vc, v)):
        cpu_ref.kv_append(shape, x.numpy(), cache, 0)
    out = cpu_ref.kv_attention(shape, q.numpy(), kc, vc, past)
    quant = quantizer(d, r, bits)
    k_deq, v_deq = quant.dequantize(*quant.quantize(k)), quant.dequantize(*quant.quantize(v))
    ref = _attention(q, k_deq, v_deq, h // hkv, torch.float32).transpose(1, 2).reshape(b, seq, h * d)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_kv_sequences_at_their_own_lengths(cpu_ref):
    """past_length per sequence: each one's rows go to its own length, and its queries read its rows
    only, as if it were alone in the batch."""
    d, r, bits = KV_CASES[0]
    shape, one = kv_shape(2, 4, 2, d, r, bits), kv_shape(1, 4, 2, d, r, bits)
    lengths = np.array([5, 2])
    k, v, q = torch.randn(2, 2, 6, d), torch.randn(2, 2, 6, d), torch.randn(2, 4, 1, d)
    kc, vc = cpu_ref.kv_cache(shape, 8), cpu_ref.kv_cache(shape, 8)
    for cache, x in ((kc, k), (vc, v)):
        cpu_ref.kv_append(shape, x[:, :, :5].numpy(), cache, 0)
        cpu_ref.kv_append(shape, x[:, :, 5:].numpy(), cache, lengths)  # the new token at rows 5 and 2
    out = cpu_ref.kv_attention(shape, q.numpy(), kc, vc, lengths)
    for b, n in enumerate(lengths):
        kb, vb = cpu_ref.kv_cache(one, 8), cpu_ref.kv_cache(one, 8)
        for cache, x in ((kb, k), (vb, v)):
            rows = torch.cat([x[b:b + 1, :, :n], x[b:b + 1, :, 5:]], 2)
            cpu_ref.kv_append(one, rows.numpy(), cache, 0)
            assert all(np.array_equal(got[b, :, :n + 1], want[0, :, :n + 1])
                       for got, want in zip(kc if cache is kb else vc, cache))
        np.testing.assert_array_equal(out[b], cpu_ref.kv_attention(one, q[b:b + 1].numpy(), kb, vb, int(n))[0])


def test_kv_refuses_overflow_and_bad_heads(cpu_ref):
    shape = kv_shape(1, 4, 2, 16, 2, 4)
    cache = cpu_ref.kv_cache(shape, 2)
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.kv_append(shape, np.zeros((1, 2, 3, 16), np.float32), cache, 0)  # 3 tokens, room for 2
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.kv_append(shape, np.zeros((1, 2, 1, 16), np.float32), cache, 2)  # at row 2 of 2
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.kv_attention(shape, np.zeros((1, 4, 1, 16), np.float32), cache, cache, 2)
    with pytest.raises(NativeError, match="invalid"):
        cpu_ref.kv_append(kv_shape(1, 3, 2, 16, 2, 4), np.zeros((1, 2, 1, 16), np.float32), cache, 0)
