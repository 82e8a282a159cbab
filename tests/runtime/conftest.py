"""The runtime tests' ONNX folder: the tiny ResQ artifact exported once for the loop, the TensorRT
binding (its stand-in runs this folder's ONNX Runtime flavour) and bench; no test writes into it."""

import pytest

from resq_export.export.writer import export_onnx


@pytest.fixture(scope="session")
def onnx_dir(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("runtime") / "onnx"
    export_onnx(artifacts["resq"], out)
    return out
