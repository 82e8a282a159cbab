"""`resq-export build --method lqer --lqer-scale hessian` on a tiny model: the whitened SVD changes only the
LQER factors (the rounded weights and every scale of the main GEMM are the same), the graph is the same,
and ONNX Runtime stays bit-exact against the reference executor."""

from __future__ import annotations

import json

import torch

from resq_export.tensorfile import SafetensorsFile
from tiny_models import SMALL, run_cli

LQER = ("--method", "lqer", "--lqer-rank", "4", "--group-size", "32")


def test_build_with_whitened_lqer_stays_exact(tiny_dirs, calib_file, tmp_path):
    out = tmp_path / "b"
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL, *LQER,
                     "--eval-max-tokens", "1024", "--lqer-scale", "hessian")
    assert result.exit_code == 0, result.output
    validation = json.loads((out / "validation.json").read_text())
    assert validation["passed"] is True and validation["max_rel_err"] == 0.0
    assert validation["ppl_ort"] == validation["ppl_reference"] and validation["top1_agreement"] == 1.0
    assert json.loads((out / "artifact" / "config.json").read_text())["quant"]["lqer_scale"] == "hessian"

    # L²QER's diagonal scale (the default): the same main weights, other factors
    plain = tmp_path / "absmean"
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", plain, "--calib-data", calib_file, *SMALL, *LQER)
    assert result.exit_code == 0, result.output
    assert json.loads((plain / "config.json").read_text())["quant"]["lqer_scale"] == "absmean"
    whitened, absmean = SafetensorsFile(out / "artifact" / "model.safetensors"), SafetensorsFile(plain / "model.safetensors")
    assert whitened.names() == absmean.names()
    main = [n for n in whitened.names() if n.endswith(".wscale") or ".qweight_" in n]
    factors = [n for n in whitened.names() if n.endswith((".lqer_a", ".lqer_b"))]
    assert main and all(torch.equal(whitened.get(n), absmean.get(n)) for n in main)
    assert factors and all(not torch.equal(whitened.get(n), absmean.get(n)) for n in factors)
