"""The Triton kernels compiled ahead of time (plugins/tools/compile_triton.py) and embedded in
libresq_triton.so with their loader: every configuration x arch is in the table with its metadata,
the library loads and lists them with no driver, the loader picks the cubin by SM or says why not,
and a launch through the seam, recorded and replayed by the interpreter, computes what torch does."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import triton_probe_kernel as probe
from resq_export.kernels.configs import all_configs
from resq_export.native import triton as T

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _manifest(lib: Path) -> dict:
    return json.loads((lib.parent / "triton" / "triton_kernels.json").read_text())


def _expected(configs, archs=None) -> list[tuple[str, str]]:
    return sorted((c.name, a) for c in configs for a in c.archs if archs is None or a in archs)


def test_table_lists_every_configuration_and_arch(probe_triton):
    rows = T.kernels(probe_triton)
    assert sorted((k.name, k.arch) for k in rows) == _expected(probe.configs())
    assert len(rows) == 15 and T.versions(probe_triton).startswith("triton 3.9.0; ptxas 13.0")


def test_project_table_lists_every_configuration_and_arch(project_triton):
    """The library CMake builds holds exactly resq_export.kernels' configurations x RESQ_CUDA_ARCHS."""
    rows = T.kernels(project_triton)
    built = _manifest(project_triton)
    archs = {k["arch"] for k in built["kernels"]} or None
    assert sorted((k.name, k.arch) for k in rows) == _expected(all_configs(), archs)
    assert [k.sha256 for k in rows] == [k["sha256"] for k in built["kernels"]]


def test_embedded_metadata_is_the_compilers(probe_triton):
    """What the loader launches with (entry name, parameters with Triton's two trailing scratch
    pointers, warps, shared memory) is what triton.compile reported, and the embedded bytes are the
    cubin that was compiled (sha256)."""
    built = {(k["name"], k["arch"]): k for k in _manifest(probe_triton)["kernels"]}
    for row in T.kernels(probe_triton):
        meta = built[(row.name, row.arch)]
        assert (row.kernel, row.num_warps, row.shared, row.static_shared, row.registers) == (
            meta["kernel"], meta["num_warps"], meta["shared"], meta["static_shared"], meta["registers"])
        assert [p.name for p in row.params] == [p["name"] for p in meta["params"]]
        assert [p.name for p in row.params[-2:]] == ["global_scratch", "profile_scratch"]
        assert hashlib.sha256(row.cubin).hexdigest() == row.sha256 == meta["sha256"]
        assert row.cubin == (probe_triton.parent / "triton" / meta["cubin"]).read_bytes()
        # an sm_XY cubin is an ELF for that SM (90a: arch-specific; 120 without `a`, so 12.1 runs it)
        assert row.cubin[:4] == b"\x7fELF" and row.arch_specific == (row.arch == "90a")
    gemm = next(r for r in T.kernels(probe_triton) if r.name == "probe_gemm_m16")
    assert gemm.kernel == "probe_gemm" and gemm.num_warps == 4
    assert [(p.name, p.type, p.div16) for p in gemm.params[:6]] == [
        ("a_ptr", "*i8", True), ("b_ptr", "*i8", True), ("c_ptr", "*i32", True), ("M", "i32", False),
        ("N", "i32", False), ("K", "i32", True)]


def test_library_loads_and_lists_without_a_driver(probe_triton):
    """In a fresh process (no CUDA driver on this machine): dlopen, list, select; a GPU call fails
    with a status and a message, not an exit. The library needs no libcuda."""
    import shutil

    needed = subprocess.run(["readelf", "-d", str(probe_triton)], capture_output=True, text=True, check=True).stdout
    assert "libcudart" in needed and "libcuda.so" not in needed
    program = f"""
import ctypes
lib = ctypes.CDLL({str(probe_triton)!r})
lib.resq_triton_last_error.restype = ctypes.c_char_p
print(lib.resq_triton_kernel_count(), lib.resq_triton_select(b"probe_scale", 8, 9))
print(lib.resq_triton_prepare(0), lib.resq_triton_last_error().decode())
"""
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("a GPU driver is present")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "15 12"
    status, message = out[1].split(" ", 1)
    assert status in ("3", "4") and message.startswith("cudaGetDevice: cuda"), out


