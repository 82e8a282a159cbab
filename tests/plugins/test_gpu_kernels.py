"""On a GPU: the Triton cubins of the mixed linear, the Hadamard and the KV attention through our loader
and launch seam against the reference executor, bit for bit where the contract is exact (the KV
attention's output within its stated tolerance; the cases of triton_cases.py, which
tools/triton_gpu_check.py runs too). Skipped, with the reason, where torch sees no CUDA device."""

import pytest
import torch
import triton_cases


pytestmark = pytest.mark.gpu


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


@pytest.mark.parametrize("lengths,seq", triton_cases.kv_calls(), ids=[f"{c[0]}_{c[1]}" for c in triton_cases.kv_calls()])
@pytest.mark.parametrize("name,a", triton_cases.kv_layouts(), ids=[c[0] for c in triton_cases.kv_layouts()])
def test_triton_kv_attention_equals_the_reference(triton_cuda, name, a, lengths, seq):
    """The KV attention's cubins (U_C, append, flash-decoding, combine): the appended bytes bit for bit,
    Y within the interpreter tests' tolerance (tests/kernels/test_kernel_kv_decode.py says why)."""
    differ, err, atol = triton_cases.check_kv(a, lengths, seq, "cuda")
    assert differ == 0, f"{name}: {differ} cache bytes/values differ from the reference's"
    assert err <= atol, f"{name}: |Y - reference| = {err} > {atol}"
