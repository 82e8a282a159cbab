"""Building one native target for the tests that need it: a module of its own (not conftest.py), so
test modules import it by a name no other test folder's conftest shadows."""

import os
import shutil
import subprocess

from resq_export.native import loader


def build_target(target: str) -> None:
    """Configure (once) and build one native target into build/; tools/setup.sh builds them all."""
    if os.environ.get(loader.ENV_DIR):
        return  # prebuilt libraries chosen explicitly
    if shutil.which("cmake") is None:  # the same build with g++/nvcc alone
        kind = {"resq_cpu_ref": "cpu", "resq_triton": "triton"}.get(target, "cuda")
        subprocess.run(["bash", str(loader.REPO_ROOT / "tools" / "build_native.sh"), kind], check=True,
                       capture_output=True)
        return
    build = loader.REPO_ROOT / "build"
    if not (build / "CMakeCache.txt").is_file():
        subprocess.run(["cmake", "-S", str(loader.REPO_ROOT), "-B", str(build)], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", "2"], check=True, capture_output=True)
