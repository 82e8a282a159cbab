"""The engine stage. Always: optimisation profiles from the exported ONNX, the checks made before
TensorRT (what the kernels run, the graph's version, the target GPU, the op spec's shape
arithmetic), and exit code 2 naming both runtimes where neither is installed (shown by shadowing
them). Marked trt: real TensorRT-RTX builds of the tiny exports with our plugin library, which
run wherever the runtime and libresq_plugins.so are (tools/trt_check.sh) and skip elsewhere."""

import json
import os
import subprocess
import sys

import onnx
import pytest
import torch
from tiny_models import SMALL, rerecord_onnx_files, run_cli

from resq_export.engine.network import bind_shape, expected_shape
from resq_export.engine.profiles import EngineLimits, profile_shapes
from resq_export.engine.runtime import Runtime, choose_target, cubin_runs_on, parse_sm
from resq_export.errors import ResQError
from resq_export.export.writer import TRT_FILE, export_onnx

LIMITS = ["--max-sequence", "32", "--max-context", "64"]


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
    for profile, least in (("prefill", 1), ("decode", 2)):  # one cache buffer of up to max_context rows for both
        lo, opt, hi = shapes[profile][codes]
        assert (lo[2], opt[2], hi[2]) == (least, 32, 128)
        assert shapes[profile]["past_length"] == ((1,), (1,), (2,))
    assert shapes["decode"]["input_ids"][2] == (2, 1)


def test_bad_limits_are_refused():
    from resq_export.errors import ConfigError

    with pytest.raises(ConfigError):
        EngineLimits(max_sequence=8, opt_sequence=16)
    for bad in (dict(opt_context=1), dict(opt_sequence=0), dict(max_context=1, opt_context=1)):
        with pytest.raises(ConfigError, match="at least 2"):
            EngineLimits(**bad)
    with pytest.raises(ConfigError, match="a prefill call writes its tokens into the cache"):
        EngineLimits(max_sequence=256, max_context=128, opt_sequence=16, opt_context=64)


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


def test_tensorrt_flavour_reads_every_constant_as_stored(onnx_dir, artifacts, tmp_path):
    """No Cast of an initializer in model.trt.onnx: TensorRT folds one into new constants, one per
    layout its kernels want (issue 34: the tied table stored three times). The head's Gemm reads the
    fp16 table itself: the tied embedding (ResQ Llama) or the untied head (QuaRot Mistral)."""
    export_onnx(artifacts["quarot"], tmp_path / "quarot")
    for folder, table in ((onnx_dir, "model.embed_tokens.weight"), (tmp_path / "quarot", "lm_head.weight")):
        graph = onnx.load(str(folder / TRT_FILE), load_external_data=False).graph
        dtypes = {t.name: t.data_type for t in graph.initializer}
        assert [n.name for n in graph.node if n.op_type == "Cast" and n.input[0] in dtypes] == []
        (gemm,) = [n for n in graph.node if n.op_type == "Gemm"]
        assert gemm.input[1] == table and dtypes[table] == onnx.TensorProto.FLOAT16


def test_tensorrt_flavour_writes_the_head_factor_symmetric(artifacts):
    """The tied head's factor F is symmetric up to rounding; TensorRT holds its constant as given and
    transposed, one blob only where those are the same bytes. An F one rounding off symmetric (as
    float32 may leave it) is written exactly symmetric in the TensorRT flavour, as it is in the ONNX
    Runtime one (which stays bit-exact with the reference executor)."""
    from resq_export.artifact import load_artifact
    from resq_export.export.graph import build_onnx
    from resq_export.export.writer import tensorrt_flavour

    model, quant, _ = load_artifact(artifacts["resq"])
    f = model.lm_head.factor.clone()
    f[0, 1] = torch.nextafter(f[0, 1], torch.tensor(float("inf")))  # one ulp off symmetric
    model.lm_head.factor = f

    def factor_t(proto):
        return next(onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "lm_head.factor_t")

    trt, ort = factor_t(tensorrt_flavour(model, quant)), factor_t(build_onnx(model, quant))
    assert (trt == trt.T).all() and abs(trt - f.T.numpy()).max() <= 1e-6 * abs(trt).max()
    assert (ort == f.T.numpy()).all()


