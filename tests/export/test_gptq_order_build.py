"""`resq-export build --gptq-order act-in-parts` on a tiny model: the order changes the codes, never the
scales or the layout, so the exported graph is the same and ONNX Runtime stays bit-exact against the
reference executor."""

from __future__ import annotations

import json

import torch

from resq_export.tensorfile import SafetensorsFile
from tiny_models import SMALL, run_cli


def test_build_with_act_order_in_parts_stays_exact(tiny_dirs, calib_file, tmp_path):
    out = tmp_path / "b"
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                     "--eval-max-tokens", "1024", "--gptq-order", "act-in-parts")
    assert result.exit_code == 0, result.output
    validation = json.loads((out / "validation.json").read_text())
    assert validation["passed"] is True and validation["max_rel_err"] == 0.0
    assert validation["ppl_ort"] == validation["ppl_reference"] and validation["top1_agreement"] == 1.0
    config = json.loads((out / "artifact" / "config.json").read_text())
    assert config["quant"]["gptq_order"] == "act-in-parts"

    # the same settings in the natural order: the same scales (static groups), other codes
    natural = tmp_path / "natural"
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", natural, "--calib-data", calib_file, *SMALL)
    assert result.exit_code == 0, result.output
    assert json.loads((natural / "config.json").read_text())["quant"]["gptq_order"] == "natural"
    act, nat = SafetensorsFile(out / "artifact" / "model.safetensors"), SafetensorsFile(natural / "model.safetensors")
    assert act.names() == nat.names()
    scales = [n for n in act.names() if n.endswith(".wscale")]
    codes = [n for n in act.names() if ".qweight_" in n]
    assert scales and all(torch.equal(act.get(n), nat.get(n)) for n in scales)
    assert sum(not torch.equal(act.get(n), nat.get(n)) for n in codes) >= len(codes) // 2
