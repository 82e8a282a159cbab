import pytest
import torch

from tiny_models import FAMILIES, make_tiny_model


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
