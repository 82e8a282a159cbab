"""Issue 30: the default ResQ export of every family (Llama, Mistral, Qwen2, Qwen3 with its per-head
q/k norms and YaRN, Phi-3 with fused projections, partial rotary and LongRoPE) validates (ONNX Runtime
equals the reference executor, decode through the cache equals recomputation), `generate` runs from
the ONNX folder, and (marker trt) a TensorRT-RTX engine builds for sm_89 and passes the network check."""

import json

import onnx
import pytest
from tiny_models import SMALL, cli_per_family, run_cli
from tolerances import ORT_VS_REFERENCE

from resq_export.export.writer import TRT_FILE

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "phi3"]


@pytest.fixture(scope="module")
def builds(tiny_dirs, calib_file, tmp_path_factory):
    """family -> the `build` folder (quantise with the default ResQ settings, export, validate; exit 0)."""
    return cli_per_family("build", FAMILIES, tiny_dirs, tmp_path_factory.mktemp("family_builds"),
                          "--calib-data", calib_file, *SMALL, "--json")


@pytest.mark.parametrize("family", FAMILIES)
def test_default_export_validates(builds, family):
    v = json.loads((builds[family] / "validation.json").read_text())
    assert v["passed"] and v["decode_match"] and v["top1_agreement"] == 1.0, v
    assert v["max_rel_err"] <= ORT_VS_REFERENCE and v["decode_max_rel_err"] <= ORT_VS_REFERENCE, v
    # quantised, and not broken by it: within a few times the float model on this random model
    assert v["ppl_fp"] / 2 < v["ppl_ort"] < 2 * v["ppl_fp"], v


def test_family_graph_pieces(builds):
    """What each family adds to the graph is there: Qwen3's q/k norm weights in both flavours,
    Phi-3's second (long) frequency set with the switch, and the pass-through part of partial rotary."""
    for flavour in ("model.onnx", TRT_FILE):
        qwen3 = onnx.load(str(builds["qwen3"] / "onnx" / flavour), load_external_data=False).graph
        names = {t.name for t in qwen3.initializer}
        assert {"model.layers.0.attn.q_norm.weight", "model.layers.1.attn.k_norm.weight"} <= names
        phi3 = onnx.load(str(builds["phi3"] / "onnx" / flavour), load_external_data=False).graph
        assert "model.rope.long_inv_freq" in {t.name for t in phi3.initializer}
        assert any(n.op_type == "Where" for n in phi3.node if n.name.startswith("/model/rope"))


@pytest.mark.parametrize("family", ["qwen3", "phi3"])
def test_generate_runs_from_the_onnx_folder(builds, family):
    result = run_cli("generate", "--onnx", builds[family] / "onnx", "--prompt", "The history of", "--max-new-tokens", "8")
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def _trt_ready():
    """(ready, reason): the TensorRT-RTX bindings import and the plugin library is built (the
    conditions of tests/plugins/test_engine.py)."""
    from resq_export.engine.build import default_plugin_library
    from resq_export.engine.runtime import resolve_runtime
    from resq_export.errors import TensorRTMissing

    try:
        resolve_runtime("tensorrt-rtx")
    except TensorRTMissing:
        return False, "TensorRT-RTX is not installed (pip install 'resq-export[tensorrt-rtx]')"
    if not default_plugin_library().is_file():
        return False, f"{default_plugin_library()} is not built (needs the TensorRT headers: tools/trt_check.sh)"
    return True, ""


_READY, _REASON = _trt_ready()


@pytest.mark.trt
@pytest.mark.skipif(not _READY, reason=_REASON)
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_builds_for_sm89_and_passes_the_network_check(builds, family, tmp_path):
    plan = tmp_path / "out.plan"
    result = run_cli("engine", "--onnx", builds[family] / "onnx", "--engine", plan, "--runtime", "tensorrt-rtx",
                     "--target-sm", "89", "--max-sequence", "32", "--max-context", "64")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out.plan.json").read_text())
    graph = onnx.load(str(builds[family] / "onnx" / TRT_FILE), load_external_data=False).graph
    custom = sum(1 for n in graph.node if n.domain == "resq")
    assert manifest["network"]["layers"]["PLUGIN_V3"] == custom and manifest["network"]["profile_corners_checked"] == 6
    assert manifest["target_sm"] == 89 and plan.stat().st_size == manifest["plan_bytes"] > 0