def test_engine_refuses_a_tensorrt_flavour_of_another_version(onnx_dir, tmp_path):
    """A model.trt.onnx whose linears are not what this version's plugins run (here: the contract
    op an older export wrote) is refused before TensorRT with a re-export message, no plan written."""
    import shutil

    old = tmp_path / "onnx"
    shutil.copytree(onnx_dir, old)
    model = onnx.load(str(old / TRT_FILE))
    next(n for n in model.graph.node if n.op_type == "ResQMixedLinearPrepared").op_type = "ResQMixedLinear"
    onnx.save(model, str(old / TRT_FILE))
    rerecord_onnx_files(old)
    result = run_cli("engine", "--onnx", old, "--engine", tmp_path / "out.plan")
    assert result.exit_code == 1, result.output
    assert "ResQMixedLinear version 1" in result.output and "re-export" in result.output
    assert not (tmp_path / "out.plan").exists()


# --- the target GPU, without TensorRT ------------------------------------------------------

RTX = Runtime("tensorrt-rtx", "tensorrt_rtx_bindings", "1.7.1.116", (75, 80, 86, 89, 120, 121), None)
STANDARD = Runtime("tensorrt", "tensorrt", "10.13", (), None)


def test_target_sm_spellings():
    assert [parse_sm(s) for s in ("89", "sm_89", "SM89", "8.9", 120, "12.0")] == [89, 89, 89, 89, 120, 120]
    for bad in ("ada", "8.9.1", "sm", "9"):
        with pytest.raises(ResQError, match="compute capability"):
            parse_sm(bad)


def test_target_choice_per_runtime():
    assert choose_target(RTX, "86", None) == 86
    assert choose_target(RTX, None, 89) == 89  # the local GPU by default
    with pytest.raises(ResQError, match="--target-sm.*75, 80, 86, 89, 120, 121"):
        choose_target(RTX, None, None)
    with pytest.raises(ResQError, match="cannot build for sm_90.*standard TensorRT"):
        choose_target(RTX, "90", None)
    assert choose_target(STANDARD, None, 90) == 90
    with pytest.raises(ResQError, match="no[ne]* here"):
        choose_target(STANDARD, "89", None)
    with pytest.raises(ResQError, match="local GPU \\(sm_90\\), not sm_89"):
        choose_target(STANDARD, "89", 90)


def test_cubin_compatibility():
    assert cubin_runs_on("80", 86) and cubin_runs_on("86", 89) and cubin_runs_on("120", 121)
    assert not cubin_runs_on("89", 86) and not cubin_runs_on("80", 90) and not cubin_runs_on("90a", 100)
    assert cubin_runs_on("90a", 90) and not cubin_runs_on("90a", 91) and not cubin_runs_on("86", 120)


def test_spec_shape_arithmetic():
    """The op spec's shapes, bound on inputs and evaluated on outputs as the network check does."""
    symbols = {"low_groups": 2}
    assert bind_shape("[..., K]", (1, 7, 64), symbols) == []
    assert bind_shape("[N, low_groups * Gp_low / 2]", (96, 64), symbols) == []  # Gp_low unknown: not checked
    assert bind_shape("[N, G]", (96, 3), symbols) == []
    assert bind_shape("[N, G]", (95, 3), symbols) == ["dim N = 95 where the spec gives 96"]
    assert expected_shape("[..., N]", symbols) == (1, 7, 96)
    kv = {}
    assert bind_shape("[B, H, S, D]", (2, 4, 5, 16), kv) == [] and bind_shape("[B, Hkv, P, D]", (2, 2, 0, 16), kv) == []
    assert expected_shape("[B, Hkv, P + S, D]", kv) == (2, 2, 5, 16)
    assert expected_shape("[B, S, H * D]", kv) == (2, 5, 64)
    assert expected_shape("[B, S, X]", kv) is None
    assert bind_shape("[B, Hkv, P, D]", (2, 2, 3), kv) == ["rank 3, the spec says [B, Hkv, P, D]"]


# --- without any runtime --------------------------------------------------------------------

