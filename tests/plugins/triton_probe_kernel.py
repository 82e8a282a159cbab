"""A small real Triton kernel of the tests' own (an int8 tensor-core GEMM and a float scaling), to
prove the ahead-of-time pipeline (compile, embed, load, launch seam, SASS checks) independently of
the project's kernels: compiled by plugins/tools/compile_triton.py --configs
triton_probe_kernel:configs, and run by the interpreter against torch."""

from __future__ import annotations

import triton
import triton.language as tl

from resq_export.kernels.configs import KernelConfig


@triton.jit
def probe_gemm(a_ptr, b_ptr, c_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """C[M, N] int32 = A[M, K] int8 @ B[N, K]^T int8, both row-major; K % BLOCK_K == 0."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]
    b_ptrs = b_ptr + rn[None, :] * K + rk[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=rm[:, None] < M, other=0)
        b = tl.load(b_ptrs, mask=rn[None, :] < N, other=0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def probe_scale(x_ptr, y_ptr, n, scale, BLOCK: tl.constexpr):
    """y = x * scale (float32), no tensor cores."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * scale, mask=offs < n)


@triton.jit
def probe_scale_f64(x_ptr, y_ptr, n, scale, BLOCK: tl.constexpr):
    """probe_scale through float64: what the compiled-code checks must refuse on an RTX target."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n).to(tl.float64)
    # a product and a sum in float64 (LLVM narrows a lone product of widened floats back to FMUL)
    tl.store(y_ptr + offs, (x * scale.to(tl.float64) + x * x).to(tl.float32), mask=offs < n)


GEMM_SIG = {"a_ptr": "*i8", "b_ptr": "*i8", "c_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
            "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
GEMM_ALIGNED = ("a_ptr", "b_ptr", "c_ptr", "K")  # 16-byte aligned buffers, K a multiple of BLOCK_K
SCALE_SIG = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32", "scale": "fp32", "BLOCK": "constexpr"}


def configs() -> list[KernelConfig]:
    """What a kernel module declares: a decode-sized GEMM (mma.sync everywhere), a prefill-sized one
    (wgmma on sm_90a) and a float kernel without tl.dot."""
    return [
        KernelConfig("probe_gemm_m16", probe_gemm, GEMM_SIG, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64},
                     num_warps=4, num_stages=2, divisible16=GEMM_ALIGNED),
        KernelConfig("probe_gemm_m64", probe_gemm, GEMM_SIG, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64},
                     num_warps=4, num_stages=3, divisible16=GEMM_ALIGNED),
        KernelConfig("probe_scale", probe_scale, SCALE_SIG, {"BLOCK": 256}, num_warps=4, divisible16=("x_ptr", "y_ptr")),
    ]


def bad_configs() -> list[KernelConfig]:
    """Configurations each compiled-code check must reject (tests/plugins/test_triton_sass.py): the
    GEMM with no divisibility hints and a large tile spills registers on sm_80; the f64 scaler runs
    FP64 instructions; a 256x256x128 tile in 5 stages needs more shared memory than sm_86 allows."""
    return [
        KernelConfig("bad_spill", probe_gemm, GEMM_SIG, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64},
                     num_warps=4, num_stages=3, archs=("80",)),
        KernelConfig("bad_fp64", probe_scale_f64, SCALE_SIG, {"BLOCK": 256}, num_warps=4, archs=("89",)),
        KernelConfig("bad_smem", probe_gemm, GEMM_SIG, {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128},
                     num_warps=8, num_stages=5, archs=("86",), divisible16=GEMM_ALIGNED),
    ]
