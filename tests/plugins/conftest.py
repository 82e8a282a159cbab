import os
import shutil
import subprocess

import pytest

from resq_export.native import loader


def _build(target: str) -> None:
    """Configure (once) and build one native target into build/; tools/setup.sh builds them all."""
    if os.environ.get(loader.ENV_DIR):
        return  # prebuilt libraries chosen explicitly
    if shutil.which("cmake") is None:  # the same build with g++/nvcc alone
        kind = "cpu" if target == "resq_cpu_ref" else "cuda"
        subprocess.run(["bash", str(loader.REPO_ROOT / "tools" / "build_native.sh"), kind], check=True,
                       capture_output=True)
        return
    build = loader.REPO_ROOT / "build"
    if not (build / "CMakeCache.txt").is_file():
        subprocess.run(["cmake", "-S", str(loader.REPO_ROOT), "-B", str(build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", "2"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def cpu_ref():
    _build("resq_cpu_ref")
    from resq_export.native import cpu_ref as ref

    return ref


@pytest.fixture(scope="session")
def cuda_kernels():
    """The CUDA kernel library on a CUDA device, or a skip that says what is missing."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    if shutil.which("nvcc") is None and not loader.library_path("resq_kernels").is_file():
        pytest.skip("nvcc not found and libresq_kernels.so not built")
    _build("resq_kernels")
    from resq_export.native import cuda

    return cuda
