from pathlib import Path

import pytest

from tiny_models import SMALL, calibration_text, make_tiny_model, run_cli


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    """A tiny Llama quantised with ResQ and exported: the ONNX folder the serving tests serve."""
    root = tmp_path_factory.mktemp("serve_model")
    model = make_tiny_model(root / "llama", "llama")
    (root / "calib.txt").write_text(calibration_text())
    for args in (["quantize", "--model", model, "--out", root / "artifact", "--calib-data", root / "calib.txt", *SMALL],
                 ["export", "--artifact", root / "artifact", "--out", root / "onnx"]):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
    return root / "onnx"