@pytest.mark.parametrize("sm, arch", [((8, 0), "80"), ((8, 6), "86"), ((8, 7), "86"), ((8, 9), "89"), ((9, 0), "90a"),
                                      ((12, 0), "120"), ((12, 1), "120")])
def test_loader_picks_the_cubin_by_sm(probe_triton, sm, arch):
    assert T.select("probe_gemm_m64", *sm, path=probe_triton) == arch


@pytest.mark.parametrize("sm", [(7, 5), (9, 1), (10, 0), (11, 0)])
def test_no_cubin_for_the_sm_is_a_clear_error(probe_triton, sm):
    """sm_90a runs on 9.0 only; no sm_100 cubin is embedded; sm_75 is below every cubin."""
    with pytest.raises(ValueError, match=rf"no cubin of Triton kernel probe_gemm_m64 runs on sm_{sm[0]}{sm[1]} "
                                         r"\(embedded: sm_80, sm_86, sm_89, sm_90a, sm_120\)"):
        T.select("probe_gemm_m64", *sm, path=probe_triton)
    with pytest.raises(ValueError, match="no Triton kernel named nope is embedded"):
        T.select("nope", 8, 0, path=probe_triton)


def test_launch_checks_its_arguments(probe_triton):
    """Argument count and sizes, and the divisibility the cubin was compiled assuming (a misaligned
    pointer or a K that is not a multiple of 16 would be undefined behaviour on the GPU)."""
    import struct

    ptr, i32 = (lambda v: struct.pack("<Q", v)), (lambda v: struct.pack("<i", v))
    good = [ptr(4096), ptr(8192), ptr(16384), i32(5), i32(7), i32(64)]
    with T.recording(8, 9, path=probe_triton) as records:
        T.launch("probe_gemm_m16", (1, 1), good, path=probe_triton)
        for args, message in [(good[:5], "5 arguments, the kernel takes 6"),
                              (good[:3] + [ptr(5)] + good[4:], "argument M has 8 bytes, the kernel takes 4"),
                              ([ptr(4100)] + good[1:], "argument a_ptr = 4100 is not a multiple of 16"),
                              (good[:5] + [i32(72)], "argument K = 72 is not a multiple of 16")]:
            with pytest.raises(ValueError, match=message):
                T.launch("probe_gemm_m16", (1, 1), args, path=probe_triton)
    assert len(records) == 1 and records[0].grid == (1, 1, 1) and records[0].args == b"".join(good)


def test_seam_launch_replayed_by_the_interpreter_is_exact(probe_triton):
    """The probe GEMM launched through the seam's recording launcher (host buffers), its records
    executed by Triton's interpreter: bit-exact against torch's integer matmul."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    run = subprocess.run([sys.executable, str(HERE / "triton_seam_probe.py"), str(probe_triton)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["exact"]
    assert [(r[0], r[1]) for r in result["records"]] == [("probe_gemm_m64", [1, 1, 1]), ("probe_gemm_m16", [3, 2, 1])]
    assert len(bytes.fromhex(result["records"][1][2])) == 3 * 8 + 3 * 4


def test_engine_manifest_names_the_cubins_and_refuses_a_target_without_them(probe_triton):
    """out.plan.json's "triton_kernels": the triton and ptxas versions and every cubin's sha256 of
    the libresq_triton.so beside the plugin library; a target with no cubin is refused before any
    TensorRT work, in the loader's words."""
    from resq_export.engine.build import triton_kernels
    from resq_export.errors import ResQError

    plugins = probe_triton.with_name("libresq_plugins.so")  # only its folder is read
    section = triton_kernels(plugins, 89)
    assert section["triton"] == "3.9.0" and section["ptxas"].startswith("13.0 (V13.0.")
    assert section["cubins"] == {f"{k.name}.sm_{k.arch}": hashlib.sha256(k.cubin).hexdigest()
                                 for k in T.kernels(probe_triton)}
    assert section["library"]["sha256"] == hashlib.sha256(probe_triton.read_bytes()).hexdigest()
    assert triton_kernels(plugins, 121)["cubins"] == section["cubins"]
    with pytest.raises(ResQError, match=r"sm_100 cannot run the plugins' kernels: no cubin of Triton kernel probe_"):
        triton_kernels(plugins, 100)
    assert triton_kernels(probe_triton.parent / "elsewhere" / "libresq_plugins.so", 89) is None


