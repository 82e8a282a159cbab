import pytest
import torch

from tiny_models import FAMILIES, SMALL, make_tiny_model, run_cli


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family -> a tiny random HF model folder (built once per session)."""
    root = tmp_path_factory.mktemp("tiny")
    return {fam: make_tiny_model(root / fam, fam) for fam in FAMILIES}


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory):
    from tiny_models import calibration_text

    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(calibration_text())
    return path


@pytest.fixture(scope="session")
def artifacts(tiny_dirs, calib_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("art")
    runs = {
        "resq": ("llama", []),
        "resq_lqer": ("qwen2", ["--method", "resq", "--lqer-rank", "4", "--down-group-size", "32"]),
        "quarot": ("mistral", ["--method", "quarot"]),
        "rtn": ("llama", ["--method", "rtn"]),
        "lqer": ("llama3", ["--method", "lqer", "--lqer-rank", "4", "--group-size", "32"]),
        "fp": ("qwen2", ["--method", "fp"]),
        "w4a16": ("llama", ["--method", "resq", "--a-bits", "16", "--kv-bits", "16"]),
        "w8a8": ("qwen2", ["--method", "rtn", "--w-bits", "8", "--a-bits", "8"]),  # no 4-bit weight part at all
    }
    out = {}
    for name, (family, extra) in runs.items():
        result = run_cli("quantize", "--model", tiny_dirs[family], "--out", root / name,
                      "--calib-data", calib_file, *SMALL, *extra)
        assert result.exit_code == 0, result.output
        out[name] = root / name
    return out
