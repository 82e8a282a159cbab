"""The engine stage: optimisation profiles from the exported ONNX, and the clear exit code 2 where
TensorRT is missing (the ONNX folder written first). The real engine build is marked trt."""

import importlib.util

import onnx
import pytest
from tiny_models import SMALL, run_cli

from resq_export.engine.profiles import EngineLimits, profile_shapes
from resq_export.export.writer import TRT_FILE, export_onnx

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
no_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the missing-TensorRT path cannot be shown")


@pytest.fixture(scope="module")
def onnx_dir(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine_onnx") / "onnx"
    export_onnx(artifacts["resq"], out)
    return out


def test_profiles_cover_prefill_and_decode(onnx_dir):
    model = onnx.load(str(onnx_dir / TRT_FILE), load_external_data=False)
    limits = EngineLimits(max_batch=2, max_sequence=64, max_context=128, opt_sequence=16, opt_context=32)
    shapes = profile_shapes(model, limits)
    assert set(shapes) == {"prefill", "decode"}
    names = {i.name for i in model.graph.input}
    for profile in shapes.values():
        assert set(profile) == names
    lo, opt, hi = shapes["prefill"]["input_ids"]
    assert (lo, opt, hi) == ((1, 1), (1, 16), (2, 64))
    codes = next(n for n in names if n.endswith("key_codes"))
    assert shapes["prefill"][codes][2][2] == 0  # no past in prefill
    lo, opt, hi = shapes["decode"][codes]
    assert (lo[2], opt[2], hi[2]) == (1, 31, 127)
    assert shapes["decode"]["input_ids"][2] == (2, 1)


def test_bad_limits_are_refused():
    from resq_export.errors import ConfigError

    with pytest.raises(ConfigError):
        EngineLimits(max_sequence=8, opt_sequence=16)
    for bad in (dict(opt_context=1), dict(opt_sequence=0), dict(max_context=1, opt_context=1)):
        with pytest.raises(ConfigError, match="at least 2"):
            EngineLimits(**bad)


def test_engine_refuses_what_the_kernels_cannot_run(artifacts, tmp_path):
    """w4a16 (float activations) runs in ONNX Runtime only: refused before any TensorRT work, whether
    TensorRT is installed or not, and no plan is written."""
    onnx_dir = tmp_path / "onnx"
    export_onnx(artifacts["w4a16"], onnx_dir)
    result = run_cli("engine", "--onnx", onnx_dir, "--engine", tmp_path / "out.plan")
    assert result.exit_code == 1, result.output
    assert "cannot run this model" in result.output and "16-bit activations" in result.output
    assert not (tmp_path / "out.plan").exists()


def test_kernel_check_passes_what_the_kernels_run(artifacts, tmp_path):
    """The pre-TensorRT check lets through the layouts the CUDA GEMM takes: ResQ (4-bit part with
    4-bit activations, 8-bit part with 8-bit ones) and all-8-bit weights without a 4-bit part (whose
    activation width for the absent part is not looked at)."""
    from resq_export.engine.build import check_gpu_support

    for name in ("resq", "w8a8"):
        export_onnx(artifacts[name], tmp_path / name)
        check_gpu_support(onnx.load(str(tmp_path / name / TRT_FILE)))


@no_trt
def test_engine_command_without_tensorrt(onnx_dir, tmp_path):
    result = run_cli("engine", "--onnx", onnx_dir, "--engine", tmp_path / "out.plan")
    assert result.exit_code == 2
    assert "pip install tensorrt" in result.output and "RESQ_TENSORRT_ROOT" in result.output
    assert not (tmp_path / "out.plan").exists()


@no_trt
def test_build_with_engine_writes_onnx_then_exits_2(tiny_dirs, calib_file, tmp_path):
    out = tmp_path / "out"
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                     "--engine", tmp_path / "out.plan")
    assert result.exit_code == 2, result.output
    assert (out / "onnx" / TRT_FILE).is_file() and (out / "onnx" / "model.onnx").is_file()
    assert "TensorRT is not installed" in result.output


@pytest.mark.trt
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (pip install tensorrt from NVIDIA's index)")
def test_engine_build(onnx_dir, tmp_path):
    from resq_export.engine.build import build_engine

    limits = EngineLimits(max_batch=1, max_sequence=32, max_context=64, opt_sequence=8, opt_context=16)
    manifest = build_engine(onnx_dir, tmp_path / "out.plan", limits=limits)
    assert (tmp_path / "out.plan").stat().st_size > 0
    assert manifest["ops"] and manifest["tensorrt"]


def test_engine_refuses_a_tensorrt_flavour_of_another_version(onnx_dir, tmp_path):
    """A model.trt.onnx whose linears are not what this version's plugins run (here: the contract
    op an older export wrote) is refused before TensorRT with a re-export message, no plan written."""
    import shutil

    old = tmp_path / "onnx"
    shutil.copytree(onnx_dir, old)
    model = onnx.load(str(old / TRT_FILE))
    next(n for n in model.graph.node if n.op_type == "ResQMixedLinearPrepared").op_type = "ResQMixedLinear"
    onnx.save(model, str(old / TRT_FILE))
    result = run_cli("engine", "--onnx", old, "--engine", tmp_path / "out.plan")
    assert result.exit_code == 1, result.output
    assert "ResQMixedLinear version 1" in result.output and "re-export" in result.output
    assert not (tmp_path / "out.plan").exists()