def test_project_kernels_through_the_seam_equal_the_reference(project_triton):
    """launch.py's launches of the real kernels (a linear with LQER and bias at decode and prefill, the
    online Hadamard, the tiny models' KV attention at decode and prefill) packed into bytes, checked by
    the C++ launcher against the embedded cubins' parameters (count, sizes, the divisibility they were
    compiled assuming), recorded, and executed by the interpreter from the recorded bytes: bit-exact
    against the reference executor (the attention's Y within its tolerance). The same script runs the
    cubins on a GPU (tools/gpu_session.sh, --mode cuda)."""
    if not T.kernels(project_triton):
        pytest.skip("resq_export.kernels declares no configuration yet")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(ROOT / "tools/triton_gpu_check.py"), "--mode", "record", "--quick",
                          "--lib", str(project_triton)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # 22 launches of 9 configurations for the linears and the Hadamard, 14 of 5 for the tiny KV layout's
    # three calls (U_C twice, append, decode + combine or the prefill kernel)
    assert "36 launches of 14 configurations through the seam; 0 case(s) failed" in run.stdout
    assert run.stdout.count("ok  kv tiny_d16") == 3


def test_project_table_carries_the_launch_policy(project_triton):
    """The C++ launch code (plugins/*/triton_*.cpp) takes its tiles from the embedded constexprs and
    its thresholds (split decode / small / prefill tile) from launch.py's constants compiled in."""
    from resq_export.kernels import launch

    rows = T.kernels(project_triton)
    if not rows:
        pytest.skip("resq_export.kernels declares no configuration yet")
    by_name = {c.name: c for c in all_configs()}
    assert all(r.constexprs == {k: int(v) for k, v in by_name[r.name].constexprs.items()} for r in rows)
    policy = T.policy(project_triton)
    assert policy["SPLIT_MAX_M"] == launch.SPLIT_MAX_M and policy["DECODE_MAX_M"] == launch.DECODE_MAX_M


def test_seam_picks_the_variant_of_the_tensors_types():
    """Configurations of one kernel that differ only by pointer types (x in float16: act_quant_*_f16)
    are told apart by the tensors passed; an unused pointer of another type (y of the split decode
    GEMM) does not hide the one variant there is."""
    import torch

    from resq_export.kernels import launch
    from resq_export.kernels.act_quant import act_quant_kernel
    from resq_export.kernels.mixed_gemm import mixed_gemm_kernel
    from resq_export.native.seam import SeamRunner

    runner = SeamRunner(all_configs())
    consts, warps, stages = launch.ACT_TILE
    bits = dict(A_BITS_LOW=4, A_BITS_HIGH=8)
    for dtype, name in [(torch.float32, "act_quant_a4_a8"), (torch.float16, "act_quant_a4_a8_f16"),
                        (torch.bfloat16, "act_quant_a4_a8_bf16")]:
        args = (torch.zeros(1, dtype=dtype),) + (torch.zeros(1, dtype=torch.uint8),) * 2 + (
            torch.zeros(1), torch.zeros(1, dtype=torch.int32)) + (0,) * 11
        assert runner.config_of(act_quant_kernel, {**consts, **bits}, warps, stages, args).name == name
    consts, warps, stages = launch.GEMM_TILES["decode"]
    gemm = {**consts, **bits, "W_BITS_LOW": 4, "CHUNK": 8}
    y16 = [None] * 13 + [torch.zeros(1, dtype=torch.float16)] + [None] * 15
    assert runner.config_of(mixed_gemm_kernel, gemm, warps, stages, y16).name == "mixed_gemm_decode_w4_a4_a8"
