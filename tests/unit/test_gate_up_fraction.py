"""`--gate-up-high-fraction F` (issue 32 item 2): mlp_gate_up's input keeps its last H*F channels in
8 bits, attn_qkv its last H*high_fraction; U_A = PCA x diag(R_low, R_mid, R_high) so that both
roles' precision parts are whole rotated PCA blocks. The default (F = --high-fraction) is today's."""

import json

import onnx
import pytest
import torch
from tiny_models import SMALL, run_cli
from tolerances import FLOAT64_EXACT, TRANSFORMS_ATOL_REL, TRANSFORMS_RTOL

from resq_export.algo.rotation import haar_orthogonal, pca_basis
from resq_export.artifact import load_artifact, read_manifest
from resq_export.config import QuantConfig
from resq_export.errors import ConfigError
from resq_export.layout import role_layouts
from resq_export.models.config import ModelConfig
from resq_export.models.loader import load_model
from resq_export.quantize import pipeline, quantize

SMOLLM2 = ModelConfig("llama", 49152, 576, 30, 9, 3, 64, 1536, 1e-5, 100000.0)  # SmolLM2-135M's shape
TINY = ModelConfig("llama", 400, 64, 2, 4, 2, 16, 96, 1e-6, 10000.0)  # tiny_models' shape


def _resq(**overrides) -> QuantConfig:
    return QuantConfig.for_method("resq", **overrides)


def test_each_residual_role_has_its_own_layout():
    """SmolLM2 at F = 0.25: attn_qkv 7 x 72 4-bit + 1 x 72 8-bit as today, mlp_gate_up 6 + 2 (432 + 144,
    groups of 72 still); the other roles unchanged; F recorded; F = --high-fraction is the default."""
    default, wide = role_layouts(SMOLLM2, _resq(), warn=False), role_layouts(SMOLLM2, _resq(gate_up_high_fraction=0.25),
                                                                               warn=False)
    assert default["mlp_gate_up"] == default["attn_qkv"]
    assert default["attn_qkv"].group_sizes == (72,) * 8 and default["attn_qkv"].w_bits == (4,) * 7 + (8,)
    assert wide["attn_qkv"] == default["attn_qkv"]
    gate_up = wide["mlp_gate_up"]
    assert gate_up.group_sizes == (72,) * 8 and gate_up.low_channels == 432
    assert gate_up.w_bits == (4,) * 6 + (8,) * 2 and gate_up.a_bits == (4,) * 6 + (8,) * 2
    op = gate_up.op_parts("mlp_gate_up")
    assert (op.k_low, op.low_groups, op.high_groups) == (432, 6, 2)
    for role in ("attn_o", "mlp_down"):
        assert wide[role] == default[role]
    assert _resq().gate_up_high_fraction == 0.125 and _resq(high_fraction=0.25).gate_up_high_fraction == 0.25
    assert role_layouts(SMOLLM2, _resq(gate_up_high_fraction=0.125), warn=False) == default


