"""The plugins' real enqueue on the CPU. MixedLinearPlugin and HadamardPlugin are thin adapters over
the ops' TensorRT-free layer in libresq_triton.so (plugins/*/*_op.cpp): the creator's attribute
checks, configurePlugin's tensor checks, the workspace and the launches. CI drives that layer through
ctypes (resq_op_check / resq_op_enqueue), no TensorRT headers needed; where headers are, the same
cases also go through the plugins' creators (plugin_enqueue_harness.cpp). Either way the enqueue runs
on host buffers while libresq_triton.so's recording launcher stands in for the GPU, the recorded
launches (the cubins' names, grids and argument bytes, checked against the embedded metadata) are
executed by Triton's interpreter, and the outputs equal the reference executor bit for bit, on the
layer-0 linears and Hadamards of tiny models as their TensorRT flavour was exported. Every line of
the GPU path runs except the driver call and the compiler; tools/op_enqueue_check.py (the runner
here) runs the same cases on a GPU (tools/gpu_session.sh).

RESQ_ENQUEUE_CASES=<file> keeps the case file there (for tools/gpu_session.sh to carry)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_enqueue_cases import RANDOM_LINEARS, TINY, TOKENS, random_cases, tiny_model_cases, write_cases

from resq_export.native import loader

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
TOOL = ROOT / "tools" / "op_enqueue_check.py"


def _trt_include() -> Path | None:
    """The TensorRT headers the plugin library was built against (build/CMakeCache.txt)."""
    cache = ROOT / "build" / "CMakeCache.txt"
    if cache.is_file():
        found = re.search(r"^RESQ_TRT_INCLUDE:PATH=(.+)$", cache.read_text(), re.MULTILINE)
        if found and (Path(found.group(1)) / "NvInferRuntime.h").is_file():
            return Path(found.group(1))
    return None


@pytest.fixture(scope="module")
def case_file(artifacts, tmp_path_factory):
    keep = os.environ.get("RESQ_ENQUEUE_CASES")
    path = Path(keep) if keep else tmp_path_factory.mktemp("enqueue") / "enqueue_cases.pt"
    return write_cases(tiny_model_cases(artifacts) + random_cases(), path)


@pytest.fixture(scope="module")
def harness(project_triton, tmp_path_factory) -> tuple[Path | None, str]:
    """(the harness library driving libresq_plugins.so's creators, None) or (None, why not): only where
    the plugin library was built against TensorRT headers."""
    native, include = project_triton.parent, _trt_include()
    if not (native / "libresq_plugins.so").is_file() or include is None:
        return None, "libresq_plugins.so built against TensorRT headers is needed (cmake -DRESQ_TENSORRT_ROOT=<headers>)"
    if shutil.which("g++") is None:
        return None, "g++ not found"
    lib = tmp_path_factory.mktemp("harness") / "libharness.so"
    cuda = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    subprocess.run(["g++", "-std=c++17", "-O1", "-fPIC", "-shared", "-Wno-deprecated-declarations", f"-I{include}",
                    f"-I{cuda}", f"-I{ROOT / 'plugins' / 'common'}", str(HERE / "plugin_enqueue_harness.cpp"),
                    f"-L{native}", "-lresq_plugins", f"-Wl,-rpath,{native}", "-o", str(lib)], check=True,
                   capture_output=True)
    return lib, ""


def _check(triton_lib: Path, cases: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "report.json"
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(TOOL), "--mode", "record", "--lib", str(triton_lib), "--cases",
                          str(cases), "--out", str(out), *extra], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def _assert_exact_and_as_launch_py(report: dict) -> None:
    cases = report["cases"]
    assert [(c["case"], c.get("refused"), c["differ"]) for c in cases if c["differ"]] == []
    # the C++ launch code launches what launch.py's policy names (linear_kernels, hadamard_kernels)
    assert [(c["case"], c["launches"]) for c in cases if c["launches"] != c["policy"]] == []
    # every tiny model's layer 0 (qkv with bias and GQA, o, gate_up, down and the Hadamard before it where
    # the method has one) at each token count, and the random layouts
    per_model = {name: {c["case"].split("/", 1)[1].rsplit(" ", 1)[0] for c in cases if c["case"].startswith(name + "/")}
                 for name in TINY}
    assert per_model == {"resq_lqer": {"attn/qkv_proj", "attn/o_proj", "mlp/gate_up_proj", "mlp/down_hadamard",
                                       "mlp/down_proj"},
                         "lqer": {"attn/qkv_proj", "attn/o_proj", "mlp/gate_up_proj", "mlp/down_proj"},
                         "w8a8": {"attn/qkv_proj", "attn/o_proj", "mlp/gate_up_proj", "mlp/down_proj"}}
    assert len(cases) == 13 * len(TOKENS) + len(RANDOM_LINEARS) * len(TOKENS) + 1
    launched = {name for c in cases for name in c["launches"]}
    # quantiser (4/8-bit, 8/8-bit), LQER projection and its quantiser, the three GEMM tiles, the split-K
    # reduction, the butterflies and the left factor
    assert {"act_quant_a4_a8", "act_quant_a8_a8", "act_quant_a4_a4", "lqer_quant", "mixed_gemm_decode_w8_a8_a8",
            "mixed_gemm_small_w4_a4_a8", "mixed_gemm_prefill_w4_a4_a8", "mixed_gemm_prefill_w8_a8_a8",
            "splitk_reduce", "fwht_b8", "fwht_b128", "hadamard_mix_a16"} <= launched, launched


def test_op_layer_enqueue_replayed_by_the_interpreter_equals_the_reference(project_triton, case_file, tmp_path):
    """CI's route: resq_op_check / resq_op_enqueue of libresq_triton.so, no TensorRT headers."""
    report = _check(project_triton, case_file, tmp_path)
    assert report["route"] == "resq_op_enqueue" and report["mode"] == "record"
    _assert_exact_and_as_launch_py(report)


def test_plugins_enqueue_through_their_creators_equals_the_reference(project_triton, harness, case_file, tmp_path):
    """Where TensorRT headers are: the same cases through libresq_plugins.so's creators, configurePlugin,
    getWorkspaceSize, onShapeChange and enqueue (the adapters over the layer above)."""
    lib, why_not = harness
    if lib is None:
        pytest.skip(why_not)
    report = _check(project_triton, case_file, tmp_path, "--harness", str(lib))
    assert report["route"] == "plugin creator (harness)"
    _assert_exact_and_as_launch_py(report)


@pytest.mark.parametrize("a_bits", [(4, 8), (8, 8), (4, 4), (8, 4), (6, 8), (4, 6), (16, 8)])
def test_activation_widths_follow_ops_json_gpu_entry(project_triton, harness, a_bits):
    """ops.json's "gpu" entry says which activation widths the kernels are compiled for (both parts 4 or 8,
    any combination); the layer the plugin's creator runs accepts those and refuses the rest with the
    reason (and, where TensorRT headers are, the plugin's creator itself), and the exporter's engine
    check reads the same entry (next test)."""
    import torch
    from resq_export.native.triton import OpLibrary, OpRefused

    from resq_export.export.spec import op_spec

    takes = op_spec("ResQMixedLinearPrepared")["gpu"]["a_bits"]
    assert sorted(takes) == [4, 8]
    case = next(c for c in random_cases(tokens=(1,)) if c["op"] == "ResQMixedLinearPrepared")
    fields = dict(case["fields"], a_bits_low=a_bits[0], a_bits_high=a_bits[1])
    y = torch.zeros(case["expected"].shape)
    routes = [OpLibrary(project_triton)] + ([OpLibrary(project_triton, harness[0])] if harness[0] else [])
    for lib in routes:
        if set(a_bits) <= set(takes):
            assert lib.check(case["op"], fields, case["inputs"], [y]) > 0, lib.route  # the intermediates' bytes
        else:
            bad = next(f"a_bits_{part} {bits}" for part, bits in zip(("low", "high"), a_bits) if bits not in takes)
            with pytest.raises(OpRefused, match=f"activations to 4 or 8 bits, not {bad}$"):
                lib.check(case["op"], fields, case["inputs"], [y])


BAD_NODES = {  # what configurePlugin refuses, and the layer's words for it
    "weight dims": (3, lambda t: t[:, :3], r"input 3 is \[64, 3\], not \[64, 8\] \(the kernel layout"),
    # (TensorRT itself asks supportsFormatCombination first, which the harness does too)
    "dtype": (5, lambda t: t.int(), r"input 5 is int32, the op takes float32|supportsFormatCombination of tensor 5"),
    "input count": (10, None, r"got 10 inputs, the attributes imply 11"),
    "K": (0, lambda t: t[..., :500], r"K 500 does not fit the attributes \(k_low 504, 7 \+ 1 groups\)"),
    "hadamard K": (-1, lambda t: t[..., :-2], r"K 1534 is not a times a power of two \(a = 12\)"),
}


@pytest.mark.parametrize("what", BAD_NODES)
def test_tensors_that_do_not_fit_are_refused_in_one_line(project_triton, harness, what):
    """configurePlugin's check (the layer's, and the plugin's where headers are): a node whose tensors do
    not fit its attributes is refused when the engine is built, with the reason, not at enqueue."""
    import torch
    from resq_export.native.triton import OpLibrary, OpRefused

    pos, change, said = BAD_NODES[what]
    cases = random_cases(tokens=(1,))
    case = cases[-1] if pos < 0 else cases[0]  # the Hadamard, or the linear with every input (groups of 72, LQER)
    inputs = list(case["inputs"])
    if change is None:
        del inputs[pos]
    else:
        inputs[max(pos, 0)] = change(inputs[max(pos, 0)])
    y = torch.zeros(case["expected"].shape)
    for lib in [OpLibrary(project_triton)] + ([OpLibrary(project_triton, harness[0])] if harness[0] else []):
        with pytest.raises(OpRefused, match=said) as refused:
            lib.check(case["op"], case["fields"], inputs, [y])
        assert "\n" not in str(refused.value), lib.route


def test_engine_check_takes_8_bit_activations_and_refuses_6(artifacts):
    """The exporter's engine check (before any TensorRT work) follows the same entry: the LQER model
    with 8-bit activations on its 4-bit-weight part passes; the same graph with one node at 6 bits is
    refused, naming the node and the widths the kernels take."""
    import onnx

    from resq_export.artifact import load_artifact
    from resq_export.engine.build import check_gpu_support
    from resq_export.errors import ResQError
    from resq_export.export.writer import tensorrt_flavour

    proto = tensorrt_flavour(*load_artifact(artifacts["lqer"])[:2])
    nodes = [n for n in proto.graph.node if n.op_type == "ResQMixedLinearPrepared"]
    assert {a.i for n in nodes for a in n.attribute if a.name == "a_bits_low"} == {8}
    check_gpu_support(proto)
    (bits,) = [a for a in nodes[1].attribute if a.name == "a_bits_low"]
    bits.CopyFrom(onnx.helper.make_attribute("a_bits_low", 6))
    with pytest.raises(ResQError, match=re.escape(f"{nodes[1].name}: 6-bit activations (the GPU kernels take 4 or 8)")):
        check_gpu_support(proto)


def test_gpu_tool_refuses_bad_arguments_with_one_line(tmp_path):
    """tools/op_enqueue_check.py (a gpu_session.sh step): what it lacks is said in one error line, before
    anything is loaded."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    runs = {
        "cases": ["--cases", str(tmp_path / "none.pt"), "--lib", str(TOOL)],
        "lib": ["--lib", str(tmp_path / "libnone.so"), "--cases", str(TOOL)],
        "interpreter": ["--mode", "record", "--lib", str(TOOL), "--cases", str(TOOL)],
    }
    said = {}
    for what, argv in runs.items():
        run = subprocess.run([sys.executable, str(TOOL), *argv], env=env, capture_output=True, text=True)
        assert run.returncode == 1 and run.stdout.count("\n") == 1 and not run.stderr, (what, run.stdout, run.stderr)
        said[what] = run.stdout
    assert said["cases"].startswith(f"error: --cases {tmp_path / 'none.pt'} is missing: write it")
    assert said["lib"].startswith(f"error: --lib {tmp_path / 'libnone.so'} is missing: build it")
    assert said["interpreter"] == "error: --mode record needs TRITON_INTERPRET=1 in the environment\n"


def test_gpu_tool_without_a_gpu_says_so_in_one_line(project_triton, case_file):
    """--mode cuda where no GPU is: the case file and the library load, the loader's prepare fails and
    the tool says why in one line (the GPU step's start-up, as far as it runs here)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tools/gpu_session.sh runs this mode for real")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(TOOL), "--mode", "cuda", "--lib", str(project_triton), "--cases",
                          str(case_file)], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and not run.stderr, run.stdout + run.stderr
    said = r"error: loading the cubins on device 0: status [34]: cudaGetDevice: cuda\w+: .+\n"
    assert re.fullmatch(said, run.stdout), run.stdout


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
