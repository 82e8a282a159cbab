"""The ONNX folder knows its files: a damaged weight is refused by generate, validate and engine
instead of giving garbage, and validate says when the folder comes from another artifact."""

import json
import shutil

import pytest
from tiny_models import SMALL, run_cli

from resq_export.export.writer import ORT_FILE, export_onnx


@pytest.fixture
def exported(artifacts, tmp_path):
    art = shutil.copytree(artifacts["rtn"], tmp_path / "art")
    out = tmp_path / "onnx"
    export_onnx(art, out, external_over=0)  # weights in model.onnx.data, as at real sizes
    return art, out


def _damage(path, at=4096, length=64):
    data = bytearray(path.read_bytes())
    data[at:at + length] = bytes((b + 1) % 256 for b in data[at:at + length])
    path.write_bytes(bytes(data))


def test_export_records_every_file_and_the_artifact_resolved(exported):
    art, out = exported
    meta = json.loads((out / "export.json").read_text())
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "export.json"}
    assert set(meta["files"]) == files and all(len(v["sha256"]) == 64 for v in meta["files"].values())
    assert meta["source_artifact"]["path"] == str(art.resolve())


@pytest.mark.parametrize("command", [
    ["generate", "--prompt", "hello", "--max-new-tokens", "2"],
    ["validate", "--max-tokens", "64", "--seqlen", "32", "--decode-steps", "2", "--quiet"],
    ["engine", "--engine", "{tmp}/out.plan", "--target-sm", "89"],
])
def test_64_damaged_bytes_are_refused(exported, tmp_path, command):
    _, out = exported
    _damage(out / (ORT_FILE + ".data"))  # inside the weights: the graph still parses
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = run_cli(args[0], "--onnx", out, *args[1:])
    assert result.exit_code == 1 and "is damaged" in result.output and "re-export" in result.output, result.output
    assert not (tmp_path / "out.plan").exists()


def test_full_check_hashes_every_file(exported, monkeypatch):
    """The quick check hashes files up to 512 MiB; --full-check hashes all (shown with the limit lowered)."""
    from resq_export.export import folder

    _, out = exported
    _damage(out / (ORT_FILE + ".data"))
    monkeypatch.setattr(folder, "_QUICK_WHOLE", 1)  # every file "large": only sizes and edges checked quickly
    quick = run_cli("generate", "--onnx", out, "--prompt", "hello", "--max-new-tokens", "1")
    assert quick.exit_code == 0, quick.output
    full = run_cli("generate", "--onnx", out, "--prompt", "hello", "--max-new-tokens", "1", "--full-check")
    assert full.exit_code == 1 and "is damaged" in full.output


def test_validate_names_an_artifact_that_changed(exported, tiny_dirs, calib_file):
    art, out = exported
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", art, "--calib-data", calib_file, *SMALL,
                     "--method", "quarot")  # re-quantised in place with other settings
    assert result.exit_code == 0, result.output
    result = run_cli("validate", "--onnx", out, "--max-tokens", "64", "--seqlen", "32", "--quiet")
    assert result.exit_code == 1 and "exported from another artifact" in result.output, result.output