def _without_runtimes(tmp_path, *args):
    """The CLI in a process where neither TensorRT module imports, as on a machine with neither."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    for module in ("tensorrt", "tensorrt_rtx_bindings"):
        (shadow / f"{module}.py").write_text(f'raise ImportError("No module named {module}")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from resq_export.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)


def test_engine_command_without_any_runtime(onnx_dir, tmp_path):
    result = _without_runtimes(tmp_path, "engine", "--onnx", onnx_dir, "--engine", tmp_path / "out.plan")
    assert result.returncode == 2, result.stderr
    assert "resq-export[tensorrt-rtx]" in result.stderr and "pip install tensorrt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.plan").exists()


def test_build_with_engine_without_any_runtime_writes_onnx_then_exits_2(tiny_dirs, calib_file, tmp_path):
    out = tmp_path / "out"
    result = _without_runtimes(tmp_path, "build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data",
                               calib_file, *SMALL, "--engine", tmp_path / "out.plan")
    assert result.returncode == 2, result.stderr
    assert (out / "onnx" / TRT_FILE).is_file() and (out / "onnx" / "model.onnx").is_file()
    assert "no TensorRT runtime is installed" in result.stderr and "resq-export[tensorrt-rtx]" in result.stderr
    assert not (tmp_path / "out.plan").exists()


# --- real TensorRT-RTX builds (marker trt) ---------------------------------------------------

def _trt_ready():
    """(ready, reason): the TensorRT-RTX bindings import and the plugin library is built."""
    from resq_export.engine.build import default_plugin_library
    from resq_export.engine.runtime import resolve_runtime
    from resq_export.errors import TensorRTMissing

    try:
        resolve_runtime("tensorrt-rtx")
    except TensorRTMissing:
        return False, "TensorRT-RTX is not installed (pip install 'resq-export[tensorrt-rtx]'; tools/trt_check.sh)"
    if not default_plugin_library().is_file():
        return False, (f"{default_plugin_library()} is not built (needs the TensorRT headers: "
                       "tools/trt_check.sh HEADERS_DIR)")
    return True, ""


_READY, _REASON = _trt_ready()

# family and what each export exercises: GQA everywhere (4 heads over 2 KV heads), q/k/v bias and
# LQER (qwen2), QuaRot's Hadamard bases (mistral), RTN, all-8-bit weights and activations
ENGINE_EXPORTS = ["resq", "quarot", "resq_lqer", "rtn", "w8a8"]


@pytest.fixture(scope="module")
def exports(artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_exports")
    out = {}
    for name in ENGINE_EXPORTS:
        export_onnx(artifacts[name], root / name)
        out[name] = root / name
    return out


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
@pytest.mark.parametrize("sm", ["86", "89"])
@pytest.mark.parametrize("name", ENGINE_EXPORTS)
def test_engine_builds_and_passes_the_network_check(exports, name, sm, tmp_path):
    plan = tmp_path / "out.plan"
    result = run_cli("engine", "--onnx", exports[name], "--engine", plan, "--runtime", "tensorrt-rtx",
                     "--target-sm", sm, *LIMITS)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out.plan.json").read_text())
    graph = onnx.load(str(exports[name] / TRT_FILE), load_external_data=False)
    custom = {}
    for node in graph.graph.node:
        if node.domain == "resq":
            custom[node.op_type] = custom.get(node.op_type, 0) + 1
    assert manifest["network"]["plugin_layers"] == custom and manifest["network"]["layers"]["PLUGIN_V3"] == sum(
        custom.values())
    assert manifest["network"]["profile_corners_checked"] == 6 and list(manifest["profiles"]) == ["prefill", "decode"]
    # the decode step updates the cache in place: the graph has no past -> present copy, and each
    # plugin declares its six cache outputs aliased to their inputs (asked of the built library)
    assert manifest["network"]["kv_cache_copied_inputs"] == 0
    assert manifest["network"]["aliased_outputs"] == 6 * custom["ResQKVCacheAttention"]
    assert manifest["target_sm"] == int(sm) and manifest["runtime"]["name"] == "tensorrt-rtx"
    assert manifest["plan_bytes"] == plan.stat().st_size > 0
    from test_plan_size import plan_bound  # these tiny plans are mostly graph description: see there

    assert manifest["plan_bytes"] <= plan_bound(manifest["weights"]["initializer_bytes"], manifest["weights"]["layers"])
    assert manifest["precision"]["tf32"] is False
    assert manifest["build"]["peak_rss_mb"] > 0 and manifest["build"]["wall_s"] > 0
    assert "PLUGIN_V3" in result.output and "wrote" in result.output
    # the plan's deployable pair: the Triton cubins the plugins launch, by version and sha256
    triton = manifest["triton_kernels"]
    assert triton["triton"] == "3.9.0" and triton["ptxas"].startswith("13.0")
    assert f"mixed_gemm_prefill_w4_a4_a8.sm_{sm}" in triton["cubins"] and len(triton["library"]["sha256"]) == 64


def _refused(onnx_dir, tmp_path, *extra):
    plan = tmp_path / "out.plan"
    result = run_cli("engine", "--onnx", onnx_dir, "--engine", plan, "--runtime", "tensorrt-rtx", *LIMITS, *extra)
    assert not plan.exists() and not (tmp_path / "out.plan.json").exists(), result.output
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.plan")] == []  # no temporary left
    assert "Traceback" not in result.output
    return result


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
def test_missing_plugin_library_is_exit_2(onnx_dir, tmp_path):
    result = _refused(onnx_dir, tmp_path, "--target-sm", "89", "--plugins", tmp_path / "nowhere" / "libresq_plugins.so")
    assert result.exit_code == 2 and "plugin library" in result.output and "RESQ_TENSORRT_ROOT" in result.output


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
@pytest.mark.parametrize("sm, words", [("90", "cannot build for sm_90"), ("75", "sm_80 or newer"),
                                       ("70", "cannot build for sm_70"), ("ada", "compute capability")])
def test_unknown_or_unusable_target_sm_is_refused(onnx_dir, tmp_path, sm, words):
    result = _refused(onnx_dir, tmp_path, "--target-sm", sm)
    assert result.exit_code == 1 and words in result.output, result.output


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
def test_no_gpu_and_no_target_is_refused(onnx_dir, tmp_path):
    from resq_export.engine.runtime import local_sm

    if local_sm() is not None:
        pytest.skip("a GPU is present: it is the default target")
    result = _refused(onnx_dir, tmp_path)
    assert result.exit_code == 1 and "--target-sm" in result.output


def _edited_copy(onnx_dir, tmp_path, edit):
    import shutil

    bad = tmp_path / "onnx"
    shutil.copytree(onnx_dir, bad)
    model = onnx.load(str(bad / TRT_FILE))
    edit(model)
    onnx.save(model, str(bad / TRT_FILE))
    rerecord_onnx_files(bad)
    return bad


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
def test_plugin_field_out_of_range_is_refused_by_the_plugin(onnx_dir, tmp_path):
    """kv_bits 9 passes every check before TensorRT; the plugin's creator refuses it, and the user
    reads the plugin's own words on one line."""
    def edit(model):
        node = next(n for n in model.graph.node if n.op_type == "ResQKVCacheAttention")
        next(a for a in node.attribute if a.name == "kv_bits").i = 9

    result = _refused(_edited_copy(onnx_dir, tmp_path, edit), tmp_path, "--target-sm", "89")
    assert result.exit_code == 1
    assert "[resq plugin ResQKVCacheAttention] attributes outside the op contract" in result.output
    assert "kv_bits 9" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
