"""`resq-export report`: a self-contained HTML page with embedded PNG plots, checked in a real browser."""

import base64
import io
import json
import re
import sys
from pathlib import Path

import pytest
from tiny_models import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from screenshot_report import find_browser, screenshot


@pytest.fixture(scope="module")
def report(artifacts, calib_file, tmp_path_factory):
    import shutil

    art = shutil.copytree(artifacts["resq"], tmp_path_factory.mktemp("rep") / "art")
    result = run_cli("eval", "--artifact", art, "--text", calib_file, "--seqlen", "64", "--max-tokens", "128",
                     "--json", "--quiet")
    assert result.exit_code == 0, result.output
    out = art.parent / "report.html"
    result = run_cli("report", "--artifact", art, "--out", out)
    assert result.exit_code == 0, result.output
    return art, out


def test_report_is_self_contained_with_plots_and_tables(report):
    from PIL import Image

    art, out = report
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 7  # spectra, U_A spectrum, per-layer shares, W SQNR, A SQNR, times, peak RSS
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 200
    assert not re.search(r'(src|href)="(http|file|/)', page)  # nothing outside the file
    ppl = json.loads((art / "evaluations.json").read_text())[0]["ppl"]
    assert f"{ppl:.4f}" in page and "Perplexity" in page
    for text in ("gptq", "peak RSS (MB)", "W SQNR mlp_down", "Variance captured by the 8-bit subspace",
                 'alt="Time per layer"', 'alt="Peak RSS per layer"', "peak RSS MB"):
        assert text in page
    manifest = json.loads((art / "manifest.json").read_text())
    assert "evaluations.json" not in manifest["files"]  # a side file: the checksummed artifact is unchanged


def test_report_renders_in_a_headless_browser(report, tmp_path):
    if find_browser() is None:
        pytest.skip("no chromium/chrome binary: apt-get install chromium to run the browser check")
    from PIL import Image

    shot = screenshot(report[1], tmp_path / "shot.png", 1200, 2400)
    import numpy as np

    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # matplotlib's first colour (#1f77b4) must be on screen: the PNG plots were decoded and drawn.
    blue = int((np.abs(px - np.array([31, 119, 180])) < 12).all(-1).sum())
    assert blue > 500, f"only {blue} plot-blue pixels in the screenshot {shot}"
