"""The KV-cache append and the key rotation U_C against the reference executor, bit for bit: the
rotated q and k (the contract's GPU order), and every appended code, scale and zero point, written in
place at past_length[b] with the rest of the cache untouched."""

import pytest
import torch
from kv_cases import LAYOUTS, cache, make_call, quantizer, reference

from resq_export.decoder import rotate_keys, rotate_keys_gpu
from resq_export.kernels.kv_launch import append, rotate


@pytest.mark.parametrize("d", [16, 64, 128])
def test_rotation_is_the_gpu_order_bit_for_bit(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(3, 5, 7, d, generator=g)  # 105 rows: not a multiple of the 32-row tile
    u = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    y = rotate(x, u)
    assert torch.equal(y, rotate_keys_gpu(x, u))
    # and it is U_C: the float64 island's result up to float32 rounding of the sums
    torch.testing.assert_close(y, rotate_keys(x, u, torch.float64), rtol=0, atol=1e-5)


# (lengths of the batch's sequences, new rows): past_length 0, capacity - S (the last rows), lengths
# that are no multiple of any tile, different per sequence
CAPACITY = 40
APPENDS = [([0], 1), ([CAPACITY - 11, 0], 11), ([17, 3], 1), ([CAPACITY - 1], 1)]


@pytest.mark.parametrize("lengths,seq", APPENDS, ids=["empty", "to_capacity", "decode", "last_row"])
@pytest.mark.parametrize("name,a", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_appended_bytes_are_the_reference(name, a, lengths, seq):
    call = make_call(a, lengths, seq, seed=len(name) + seq, rotation=False)
    k_cache, v_cache = cache(a, len(lengths), CAPACITY, 1), cache(a, len(lengths), CAPACITY, 2)
    k_ref, v_ref, _ = reference(call, k_cache, v_cache)
    append(a, call.k, call.v, k_cache, v_cache, call.past_length)
    for got, want in zip(k_cache + v_cache, k_ref + v_ref):
        assert torch.equal(got, want)  # the new rows bit for bit, every other row unchanged


def test_rows_past_the_capacity_are_not_written():
    """past_length + S beyond the capacity (outside the contract): the rows that fit are written, nothing
    past the cache's end (guard bytes after each tensor stay as they were)."""
    a = LAYOUTS[1][1]
    cap, seq = 8, 4
    call = make_call(a, [cap - 2], seq, seed=3, rotation=False)
    guarded = []
    for t in cache(a, 1, cap, 4) + cache(a, 1, cap, 5):
        buf = torch.full((t.numel() + 64,), 7, dtype=t.dtype)
        buf[: t.numel()] = t.reshape(-1)
        guarded.append(buf)
    views = [buf[: buf.numel() - 64].view(1, a.num_kv_heads, cap, -1) for buf in guarded]
    append(a, call.k, call.v, views[:3], views[3:], call.past_length)
    for buf in guarded:
        assert (buf[-64:] == 7).all()
    quant = quantizer(a)
    rows = quant.quantize(call.k[0, :, :2])
    for t, want in zip(views[:3], rows):
        assert torch.equal(t[0, :, cap - 2:], want)
