"""The plugins' real enqueue on the CPU: ResQMixedLinearPrepared and ResQHadamard created through
their creators with an export's fields, configured with real tensor descriptions, enqueued on host
buffers while libresq_triton.so's recording launcher stands in for the GPU; the recorded launches
(the Triton cubins' names, grids and argument bytes, checked against the embedded metadata) are
executed by Triton's interpreter and the outputs equal the reference executor bit for bit. Every
line of the GPU path runs except the driver call and the compiler."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resq_export.native import loader

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _trt_include() -> Path | None:
    """The TensorRT headers the plugin library was built against (build/CMakeCache.txt)."""
    cache = ROOT / "build" / "CMakeCache.txt"
    if cache.is_file():
        found = re.search(r"^RESQ_TRT_INCLUDE:PATH=(.+)$", cache.read_text(), re.MULTILINE)
        if found and (Path(found.group(1)) / "NvInferRuntime.h").is_file():
            return Path(found.group(1))
    return None


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    native = loader.library_dir()
    plugins, include = native / "libresq_plugins.so", _trt_include()
    if not plugins.is_file() or not (native / "libresq_triton.so").is_file() or include is None:
        pytest.skip("libresq_plugins.so with libresq_triton.so and the TensorRT headers are needed "
                    "(cmake -DRESQ_TENSORRT_ROOT=<headers>)")
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    out = tmp_path_factory.mktemp("harness") / "libharness.so"
    cuda = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    subprocess.run(["g++", "-std=c++17", "-O1", "-fPIC", "-shared", "-Wno-deprecated-declarations", f"-I{include}",
                    f"-I{cuda}", str(HERE / "plugin_enqueue_harness.cpp"), f"-L{native}", "-lresq_plugins",
                    f"-Wl,-rpath,{native}", "-o", str(out)], check=True, capture_output=True)
    return native, out


def test_plugins_enqueue_replayed_by_the_interpreter_equal_the_reference(harness):
    native, lib = harness
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    run = subprocess.run([sys.executable, str(HERE / "plugin_enqueue_check.py"), str(native), str(lib)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    cases = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(cases) == 14
    assert [(c["case"], c["m"], c["differ"]) for c in cases if c["differ"]] == []
    # the C++ launch code launches what launch.py's policy names (linear_kernels, hadamard_kernels)
    assert [(c["case"], c["m"], c["launches"]) for c in cases if c["launches"] != c["policy"]] == []
    launched = {name for c in cases for name in c["launches"]}
    # quantiser, LQER projection and its quantiser, both GEMM tiles, the split-K reduction, the butterflies
    # and the left factor: what launch.py launches for these cases
    assert {"act_quant_a4_a8", "lqer_quant", "mixed_gemm_decode_w8_a4_a8", "mixed_gemm_small_w4_a4_a8",
            "mixed_gemm_prefill_w4_a4_a8", "splitk_reduce", "fwht_b8", "fwht_b128", "hadamard_mix_a16"} <= launched, launched


@pytest.mark.slow
def test_kernel_tests_pass_through_the_seam():
    """tests/kernels (every kernel against the reference executor) with each launch sent through
    libresq_triton.so's seam (triton_seam_plugin.py): packed, checked against the embedded cubins'
    parameters, recorded and replayed by the interpreter. About 45 s on 2 cores (728 launches of 41
    configurations on 2026-12-05)."""
    if not (loader.library_dir() / "libresq_triton.so").is_file():
        pytest.skip("libresq_triton.so is not built")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "triton_seam_plugin",
                          str(ROOT / "tests" / "kernels")], env=env, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:]
    assert re.search(r"triton seam \(record\): [1-9]\d* launches", run.stdout), run.stdout[-2000:]
