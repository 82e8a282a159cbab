"""Flash-decoding over the quantised cache (kv_decode + kv_combine, and the whole op through
kv_launch.kv_attention) against the reference executor's attention.

Tolerance: the kernels read the same dequantised values as the reference (codes, scales and zero
points are exact), but compute the scores by the zero-point algebra s * (q . c - z * sum(q)) in float32,
the softmax in base 2 with exp2, online (a rescale per tile) and merged across splits, and divide once
at the end; the reference computes in float64. Each of these is a few float32 roundings of values of
order |q| |k| <= 10^2 here, so the outputs (|y| <= max |v| ~ 8) agree to ~1e-6 relative; ATOL leaves
a margin of 10. With a float16 Q the dots take float16: q is the given tensor (the reference reads the
same values), but p * s_v is rounded to it, a relative error of 2^-11 per term of a convex combination
of the values: at most that times max |v|, hence its ATOL. A bfloat16 Q is read as float32 (exact).
(On the GPU a float32 Q uses tf32x3 dots, ~2^-21 relative per product; the interpreter computes
float32 dots exactly, so that bound is argued, not measured, here.)"""

import pytest
import torch
from kv_cases import LAYOUTS, cache, make_call, op_atol, reference

from resq_export.kernels import kv_launch
from resq_export.kernels.kv_launch import KVAttrs, decode_attention, kv_attention

ATOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 2e-5}


def run_op(call, capacity, seed=1):
    k_cache, v_cache = cache(call.a, len(call.past_length), capacity, seed), cache(call.a, len(call.past_length),
                                                                                   capacity, seed + 1)
    k_ref, v_ref, y_ref = reference(call, k_cache, v_cache)
    y = kv_attention(call.a, call.q, call.k, call.v, k_cache, v_cache, call.past_length, call.key_rotation)
    return y, y_ref, (k_cache, v_cache), (k_ref, v_ref)


# lengths not multiples of the 64-key tile; past_length 0 (the first token) and capacity - S (the
# last); a batch of different lengths
CAP = 150
CASES = [([0], 1), ([CAP - 1, 62], 1), ([64, 1], 1), ([CAP - 3, 0], 3)]


@pytest.mark.parametrize("lengths,seq", CASES, ids=["first_token", "full_and_62", "64_and_1", "three_new"])
@pytest.mark.parametrize("name,a", [LAYOUTS[0], LAYOUTS[1], LAYOUTS[3]], ids=["tiny_d16", "llama_d128", "d64_b8_b4"])
def test_op_is_the_reference(name, a, lengths, seq):
    call = make_call(a, lengths, seq, seed=seq + sum(lengths))
    y, y_ref, caches, refs = run_op(call, CAP)
    for got, want in zip(caches[0] + caches[1], refs[0] + refs[1]):
        assert torch.equal(got, want)
    # S = 3 runs the prefill kernel (kv_launch.prefill_name): its bound, not flash-decoding's
    torch.testing.assert_close(y, y_ref, rtol=0, atol=op_atol(call, *refs, ATOL[torch.float32]))


@pytest.mark.parametrize("group", [1, 2, 8])
@pytest.mark.parametrize("d", [64, 128, 256])
def test_gqa_ratios_and_head_dims(group, d):
    a = KVAttrs(group * 2, 2, d, d // 8)
    call = make_call(a, [37, 90], 1, seed=group * d, rotation=False)
    y, y_ref, _, _ = run_op(call, 96)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=ATOL[torch.float32])


def test_odd_part_widths():
    call = make_call(LAYOUTS[4][1], [70], 2, seed=5)
    y, y_ref, _, refs = run_op(call, 80)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=op_atol(call, *refs, ATOL[torch.float32]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_q(dtype):
    a = LAYOUTS[1][1]
    call = make_call(a, [100, 7], 1, seed=9, rotation=False)
    call.q = call.q.to(dtype)
    k_cache, v_cache = cache(a, 2, 128, 1), cache(a, 2, 128, 2)
    _, _, y_ref = reference(call, k_cache, v_cache)  # the reference reads q's half-precision values
    kv_launch.append(a, call.k, call.v, k_cache, v_cache, call.past_length)
    y = decode_attention(a, call.q, k_cache, v_cache, call.past_length)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("splits", [1, 3, 64])
def test_any_split_count_gives_the_same_attention(splits):
    """The split is a speed choice: one split, a few, and more splits than tiles (empty chunks that
    store m = -inf, l = 0) agree with the reference."""
    a = LAYOUTS[0][1]
    call = make_call(a, [130, 5], 1, seed=splits, rotation=False)
    k_cache, v_cache = cache(a, 2, 140, 1), cache(a, 2, 140, 2)
    _, _, y_ref = reference(call, k_cache, v_cache)
    kv_launch.append(a, call.k, call.v, k_cache, v_cache, call.past_length)
    y = decode_attention(a, call.q, k_cache, v_cache, call.past_length, splits=splits)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=ATOL[torch.float32])


def test_split_count_follows_the_batch_and_the_capacity():
    a = LAYOUTS[1][1]
    assert kv_launch.n_splits(a, 1, 1, 32768) == kv_launch.KV_TARGET_PROGRAMS // 8  # fills the GPU (264 = 33 x 8)
    assert kv_launch.n_splits(a, 16, 1, 32768) == 3
    assert kv_launch.n_splits(a, 1, 1, 100) == -(-100 // kv_launch.KV_BLOCK_T)  # at most one per tile of the capacity
    assert kv_launch.n_splits(a, 64, 1, 4096) == 1


def test_layouts_without_a_kernel_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at most 32 high channels"):
        kv_launch.decode_tile(KVAttrs(8, 8, 128, 64))
    with pytest.raises(ValueError, match="head_dim <= 256"):
        kv_launch.decode_tile(KVAttrs(8, 8, 320, 0))


def test_prefill_kernel_from_two_new_positions_where_compiled():
    """kv_launch's policy (and triton_kv_attention.cpp's): S >= KV_PREFILL_MIN_S on the prefill kernel
    where its configuration is compiled, flash-decoding for one position and for the layouts without
    one (head_dim 256, a 4-bit high part), whose S > 1 test_op_is_the_reference also runs."""
    llama, d256, high4 = LAYOUTS[1][1], LAYOUTS[5][1], LAYOUTS[3][1]
    assert kv_launch.kv_kernels(llama, 3, True) == ["kv_rotate", "kv_rotate", "kv_append_b48",
                                                    "kv_prefill_d128_r16_k4_h8"]
    assert kv_launch.kv_kernels(llama, 2, False, torch.float16)[-1] == "kv_prefill_d128_r16_k4_h8_f16"
    assert kv_launch.kv_kernels(llama, 1, False)[-2:] == ["kv_decode_g16_d128_r16_b48_al4", "kv_combine"]
    for a in (d256, high4):
        assert kv_launch.prefill_name(a, 37) is None and kv_launch.kv_kernels(a, 37, False)[-1] == "kv_combine"