@pytest.mark.parametrize("overrides, fragment", [
    (dict(gate_up_high_fraction=0.1), "--gate-up-high-fraction 0.1 must be in [--high-fraction, 1) = [0.125, 1)"),
    (dict(gate_up_high_fraction=0.1875), "--gate-up-high-fraction 0.1875 does not fit this model (hidden size 576) "
     "with these settings: --group-size auto groups attn_qkv's input (504 + 72 channels) by 72, which does not also "
     "split mlp_gate_up's (468 + 108; a width for both: 36)"),
    (dict(gate_up_high_fraction=0.3, group_size=72), "mlp_gate_up's input (the residual stream) in every layer "
     "(4-bit part): 404 channels do not split into groups of 72"),
    (dict(gate_up_high_fraction=0.3, group_size=72), "Values in [0.125, 1) that fit: 0.125, 0.25, 0.375, 0.5"),
])
def test_settings_that_do_not_fit_are_refused_naming_the_flag(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        role_layouts(SMOLLM2, _resq(**overrides), warn=False)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def bases_spy(monkeypatch):
    """The bases the real pipeline computes, and the calibration statistics they came from (the real
    compute_bases runs; this only keeps its arguments and result)."""
    seen = []

    def spy(cfg, quant, stats):
        bases = real(cfg, quant, stats)
        seen.append((stats, bases))
        return bases

    real = pipeline.compute_bases
    monkeypatch.setattr(pipeline, "compute_bases", spy)
    return seen


def _transforms_only(tiny_dirs, calib_file, out, **overrides):
    cfg = _resq(w_bits=16, a_bits=16, kv_bits=16, nsamples=4, seqlen=32, **overrides)
    quantize(str(tiny_dirs["llama"]), cfg, out, [str(calib_file)], progress=False)
    return out


def _pca_of(stats) -> torch.Tensor:
    return pca_basis(stats.residual.finalize())[1]


def _assert_blocks(rotation: torch.Tensor, sizes: tuple[int, ...]) -> None:
    """rotation is diag(R_1, R_2, ...) with these block sizes, each block orthogonal."""
    at = 0
    for n in sizes:
        block = rotation[at:at + n, at:at + n]
        torch.testing.assert_close(block.T @ block, torch.eye(n, dtype=torch.float64), **FLOAT64_EXACT)
        assert rotation[at:at + n].abs().sum() - block.abs().sum() < 1e-9, f"block at {at} leaks"
        at += n
    assert at == rotation.shape[0]


def test_u_a_has_three_blocks_and_stays_exact(tiny_dirs, calib_file, tmp_path, bases_spy):
    """Tiny Llama (hidden 64, r = 8), F = 0.25: U_A orthogonal and PCA^T U_A = diag(R_low 48, R_mid 8,
    R_high 8), three different rotations; float weights: the logits are the source's."""
    art = _transforms_only(tiny_dirs, calib_file, tmp_path / "f25", gate_up_high_fraction=0.25)
    stats, bases = bases_spy[-1]
    u_a = bases.u_a
    torch.testing.assert_close(u_a.T @ u_a, torch.eye(64, dtype=torch.float64), **FLOAT64_EXACT)
    inner = _pca_of(stats).T @ u_a
    _assert_blocks(inner, (48, 8, 8))
    assert not torch.allclose(inner[48:56, 48:56], torch.eye(8, dtype=torch.float64))  # R_mid is a rotation
    assert bases.spectra["high_channels"]["U_A_gate_up"] == 16
    assert 0 < bases.report["variance_in_high_subspace"]["U_A"] < bases.report["variance_in_high_subspace"][
        "U_A_gate_up"] < 1
    rotated, _, _ = load_artifact(art)
    source = load_model(tiny_dirs["llama"]).decoder
    ids = torch.randint(0, 400, (2, 48), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = source(ids)
        torch.testing.assert_close(rotated(ids), want, rtol=TRANSFORMS_RTOL,
                                   atol=TRANSFORMS_ATOL_REL * want.abs().max().item())
    config = json.loads((art / "config.json").read_text())
    assert config["quant"]["gate_up_high_fraction"] == 0.25


def test_default_u_a_is_todays(tiny_dirs, calib_file, tmp_path, bases_spy):
    """Without the option U_A is exactly PCA x diag(R_low, R_high) drawn as before the option existed
    (the same Haar draws from the seed, and the same generator state after them: R2 of U_B / U_C),
    and the report has no gate_up entries."""
    _transforms_only(tiny_dirs, calib_file, tmp_path / "default")
    stats, bases = bases_spy[-1]
    gen = torch.Generator().manual_seed(0)  # the construction before the option, written out
    low = haar_orthogonal(56, gen)
    want = _pca_of(stats) @ torch.block_diag(low, haar_orthogonal(8, gen))
    assert torch.equal(bases.u_a, want)
    low = haar_orthogonal(14, gen)  # then R2 (head_dim 16, 2 high channels), from the same generator
    r2 = torch.block_diag(low, haar_orthogonal(2, gen))
    assert torch.equal(bases.u_c[1], pca_basis(stats.keys_[1].finalize())[1] @ r2)
    assert "U_A_gate_up" not in bases.report["variance_in_high_subspace"]
    assert "U_A_gate_up" not in bases.spectra["high_channels"]


def test_learned_rotation_learns_the_three_blocks(tiny_dirs, calib_file, tmp_path, bases_spy, monkeypatch):
    """--rotation learned with F: each of the three blocks learned (at attn_qkv's 4, 4 and 8 bits), U_A
    still PCA x block-diagonal, and exact without quantisation."""
    from resq_export.algo.learned_rotation import LearnSettings
    from resq_export.quantize import learned

    monkeypatch.setattr(learned, "SETTINGS", LearnSettings(steps=20, check_every=10))
    parts = learned._residual_parts(TINY, _resq(gate_up_high_fraction=0.25))
    assert parts == [([48], 4), ([8], 4), ([8], 8)]
    art = _transforms_only(tiny_dirs, calib_file, tmp_path / "learned", gate_up_high_fraction=0.25,
                           rotation="learned")
    stats, bases = bases_spy[-1]
    _assert_blocks(_pca_of(stats).T @ bases.u_a, (48, 8, 8))
    assert read_manifest(art)["stats"]["learned_rotation"]["U_A"]["subspaces"] == 3
    rotated, _, _ = load_artifact(art)
    source = load_model(tiny_dirs["llama"]).decoder
    ids = torch.randint(0, 400, (2, 48), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = source(ids)
        torch.testing.assert_close(rotated(ids), want, rtol=TRANSFORMS_RTOL,
                                   atol=TRANSFORMS_ATOL_REL * want.abs().max().item())


def test_groups_that_span_blocks_are_cut_for_learning():
    """--group-size 0 (one group per part): attn_qkv's 4-bit group spans the low and mid blocks; each
    block is fitted with its own part of it."""
    from resq_export.quantize import learned

    parts = learned._residual_parts(SMOLLM2, _resq(gate_up_high_fraction=0.25, group_size=0))
    assert parts == [([432], 4), ([72], 4), ([72], 8)]
    assert learned._residual_parts(SMOLLM2, _resq()) == [([72] * 7, 4), ([72], 8)]


def test_build_with_the_option_is_bit_exact_in_onnx_runtime(tiny_dirs, calib_file, tmp_path):
    """`resq-export build` at F = 0.25: each role's layout reaches the artifact and the ONNX graph (the
    gate_up linears' 8-bit weights are 16 channels wide, qkv's 8), and ONNX Runtime equals the
    reference executor."""
    out = tmp_path / "b"
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                     "--gate-up-high-fraction", "0.25", "--eval-max-tokens", "1024")
    assert result.exit_code == 0, result.output
    validation = json.loads((out / "validation.json").read_text())
    assert validation["passed"] is True and validation["top1_agreement"] == 1.0
    assert validation["ppl_ort"] == validation["ppl_reference"]
    config = json.loads((out / "artifact" / "config.json").read_text())
    assert config["quant"]["gate_up_high_fraction"] == 0.25
    assert config["layouts"]["mlp_gate_up"]["group_sizes"] == [48, 16]
    assert config["layouts"]["attn_qkv"]["group_sizes"] == [56, 8]
    graph = onnx.load(str(out / "onnx" / "model.onnx"), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for i in range(2):
        assert shapes[f"model.layers.{i}.mlp.gate_up_proj.qweight_high"] == [192, 16]
        assert shapes[f"model.layers.{i}.mlp.gate_up_proj.qweight_low"] == [192, 24]
        assert shapes[f"model.layers.{i}.attn.qkv_proj.qweight_high"] == [128, 8]

