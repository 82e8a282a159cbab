"""The Triton kernels under Triton's interpreter, on CPU tensors. TRITON_INTERPRET must be set before
`triton.jit` decorates the kernels (it decides there between compiled and interpreted functions), so
it is set here, before any test module of this folder imports resq_export.kernels."""

import os
import sys
from pathlib import Path

import pytest

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))  # helpers: random linears

try:
    import triton  # noqa: F401
except ImportError as exc:  # the package pins triton; a bare environment still gets a reason, not an error
    print(f"tests/kernels skipped: triton is not importable ({exc})")
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def _interpreted():
    """Fail loudly if the kernels were decorated before TRITON_INTERPRET was set (they would try a GPU)."""
    from triton.runtime.interpreter import InterpretedFunction

    from resq_export.kernels.mixed_gemm import mixed_gemm_kernel

    if not isinstance(mixed_gemm_kernel, InterpretedFunction):
        pytest.exit("resq_export.kernels was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1", 2)


@pytest.fixture(scope="session")
def kernel_artifacts(tiny_dirs, calib_file, tmp_path_factory):
    """Real quantised tiny models: ResQ with LQER and q/k/v bias (Qwen2), all-8-bit RTN (W8A8), and
    QuaRot (all 4-bit, no 8-bit part)."""
    from tiny_models import SMALL, run_cli

    root = tmp_path_factory.mktemp("kart")
    runs = {
        "resq_lqer": ("qwen2", ["--method", "resq", "--lqer-rank", "4", "--down-group-size", "32"]),
        "w8a8": ("qwen2", ["--method", "rtn", "--w-bits", "8", "--a-bits", "8"]),
        "quarot": ("mistral", ["--method", "quarot"]),
    }
    out = {}
    for name, (family, extra) in runs.items():
        result = run_cli("quantize", "--model", tiny_dirs[family], "--out", root / name, "--calib-data", calib_file,
                         *SMALL, *extra)
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out
