"""tools/error_probe.py measures variants against its own baseline; that baseline must be the
reference executor's arithmetic (to float rounding) or its table would measure the tool."""

import importlib.util
import sys
from pathlib import Path

import torch

from resq_export.artifact import open_artifact

TOOL = Path(__file__).resolve().parents[2] / "tools" / "error_probe.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("_error_probe_under_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_baseline_equals_the_executor_and_float_variant_differs(artifacts):
    probe = load_tool()
    layer = open_artifact(artifacts["resq"]).layer(0)
    torch.manual_seed(0)
    for field in ("qkv", "o", "gate_up", "down"):
        lin = getattr(layer, field)
        x = torch.randn(8, lin.in_features) * 3
        y = lin(x)
        rel = lambda z: ((z - y).abs().max() / y.abs().max()).item()  # noqa: E731
        assert rel(probe.FakeQuantInput(lin, 0, 1.0, False)(x)) < 1e-6
        assert rel(probe.FakeQuantInput(lin, 0, 1.0, True)(x)) > 1e-4  # float input: no 4-bit rounding


def test_kv_quantizer_at_clip_one_writes_the_contract_bytes(artifacts):
    probe = load_tool()
    kvq = open_artifact(artifacts["resq"]).kv_quantizer
    x = torch.randn(2, 2, 5, sum(kvq.group_sizes))
    expected = kvq.quantize(x)
    assert all(torch.equal(a, b) for a, b in zip(expected, probe.ClippedKVQuantizer(kvq.group_sizes, kvq.bits).quantize(x)))
    clipped = probe.ClippedKVQuantizer(kvq.group_sizes, kvq.bits, 0.8).quantize(x)
    assert not torch.equal(clipped[1], expected[1])


def test_float_weights_must_share_the_artifacts_rotations(artifacts, tiny_dirs, calib_file, tmp_path):
    import pytest

    from tiny_models import SMALL, run_cli

    probe = load_tool()
    transforms_only = ["--w-bits", "16", "--a-bits", "16", "--kv-bits", "16"]
    for name, seed in (("same", "0"), ("other", "1")):
        result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", tmp_path / name, "--calib-data",
                         calib_file, *SMALL, *transforms_only, "--seed", seed)
        assert result.exit_code == 0, result.output
    quantised = open_artifact(artifacts["resq"]).layer(1)
    same = open_artifact(tmp_path / "same").layer(1)
    probe.same_basis(quantised, same, 1)
    with pytest.raises(SystemExit, match="differ"):
        probe.same_basis(quantised, open_artifact(tmp_path / "other").layer(1), 1)
    # float weights, float input: the transformed float linear itself; 4-bit input: a different output
    x = torch.randn(8, same.gate_up.in_features) * 3
    assert torch.equal(probe.FakeQuantInput(quantised.gate_up, 0, 1.0, True, same.gate_up)(x), same.gate_up(x))
    assert not torch.allclose(probe.FakeQuantInput(quantised.gate_up, 0, 1.0, False, same.gate_up)(x), same.gate_up(x))
