"""The bit budget (resq_export/bit_budget.py, tools/bit_budget.py): bits per weight, per activation
value and per cached K/V value, scales and zero points included, against a hand count on the tiny
model and against the bytes the artifact and the TensorRT ONNX really hold."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from resq_export.bit_budget import (bit_budget, gpu_activation_count, kv_count, out_features, prepared_weight_count,
                                    weight_count)
from resq_export.config import QuantConfig
from resq_export.layout import LinearLayout, kv_quantizer, role_layouts
from resq_export.models.config import ModelConfig
from resq_export.tensorfile import SafetensorsFile
from tiny_models import run_cli

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bit_budget.py"
ROLES = ("attn_qkv", "attn_o", "mlp_gate_up", "mlp_down")
ONNX_NAMES = {"attn_qkv": "attn.qkv_proj", "attn_o": "attn.o_proj", "mlp_gate_up": "mlp.gate_up_proj",
              "mlp_down": "mlp.down_proj"}


def _tiny_config(tiny_dirs) -> ModelConfig:
    return ModelConfig.from_hf(json.loads((tiny_dirs["llama"] / "config.json").read_text()))


def _budget(model: ModelConfig, cfg: QuantConfig) -> dict:
    return bit_budget(model, cfg, role_layouts(model, cfg, warn=False))


def test_tiny_default_resq_by_hand(tiny_dirs):
    """Tiny llama: hidden 64 (56 + 8 channels: no auto group fits, so one group per part), 4 heads of
    16 (14 + 2 per head), 2 KV heads, intermediate 96 (one group: 64 does not divide it).
    attn_qkv: 128 rows x (56·4 + 8·8 = 288 code bits + 2 scales · 32) = 352 bits a row over 64 weights;
    attn_o: 64 rows x (4·14·4 + 4·2·8 = 288 + 8 scales · 32 = 544) over 64; mlp_gate_up: 192 rows x
    352 over 64; mlp_down: 64 rows x (96·4 + 32 = 416) over 96. Activations per token: codes as the
    weights' (all 4/8 like them), plus 32 + 8 bits per group: 368/64, 608/64, 368/64, 424/96. KV per
    row of 16: 14·4 + 2·8 + 2 · 40 = 152 bits."""
    b = _budget(_tiny_config(tiny_dirs), QuantConfig.for_method("resq"))
    w = {"attn_qkv": 352 / 64, "attn_o": 544 / 64, "mlp_gate_up": 352 / 64, "mlp_down": 416 / 96}
    assert {r: d["bits"] for r, d in b["weights"]["per_role"].items()} == pytest.approx(w, abs=1e-6)
    weights = 128 * 64 + 64 * 64 + 192 * 64 + 64 * 96
    assert b["weights"]["bits"] == pytest.approx((128 * 352 + 64 * 544 + 192 * 352 + 64 * 416) / weights, abs=1e-6)
    assert b["weights"]["scales"] == pytest.approx((128 * 64 + 64 * 256 + 192 * 64 + 64 * 32) / weights, abs=1e-6)
    a = {"attn_qkv": 368 / 64, "attn_o": 608 / 64, "mlp_gate_up": 368 / 64, "mlp_down": 424 / 96}
    assert {r: d["bits"] for r, d in b["activations"]["per_role"].items()} == pytest.approx(a, abs=1e-6)
    assert b["activations"]["bits"] == pytest.approx((368 + 608 + 368 + 424) / (64 + 64 + 64 + 96), abs=1e-6)
    assert b["activations"]["zero_points"] == pytest.approx((2 + 8 + 2 + 1) * 8 / 288, abs=1e-6)
    assert b["kv_cache"]["bits"] == pytest.approx(152 / 16, abs=1e-6)


def test_tiny_lqer_by_hand(tiny_dirs):
    """--method lqer --lqer-rank 4 --group-size 32: W4 in groups of 32, activations 8-bit, float KV.
    attn_qkv (128 x 64): codes 128·64·4 = 32768, scales 128·2·32 = 8192, LQER Aᵀ 4·64·8 + 4·32 and Bᵀ
    128·4·8 + 128·32 = 10368; attn_o's input keeps one group per head (4 of 16) whatever the group
    size; every input: 8 bits a value plus 40 bits per group."""
    b = _budget(_tiny_config(tiny_dirs), QuantConfig.for_method("lqer", lqer_rank=4, group_size=32))
    qkv = b["weights"]["per_role"]["attn_qkv"]
    assert qkv["bits"] == pytest.approx((32768 + 8192 + 10368) / 8192, abs=1e-6)
    assert qkv["lqer"] == pytest.approx(10368 / 8192, abs=1e-6)
    down = (64 * 96 * 4 + 64 * 3 * 32 + 4 * 96 * 8 + 4 * 32 + 64 * 4 * 8 + 64 * 32) / (64 * 96)
    assert b["weights"]["per_role"]["mlp_down"]["bits"] == pytest.approx(down, abs=1e-6)
    o = 64 * 64 * 4 + 64 * 4 * 32 + 4 * 64 * 8 + 4 * 32 + 64 * 4 * 8 + 64 * 32
    assert b["weights"]["per_role"]["attn_o"]["bits"] == pytest.approx(o / 4096, abs=1e-6)
    gate_up = 192 * 64 * 4 + 192 * 2 * 32 + 4 * 64 * 8 + 4 * 32 + 192 * 4 * 8 + 192 * 32
    assert b["weights"]["bits"] == pytest.approx((51328 + o + gate_up + down * 64 * 96) / 30720, abs=1e-6)
    per_token = {"attn_qkv": 64 * 8 + 2 * 40, "attn_o": 64 * 8 + 4 * 40, "mlp_gate_up": 64 * 8 + 2 * 40,
                 "mlp_down": 96 * 8 + 3 * 40}
    assert b["activations"]["per_role"]["attn_o"]["bits"] == pytest.approx(per_token["attn_o"] / 64, abs=1e-6)
    assert b["activations"]["bits"] == pytest.approx(sum(per_token.values()) / 288, abs=1e-6)
    assert b["kv_cache"] is None


def _onnx_bytes(model: onnx.ModelProto, prefix: str) -> int:
    bits = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.FLOAT: 32, onnx.TensorProto.INT32: 32}
    total = 0
    for t in model.graph.initializer:
        if t.name.startswith(prefix) and not t.name.endswith(".bias"):
            total += int(torch.tensor(list(t.dims)).prod()) * bits[t.data_type] // 8
    return total


@pytest.mark.parametrize("name", ["resq", "resq_lqer"])
def test_counts_equal_the_stored_tensors(artifacts, tmp_path, name):
    """Layer 0 of the session's tiny artifacts (llama default; qwen2 with LQER rank 4): each role's
    codes, scales and LQER tensors in model.safetensors hold exactly weight_count's bits, and the
    TensorRT flavour's prepared initializers (padded groups, code sums) exactly
    prepared_weight_count's; the GPU launcher's activation buffers per token (quantize_act's, allocated
    for no tokens so nothing runs) gpu_activation_count's; a quantised KV row holds kv_count's."""
    from resq_export.export.kernel_layout import PaddedLayout
    from resq_export.kernels.launch import quantize_act

    art, out = artifacts[name], tmp_path / "onnx"
    assert run_cli("export", "--artifact", art, "--out", out).exit_code == 0
    config = json.loads((art / "config.json").read_text())
    model, cfg = ModelConfig.from_dict(config["model"]), QuantConfig.from_dict(config["quant"])
    layouts, rank = {r: LinearLayout.from_dict(d) for r, d in config["layouts"].items()}, cfg.lqer_rank
    assert (rank > 0) == (name == "resq_lqer")
    stored = SafetensorsFile(art / "model.safetensors")
    trt = onnx.load(str(out / "model.trt.onnx"), load_external_data=False)
    for role in ROLES:
        names = [x for x in stored.names() if x.startswith(f"layers.0.{role}.") and not x.endswith(".bias")]
        assert sum(stored.get(x).numel() * stored.get(x).element_size() for x in names) * 8 == \
            weight_count(layouts[role], out_features(model, role), rank).total, role
        assert _onnx_bytes(trt, f"model.layers.0.{ONNX_NAMES[role]}.") * 8 == \
            prepared_weight_count(layouts[role], out_features(model, role), rank).total, role
        parts = layouts[role].op_parts()
        q_low, q_high, sx, zx = quantize_act(torch.zeros(0, parts.k), parts, PaddedLayout(
            parts.k, parts.k_low, parts.low_groups, parts.high_groups))
        row = (q_low.shape[1] * (parts.low_groups > 0) + q_high.shape[1] * (parts.high_groups > 0)
               + sx.shape[1] * sx.element_size() + zx.shape[1] * zx.element_size())
        assert row * 8 == gpu_activation_count(layouts[role]).total, role
    kvq = kv_quantizer(model, cfg)
    codes, scale, zero = kvq.quantize(torch.randn(5, model.head_dim))
    assert (codes.numel() * codes.element_size() + scale.numel() * 4 + zero.numel()) * 8 == 5 * kv_count(kvq).total


def _tool():
    spec = importlib.util.spec_from_file_location("bit_budget_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_tool_on_an_artifact_and_on_a_model(artifacts, tiny_dirs):
    """--artifact reads the artifact's own settings; --model with the same flags lays them out alike
    (nothing quantised); the text names each number."""
    art, main = artifacts["resq"], _tool()
    from_art = CliRunner().invoke(main, ["--artifact", str(art), "--json"])
    assert from_art.exit_code == 0, from_art.output
    from_model = CliRunner().invoke(main, ["--model", str(tiny_dirs["llama"]), "--json"])
    assert from_model.exit_code == 0, from_model.output
    a, m = json.loads(from_art.output), json.loads(from_model.output)
    assert a["weights"]["bits"] == pytest.approx(17 / 3, abs=1e-6)  # test_tiny_default_resq_by_hand's
    for key in ("weights", "activations", "kv_cache", "gpu"):
        assert a[key] == m[key]
    wider = json.loads(CliRunner().invoke(main, ["--model", str(tiny_dirs["llama"]), "--high-fraction", "0.25",
                                                 "--json"]).output)
    # 0.25 of 64: 48 + 16 channels, no auto group (16 < 32): attn_qkv's row = 48·4 + 16·8 + 2 scales
    assert wider["weights"]["per_role"]["attn_qkv"]["bits"] == pytest.approx((48 * 4 + 16 * 8 + 2 * 32) / 64, abs=1e-6)
    text = CliRunner().invoke(main, ["--artifact", str(art)]).output
    assert f"weights: {a['weights']['bits']:.3f} bits per weight" in text
    assert f"kv_cache: {a['kv_cache']['bits']:.3f} bits per cached value" in text


@pytest.mark.parametrize("args,message", [
    ([], "give either --artifact ART or --model M"),
    (["--artifact", "{art}", "--high-fraction", "0.25"], "the quantize options (--high-fraction) go with --model"),
    (["--artifact", "{missing}"], "is not a resq-export artifact"),
    (["--model", "{tiny}", "--high-fraction", "0.3"], "--high-fraction 0.3 does not fit this model"),
])
def test_tool_refuses_bad_input_in_one_line(tiny_dirs, tmp_path, args, message):
    (tmp_path / "art").mkdir()
    args = [a.format(art=tmp_path / "art", missing=tmp_path / "nothing", tiny=tiny_dirs["llama"]) for a in args]
    result = CliRunner().invoke(_tool(), args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1
