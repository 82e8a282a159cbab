"""What one compiled Triton kernel configuration is (KernelConfig) and how a kernel module describes
one (_config): a leaf module, so that a kernel module can list its own configurations without
importing configs.py, which imports the kernel modules and their launch policies."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

# sm_80 A100, sm_86 RTX 30xx, sm_89 RTX 40xx / L40, sm_90a Hopper (wgmma), sm_120 RTX 50xx
ARCHS = ("80", "86", "89", "90a", "120")


@dataclass(frozen=True)
class KernelConfig:
    name: str  # unique C identifier of this compiled variant, e.g. "mixed_gemm_g128_m16"
    fn: object  # the @triton.jit function
    signature: dict[str, str]  # every argument -> Triton type: "*i8", "*fp32", "i32", "fp32", "constexpr"
    constexprs: dict[str, int | bool] = field(default_factory=dict)  # values of the constexpr arguments
    num_warps: int = 4
    num_stages: int = 2
    archs: tuple[str, ...] = ARCHS
    # Arguments the launcher guarantees to be multiples of 16 (pointers: 16-byte aligned addresses, NULL
    # allowed; integers: multiples of 16). Compile with ASTSource(..., attrs={(index,): [["tt.divisibility",
    # 16]]}) for each: without it the loads stay byte loads, no cp.async pipeline, and the GEMM spills.
    divisible16: tuple[str, ...] = ()


def _signature(fn, types: dict[str, str]) -> dict[str, str]:
    """Every argument of fn in order: its type from `types`, "i32" for the unnamed ones (sizes,
    pitches, counts), "constexpr" for the constexpr ones."""
    # a JITFunction knows its constexpr parameters; an InterpretedFunction (TRITON_INTERPRET=1) wraps the
    # Python function, whose annotations say it
    params = inspect.signature(getattr(fn, "fn", fn)).parameters.values()
    const = {p.name for p in params if "constexpr" in str(p.annotation)}
    return {name: "constexpr" if name in const else types.get(name, "i32") for name in fn.arg_names}


def _config(name, fn, types, tile, aligned=(), **constexprs) -> KernelConfig:
    """aligned: the integer arguments that are multiples of 16; every pointer is 16-byte aligned."""
    consts, warps, stages = tile
    sig = _signature(fn, types)
    div = tuple(a for a, t in sig.items() if t.startswith("*") or a in aligned)
    return KernelConfig(name, fn, sig, {**consts, **constexprs}, warps, stages, divisible16=div)
