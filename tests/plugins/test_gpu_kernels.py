"""On a GPU: the KV attention's CUDA kernels against the CPU references (bit-exact where the contract is
integer or step-by-step float32), and the Triton cubins of the mixed linear and the Hadamard through
our loader and launch seam against the reference executor, bit for bit (the cases of triton_cases.py,
which tools/triton_gpu_check.py runs too). Skipped, with the reason, where torch sees no CUDA device."""

import numpy as np
import pytest
import torch
import triton_cases
from tolerances import GPU_VS_CPU

from resq_export.native.params import KVShape

pytestmark = pytest.mark.gpu


def _cpu(t):
    return t.cpu().numpy()


@pytest.fixture(scope="module")
def triton_cuda(request):
    """launch.py's launches sent through our loader and launch seam to the embedded cubins on device
    0 (what the plugins do), or a skip that says what is missing; launch._run restored afterwards."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    project_triton = request.getfixturevalue("project_triton")  # built only where it can run
    from resq_export.kernels import launch
    from resq_export.kernels.configs import all_configs
    from resq_export.native import triton as T
    from resq_export.native.seam import SeamRunner

    T.prepare(0, project_triton)  # every cubin of this SM loaded, shared memory checked
    runner = SeamRunner(all_configs(), "cuda", project_triton)
    saved, launch._run = launch._run, runner
    yield runner
    launch._run = saved


@pytest.mark.parametrize("m", triton_cases.token_counts())
@pytest.mark.parametrize("name,lay,n,rank", triton_cases.linear_cases(), ids=[c[0] for c in triton_cases.linear_cases()])
def test_triton_linear_equals_the_reference(triton_cuda, name, lay, n, rank, m):
    """The Triton cubins of the mixed linear (quantiser, LQER, GEMM, split-K reduction) on the GPU,
    bit for bit against QuantLinear.gpu_reference."""
    diff, total = triton_cases.check_linear(lay, n, rank, m, "cuda")
    assert diff == 0, f"{name} M={m}: {diff} of {total} outputs differ"


@pytest.mark.parametrize("n", triton_cases.hadamard_sizes())
def test_triton_hadamard_equals_the_reference(triton_cuda, n):
    diff, total = triton_cases.check_hadamard(n, "cuda")
    assert diff == 0, f"n={n}: {diff} of {total} outputs differ"


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
