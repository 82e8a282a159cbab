"""Every CUDA kernel against the CPU references (bit-exact where the contract is integer or
step-by-step float32) and against the reference executor, on fresh random inputs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import LAYOUTS, activations, contract_weights, layout, random_linear
from tolerances import GPU_VS_CPU

from resq_export.algo.hadamard import hadamard_left_factor
from resq_export.errors import NativeError
from resq_export.export.kernel_layout import PaddedLayout, prepare_lqer_a, prepare_weights
from resq_export.native.loader import linear_shape
from resq_export.native.params import KVShape

pytestmark = pytest.mark.gpu

# "a8" (8-bit activations on 4-bit weights): the quantiser, weight preparation and LQER projection
# run on the GPU; the GEMM refuses it (test_gemm_refuses_unsupported_bits). "all_high": no 4-bit part.
GPU_LAYOUTS = LAYOUTS + [
    ("all_high", layout([(2, 64, 8, 8)]), 24),
    ("llama8b_qkv", layout([(1, 3584, 4, 4), (1, 512, 8, 8)]), 256),
    ("llama8b_down", layout([(1, 14336, 4, 4)]), 64),
]


def _cpu(t):
    return t.cpu().numpy()


@pytest.mark.parametrize("rank", [4, 40])  # 40: more LQER components than warps per block
@pytest.mark.parametrize("tokens", [1, 5, 16, 37])
@pytest.mark.parametrize("name,lay,n", GPU_LAYOUTS, ids=[c[0] for c in GPU_LAYOUTS])
def test_quantize_and_gemm(cpu_ref, cuda_kernels, name, lay, n, tokens, rank):
    lin = random_linear(lay, n, rank=rank, bias=True, seed=tokens)
    x = activations(tokens, lay.in_features, seed=tokens + 1)
    shape = linear_shape(lay)
    act_c = cpu_ref.quantize_act(shape, x.numpy())
    act_g = cuda_kernels.quantize_act(shape, x.cuda())
    for a, b in zip(act_c, act_g):
        np.testing.assert_array_equal(_cpu(b), a)
    w_low, w_high = contract_weights(lin)
    w_c = cpu_ref.prepare_weights(shape, w_low, w_high, n)
    w_g = cuda_kernels.prepare_weights(shape, None if w_low is None else torch.from_numpy(w_low).cuda(),
                                       None if w_high is None else torch.from_numpy(w_high).cuda(), n)
    for a, b in zip(w_c, w_g):
        np.testing.assert_array_equal(_cpu(b), a)
    a_q = lin.lqer.a_q.to(torch.int8)
    a_c = cpu_ref.prepare_lqer_a(shape, a_q.numpy())
    a_g = cuda_kernels.prepare_lqer_a(shape, a_q.cuda())
    for a, b in zip(a_c, a_g):
        np.testing.assert_array_equal(_cpu(b), a)
    qa_c, sa_c = cpu_ref.lqer_project(shape, act_c, *a_c, lin.lqer.a_scale.numpy())
    qa_g, sa_g = cuda_kernels.lqer_project(shape, act_g, *a_g, lin.lqer.a_scale.cuda())
    np.testing.assert_array_equal(_cpu(qa_g), qa_c)
    np.testing.assert_array_equal(_cpu(sa_g), sa_c)
    if name == "a8":
        return  # the GEMM takes 4-bit activations on 4-bit weights only
    b_q, b_s, bias = lin.lqer.b_q.to(torch.int8), lin.lqer.b_scale, lin.bias
    y_c = cpu_ref.mixed_gemm(shape, act_c, w_c, lin.wscale.numpy(), (qa_c, sa_c, b_q.numpy(), b_s.numpy()), bias.numpy())
    y_g = cuda_kernels.mixed_gemm(shape, act_g, w_g, lin.wscale.cuda(), (qa_g, sa_g, b_q.cuda(), b_s.cuda()), bias.cuda())
    np.testing.assert_array_equal(_cpu(y_g), y_c)
    np.testing.assert_array_equal(_cpu(y_g), lin(x).numpy())  # the reference executor itself
    y_full = cuda_kernels.mixed_linear(shape, x.cuda(), w_g, lin.wscale.cuda(), (*a_g, lin.lqer.a_scale.cuda()),
                                       (b_q.cuda(), b_s.cuda()), bias.cuda())
    np.testing.assert_array_equal(_cpu(y_full), y_c)
    # the TensorRT plugin's path: weights prepared at export (numpy), exact-size, None where a part is absent
    padded = PaddedLayout(shape.k, shape.k_low, shape.low_groups, shape.high_groups)
    w_e = [None if w is None else torch.from_numpy(w).cuda() for w in prepare_weights(padded, w_low, w_high)]
    a_e = [torch.from_numpy(a).cuda() for a in prepare_lqer_a(padded, a_q.numpy())]
    y_export = cuda_kernels.mixed_linear(shape, x.cuda(), w_e, lin.wscale.cuda(), (*a_e, lin.lqer.a_scale.cuda()),
                                         (b_q.cuda(), b_s.cuda()), bias.cuda())
    np.testing.assert_array_equal(_cpu(y_export), y_c)
    y16 = cuda_kernels.mixed_gemm(shape, act_g, w_g, lin.wscale.cuda(), (qa_g, sa_g, b_q.cuda(), b_s.cuda()),
                                  bias.cuda(), out_dtype=torch.float16)
    assert torch.equal(y16.cpu(), torch.from_numpy(y_c).half())
    ybf = cuda_kernels.mixed_gemm(shape, act_g, w_g, lin.wscale.cuda(), (qa_g, sa_g, b_q.cuda(), b_s.cuda()),
                                  bias.cuda(), out_dtype=torch.bfloat16)
    assert torch.equal(ybf.cpu(), torch.from_numpy(y_c).bfloat16())


def test_large_m_gemm(cpu_ref, cuda_kernels):
    lay = layout([(1, 448, 4, 4), (1, 64, 8, 8)])
    lin = random_linear(lay, 256, seed=9)
    x = activations(300, lay.in_features, seed=10)
    shape = linear_shape(lay)
    w_low, w_high = contract_weights(lin)
    w_g = cuda_kernels.prepare_weights(shape, torch.from_numpy(w_low).cuda(), torch.from_numpy(w_high).cuda(), 256)
    y = cuda_kernels.mixed_linear(shape, x.cuda(), w_g, lin.wscale.cuda())
    np.testing.assert_array_equal(_cpu(y), lin(x).numpy())


def test_gemm_refuses_unsupported_bits(cuda_kernels):
    lay = LAYOUTS[3][1]  # 8-bit activations on the 4-bit weights: CPU reference only
    shape = linear_shape(lay)
    lin = random_linear(lay, 16)
    act = cuda_kernels.quantize_act(shape, activations(2, lay.in_features).cuda())
    w_low, w_high = contract_weights(lin)
    w = cuda_kernels.prepare_weights(shape, torch.from_numpy(w_low).cuda(), torch.from_numpy(w_high).cuda(), 16)
    with pytest.raises(NativeError, match="unsupported"):
        cuda_kernels.mixed_gemm(shape, act, w, lin.wscale.cuda())


@pytest.mark.parametrize("n", [512, 1536, 640, 14336])
def test_hadamard(cpu_ref, cuda_kernels, n):
    left = hadamard_left_factor(n)[0].float()
    x = torch.randn(9, n)
    np.testing.assert_array_equal(_cpu(cuda_kernels.hadamard(x.cuda(), left.cuda())), cpu_ref.hadamard(x.numpy(), left.numpy()))


def test_rotate(cpu_ref, cuda_kernels):
    x, u = torch.randn(12, 128), torch.linalg.qr(torch.randn(128, 128))[0]
    np.testing.assert_array_equal(_cpu(cuda_kernels.rotate(x.cuda(), u.cuda())), cpu_ref.rotate(x.numpy(), u.numpy()))


@pytest.mark.parametrize("d,r,bits", [(128, 16, 4), (64, 8, 4), (64, 0, 8), (80, 10, 4)])
@pytest.mark.parametrize("past,seq", [(0, 17), (100, 1), (4095, 1), (40, 9)])
def test_kv_cache(cpu_ref, cuda_kernels, d, r, bits, past, seq):
    """The in-place flow: the past rows, then the new ones written at each sequence's length (the
    second sequence shorter) into one buffer with spare capacity; the same bytes and attention as
    the CPU reference."""
    b, h, hkv = 2, 8, 2
    shape = KVShape(b, h, hkv, d, r, bits, 8)
    capacity = past + seq + 3
    lengths = np.array([past, past // 2], np.int32)
    k, v, q = torch.randn(b, hkv, past + seq, d), torch.randn(b, hkv, past + seq, d), torch.randn(b, h, seq, d)
    caches_c = [cpu_ref.kv_cache(shape, capacity), cpu_ref.kv_cache(shape, capacity)]
    caches_g = [cuda_kernels.kv_cache(shape, capacity), cuda_kernels.kv_cache(shape, capacity)]
    for x, cc, cg in zip((k, v), caches_c, caches_g):
        for cg_part in cg:
            cg_part.zero_()
        if past:
            cpu_ref.kv_append(shape, x[:, :, :past].numpy(), cc, 0)
            cuda_kernels.kv_append(shape, x[:, :, :past].contiguous().cuda(), cg, 0)
        cpu_ref.kv_append(shape, x[:, :, past:].numpy(), cc, lengths)
        cuda_kernels.kv_append(shape, x[:, :, past:].contiguous().cuda(), cg, torch.from_numpy(lengths))
        for a, g in zip(cc, cg):
            np.testing.assert_array_equal(_cpu(g), a)
    out_c = cpu_ref.kv_attention(shape, q.numpy(), *caches_c, lengths)
    out_g = cuda_kernels.kv_attention(shape, q.cuda(), *caches_g, torch.from_numpy(lengths))
    np.testing.assert_allclose(_cpu(out_g), out_c, **GPU_VS_CPU)


@pytest.mark.parametrize("workspace", ["sized", "none"])
def test_kv_attention_splits_and_spare_capacity(cpu_ref, cuda_kernels, workspace):
    """One head, a 128-token prefill into a cache of 2000 rows (left uninitialised on the GPU beyond
    the length): the keys split by the capacity, most splits past the length and empty; with no
    workspace the kernel runs unsplit and must agree just as well."""
    shape = KVShape(1, 1, 1, 128, 16, 4, 8)
    seq, capacity = 128, 2000
    k, v, q = (torch.randn(1, 1, seq, 128) for _ in range(3))
    caches_c = [cpu_ref.kv_cache(shape, capacity) for _ in range(2)]
    caches_g = [cuda_kernels.kv_cache(shape, capacity) for _ in range(2)]
    for x, cc, cg in zip((k, v), caches_c, caches_g):
        cpu_ref.kv_append(shape, x.numpy(), cc, 0)
        cuda_kernels.kv_append(shape, x.cuda(), cg, 0)
    ws = None if workspace == "sized" else torch.empty(1, dtype=torch.uint8, device="cuda")
    out_c = cpu_ref.kv_attention(shape, q.numpy(), *caches_c, 0)
    out_g = cuda_kernels.kv_attention(shape, q.cuda(), *caches_g, 0, workspace=ws)
    np.testing.assert_allclose(_cpu(out_g), out_c, **GPU_VS_CPU)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quantize_half_inputs(cpu_ref, cuda_kernels, dtype):
    lay = LAYOUTS[0][1]
    shape = linear_shape(lay)
    x = activations(6, lay.in_features).to(dtype)
    expected = cpu_ref.quantize_act(shape, x.float().numpy())  # widening to float32 is exact
    for a, b in zip(expected, cuda_kernels.quantize_act(shape, x.cuda())):
        np.testing.assert_array_equal(_cpu(b), a)


OTHER_PATH_SCRIPT = """
import sys
import numpy as np, torch
from helpers import LAYOUTS, activations, contract_weights, random_linear
from resq_export.native import cuda as K
from resq_export.native.loader import linear_shape
for name, lay, n in LAYOUTS:
    if name == "a8":
        continue
    for tokens in (1, 16, 37):
        lin = random_linear(lay, n, seed=tokens)
        x = activations(tokens, lay.in_features, seed=tokens + 1)
        shape = linear_shape(lay)
        w_low, w_high = contract_weights(lin)
        w = K.prepare_weights(shape, None if w_low is None else torch.from_numpy(w_low).cuda(),
                              None if w_high is None else torch.from_numpy(w_high).cuda(), n)
        y = K.mixed_linear(shape, x.cuda(), w, lin.wscale.cuda(), mma=int(sys.argv[1]))
        np.testing.assert_array_equal(y.cpu().numpy(), lin(x).numpy(), err_msg=f"{name} t={tokens}")
print("OK")
"""


def test_gemm_other_int4_path(cuda_kernels):
    """The 4-bit MMA path this GPU does not take by default (native m16n8k64 on Hopper, the INT8
    unpacking before it), forced by the params' mma field, in a subprocess: an illegal instruction
    there must not take down this process's CUDA context."""
    from resq_export.native.params import MMA_INT4, MMA_INT4_AS_INT8

    other = MMA_INT4 if cuda_kernels.device_sm() >= 90 else MMA_INT4_AS_INT8
    here = Path(__file__).resolve().parent
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", OTHER_PATH_SCRIPT, str(other)], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0 and "OK" in result.stdout, f"mma={other}: {result.stderr[-3000:]}"
