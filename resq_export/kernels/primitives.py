"""Device helpers shared by the kernels: exact rounding that the interpreter and the compiler agree on.

Every float operation here is one IEEE float32 operation with round-to-nearest-even, so the kernels
compute the same bits on a GPU (compiled with `enable_fp_fusion=False`, docs/ops.md) as under
TRITON_INTERPRET=1 on numpy, and as the reference executor in torch.
"""

from __future__ import annotations

import triton
import triton.language as tl

# 1.5 * 2^23: adding it to a float32 of magnitude below 2^22 leaves an integer (the ulp there is 1),
# rounded half to even by the addition itself; subtracting it again is exact.
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def rne(v):
    """Round half to even (torch.round) for |v| < 2^22, in float32. Triton has no rint that the
    interpreter runs (libdevice is a stub there), and a float-to-int conversion truncates; every value
    rounded by the kernels is a quantisation code or zero point, below 2^8 in magnitude."""
    return (v + _RNE_MAGIC) - _RNE_MAGIC


@triton.jit
def div_rn(a, b):
    """a / b correctly rounded (`/` on float32 compiles to an approximate division on NVIDIA GPUs)."""
    return tl.math.div_rn(a, b)


@triton.jit
def to_bf16_rne(v):
    """float32 -> bfloat16 rounded to nearest even, by integer arithmetic on the bits (what the GPU's
    cvt.rn.bf16.f32 does; the interpreter's own conversion truncates, or with rounding asked for rounds
    ties away from zero). Finite values."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
