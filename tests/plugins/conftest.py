import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from native_build import build_target as _build

from resq_export.native import loader


@pytest.fixture(scope="session")
def cpu_ref():
    _build("resq_cpu_ref")
    from resq_export.native import cpu_ref as ref

    return ref


def build_triton(out, configs: str | None = None) -> Path:
    """libresq_triton.so with the cubins of `configs` (module:function, importable from this folder;
    default the project's kernels), built into `out` by tools/build_native.sh; returns the library."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(RESQ_NATIVE_OUT=str(out), RESQ_TRITON_PATH=str(Path(__file__).parent), RESQ_PYTHON=sys.executable)
    if configs:
        env["RESQ_TRITON_CONFIGS"] = configs
    run = subprocess.run(["bash", str(loader.REPO_ROOT / "tools" / "build_native.sh"), "triton"], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return Path(out) / "libresq_triton.so"


@pytest.fixture(scope="session")
def probe_triton(tmp_path_factory):
    """The tests' probe kernels (triton_probe_kernel.configs) compiled for every arch and embedded in
    a libresq_triton.so of their own: the pipeline proven on a real kernel whatever the project has."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found: the CUDA toolkit's ptxas and runtime build libresq_triton.so")
    return build_triton(tmp_path_factory.mktemp("probe_triton"), "triton_probe_kernel:configs")


@pytest.fixture(scope="session")
def project_triton():
    """libresq_triton.so of the project's kernels, as CMake builds it (build/plugins)."""
    if shutil.which("nvcc") is None and not loader.library_path("resq_triton").is_file():
        pytest.skip("nvcc not found and libresq_triton.so not built")
    _build("resq_triton")
    return loader.library_path("resq_triton")
