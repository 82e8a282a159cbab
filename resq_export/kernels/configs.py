"""The compiled configurations of every Triton kernel: the one list that the ahead-of-time build
(plugins/tools, run by CMake) compiles to cubins for each GPU architecture and that the plugins'
C++ loader looks kernels up in by name. The kernel modules say which configurations they need;
nothing here imports Triton until `all_configs()` is called."""

from __future__ import annotations

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


def all_configs() -> list[KernelConfig]:
    """Every configuration the plugins may launch (filled in by the kernel modules)."""
    return []