def test_network_check_catches_a_shape_the_spec_forbids(onnx_dir, tmp_path):
    """weight_sums one row short of the output features: the parser accepts it, the network check
    (against ops.json, before building) names the node, the input and the dims."""
    def edit(model):
        node = next(n for n in model.graph.node if n.op_type == "ResQMixedLinearPrepared")
        sums = next(t for t in model.graph.initializer if t.name == node.input[4])
        array = onnx.numpy_helper.to_array(sums)
        sums.CopyFrom(onnx.numpy_helper.from_array(array[:-1].copy(), sums.name))

    result = _refused(_edited_copy(onnx_dir, tmp_path, edit), tmp_path, "--target-sm", "89")
    assert result.exit_code == 1
    assert "does not match the op spec" in result.output and "input weight_sums" in result.output, result.output


def test_a_file_not_written_by_resq_export_is_not_overwritten(onnx_dir, tmp_path):
    """Refused before any runtime is looked for."""
    plan = tmp_path / "out.plan"
    plan.write_text("the user's file")
    result = run_cli("engine", "--onnx", onnx_dir, "--engine", plan, "--runtime", "tensorrt-rtx", "--target-sm", "89",
                     *LIMITS)
    assert result.exit_code == 1 and "not a plan resq-export wrote" in result.output
    assert plan.read_text() == "the user's file"
