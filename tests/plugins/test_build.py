"""The native build: the CUDA kernel library carries code for every target architecture (compile
only; runs nowhere here), and its C API refuses bad input without a GPU."""

import re
import shutil
import subprocess

import pytest

from native_build import build_target as _build

from resq_export.native import loader

ARCHS = {"sm_80", "sm_86", "sm_89", "sm_90a", "sm_120"}  # CMake's default RESQ_CUDA_ARCHS


@pytest.fixture(scope="module")
def kernel_library():
    if shutil.which("nvcc") is None and not loader.library_path("resq_kernels").is_file():
        pytest.skip("nvcc not found: libresq_kernels.so is not built on this machine")
    _build("resq_kernels")
    return loader.library_path("resq_kernels")


def test_kernels_compiled_for_every_arch(kernel_library):
    tool = shutil.which("cuobjdump")
    if tool is not None:
        listing = subprocess.run([tool, "--list-elf", str(kernel_library)], capture_output=True, text=True,
                                 check=True).stdout
    else:  # every embedded cubin names its target (sm_80, sm_89, sm_90a) in the fat binary
        listing = " ".join(m.decode() for m in re.findall(rb"sm_\d+a?", kernel_library.read_bytes()))
    assert ARCHS <= set(re.findall(r"sm_\d+a?", listing)), listing


def test_kernel_library_reports_its_cubins(kernel_library):
    """What an ahead-of-time engine build asks (engine/runtime.kernel_archs) is what the fat binary
    holds, and the target check follows it: sm_121 runs the sm_120 cubin, sm_90 only 90a, sm_75 none."""
    from resq_export.engine.runtime import check_kernel_target, kernel_archs
    from resq_export.errors import ResQError

    archs = kernel_archs(kernel_library.with_name("libresq_plugins.so"))
    embedded = set(re.findall(rb"sm_\d+a?", kernel_library.read_bytes()))
    assert {f"sm_{a}".encode() for a in archs} <= embedded and ARCHS <= {f"sm_{a}" for a in archs}, archs
    for sm in (80, 86, 89, 90, 120, 121):
        check_kernel_target(archs, sm)
    with pytest.raises(ResQError, match="sm_80 or newer"):
        check_kernel_target(archs, 75)
    with pytest.raises(ResQError, match="RESQ_CUDA_ARCHS"):
        check_kernel_target(archs, 100)


def test_c_api_answers_without_a_device(kernel_library):
    """libresq_kernels.so holds no kernel any more (every op runs as Triton cubins): its C API answers the
    layout and the build's architectures without touching a device."""
    import ctypes

    lib = loader.load("resq_kernels")
    ok = loader.LinearShape(128, 112, 1, 1, 4, 8)
    lay = loader.LinearLayoutC()
    assert lib.resq_cuda_layout_of(ctypes.byref(ok), ctypes.byref(lay)) == 0
    assert (lay.gwp_low, lay.gwp_high, lay.act_low_pitch, lay.w_high_pitch) == (128, 64, 64, 64)
    assert not any(hasattr(lib, f) for f in ("resq_cuda_rotate", "resq_cuda_kv_append", "resq_cuda_kv_attention"))


def test_no_device_is_a_clear_status(kernel_library):
    """On a machine without a usable GPU the device query returns -4 (RESQ_ERR_NO_DEVICE) and the CUDA
    error's name, no crash."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from resq_export.native import cuda

    assert cuda.device_sm() == -4, cuda.last_error()
    assert cuda.last_error().startswith("cuda")


def test_generated_presence_rule_equals_the_exporters(tmp_path):
    """Which optional inputs a ResQMixedLinearPrepared node lists is ops.json's present_if rule: the
    exporter and the engine check read it in Python (export.spec.present_inputs), the plugin through
    resq_ops.h's input_present. Compiled here and compared for every combination of the gates."""
    import itertools
    import sys
    from pathlib import Path

    from resq_export.export.spec import PREPARED_LINEAR, op_spec, present_inputs

    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    root = Path(__file__).resolve().parents[2]
    header = tmp_path / "resq_ops.h"
    subprocess.run([sys.executable, str(root / "plugins/tools/gen_ops_header.py"),
                    str(root / "resq_export/export/ops.json"), str(header)], check=True)
    gates = sorted({i["present_if"] for i in op_spec(PREPARED_LINEAR)["inputs"] if i.get("present_if")})
    assert gates == ["high_groups", "low_groups", "lqer_rank"]
    cases = [dict(zip(gates, values)) for values in itertools.product((0, 2), repeat=len(gates))]
    cases.append({})  # every attribute at its default
    program = tmp_path / "presence.cpp"
    program.write_text("""
#include <cstdio>
#include <cstring>
#include "resq_ops.h"
namespace S = resq::spec::ResQMixedLinearPrepared;
struct Attrs {  // "name=value" pairs from argv
  int argc; char** argv;
  int get(const char* name, int fallback) const {
    for (int i = 1; i < argc; ++i) {
      const char* eq = std::strchr(argv[i], '=');
      if (eq && std::strncmp(argv[i], name, eq - argv[i]) == 0 && std::strlen(name) == size_t(eq - argv[i]))
        return std::atoi(eq + 1);
    }
    return fallback;
  }
};
int main(int argc, char** argv) {
  Attrs a{argc, argv};
  for (int i = 0; i < S::kNumInputs; ++i) std::printf("%d", S::input_present(i, a) ? 1 : 0);
  std::printf("\\n");
}
""".replace("#include <cstring>", "#include <cstring>\n#include <cstdlib>"))
    exe = tmp_path / "presence"
    subprocess.run(["g++", "-std=c++17", "-I", str(tmp_path), str(program), "-o", str(exe)], check=True)
    names = [i["name"] for i in op_spec(PREPARED_LINEAR)["inputs"]]
    for attrs in cases:
        out = subprocess.run([str(exe), *(f"{k}={v}" for k, v in attrs.items())], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert [n for n, bit in zip(names, out) if bit == "1"] == present_inputs(PREPARED_LINEAR, attrs), attrs


def test_native_libraries_report_the_specs_abi_version(cpu_ref):
    """The Python loader checks every library's C API version against ops.json's abi_version (a
    library left from another tree is refused by name, not called with the wrong arguments)."""
    from resq_export.errors import ResQError
    from resq_export.export.spec import check_abi, load_spec

    assert loader.load("resq_cpu_ref").resq_abi_version() == load_spec()["abi_version"]
    with pytest.raises(ResQError, match="libresq_kernels.so has C API version 99, this resq-export needs"):
        check_abi("libresq_kernels.so", lambda: 99)
    with pytest.raises(ResQError, match="has C API version None"):
        check_abi("libold.so", None)


def test_ctypes_parameter_structs_match_the_c_headers(cpu_ref):
    """Every struct of resq_params.h as the C compiler lays it out (size, each field's offset) equals
    its ctypes mirror: a field added on one side only fails here, not as a wrong pointer in a kernel."""
    from resq_export.native import params

    compiled = {line.split()[0]: line for line in cpu_ref.params_manifest().splitlines()}
    mirrored = {s.__name__: params.manifest_line(s) for s in params.ALL}
    assert set(compiled) == set(mirrored)
    for name, line in compiled.items():
        assert mirrored[name] == line, name
