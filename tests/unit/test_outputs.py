"""Nothing lost: quantize, export and build never delete what resq-export did not write, never write
into (or around) their inputs, and a killed write's temporary folder is removed by the next run."""

import hashlib
import signal

import pytest
from tiny_models import SMALL, export_killed_midway, run_cli

from resq_export.errors import ConfigError
from resq_export.outputs import check_output


def _snapshot(folder):
    """Every file under folder -> sha256 of its bytes (folders too, as None)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def users_folder(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return folder


def test_quantize_refuses_a_users_folder_with_or_without_overwrite(tiny_dirs, calib_file, users_folder):
    before = _snapshot(users_folder)
    for extra in ([], ["--overwrite"]):  # --overwrite never deletes what resq-export did not write
        result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", users_folder, "--calib-data", calib_file,
                         *SMALL, "--method", "rtn", *extra)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "did not write (notes.txt, sub/data.bin)" in result.output
        assert _snapshot(users_folder) == before
    assert not list(users_folder.parent.glob(".mine*"))  # no lock file or temporary left beside it


@pytest.mark.parametrize("where", ["model", "inside", "parent"])
def test_quantize_never_writes_over_or_around_its_model(tiny_dirs, calib_file, tmp_path, where):
    import shutil

    model = tmp_path / "parent" / "model"
    shutil.copytree(tiny_dirs["llama"], model)
    out = {"model": model, "inside": model / "artifact", "parent": tmp_path / "parent"}[where]
    before = _snapshot(tmp_path / "parent")
    for extra in ([], ["--overwrite"]):  # refused outright: --overwrite does not help
        result = run_cli("quantize", "--model", model, "--out", out, "--calib-data", calib_file, *SMALL, *extra)
        assert result.exit_code == 1, result.output
        assert "the input" in result.output and str(model) in result.output
    assert _snapshot(tmp_path / "parent") == before
    assert not out.with_name(out.name + ".partial").exists()


def test_quantize_refuses_an_output_over_its_calibration_file(tiny_dirs, calib_file, tmp_path):
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", calib_file.parent, "--calib-data", calib_file,
                     *SMALL)
    assert result.exit_code == 1 and "contains the input" in result.output
    assert calib_file.is_file()


def test_export_refuses_its_own_artifact_and_a_users_folder(artifacts, users_folder, tmp_path):
    before = _snapshot(artifacts["rtn"])
    result = run_cli("export", "--artifact", artifacts["rtn"], "--out", artifacts["rtn"])
    assert result.exit_code == 1 and "is the input" in result.output
    assert _snapshot(artifacts["rtn"]) == before
    mine = _snapshot(users_folder)
    result = run_cli("export", "--artifact", artifacts["rtn"], "--out", users_folder)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert _snapshot(users_folder) == mine
    # an earlier export is replaced without asking
    for _ in range(2):
        assert run_cli("export", "--artifact", artifacts["rtn"], "--out", tmp_path / "onnx").exit_code == 0


def test_build_refuses_a_users_folder(tiny_dirs, calib_file, users_folder):
    before = _snapshot(users_folder)
    for extra in ([], ["--overwrite"]):
        result = run_cli("build", "--model", tiny_dirs["llama"], "--out", users_folder, "--calib-data", calib_file,
                         *SMALL, *extra)
        assert result.exit_code == 1 and "did not write (notes.txt, sub/data.bin)" in result.output
        assert _snapshot(users_folder) == before


def test_check_output_rules(tmp_path, monkeypatch):
    assert check_output(tmp_path / "new", "artifact") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "onnx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output(tmp_path / "file", "artifact")
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "export.json").write_text('{"tool": "resq-export"}')
    check_output(prev, "onnx")  # an earlier export
    with pytest.raises(ConfigError, match="--overwrite"):
        check_output(prev, "artifact")  # but no artifact
    (prev / "export.json").write_text('{"tool": "someone else"}')
    with pytest.raises(ConfigError, match="--overwrite"):
        check_output(prev, "onnx")
    with pytest.raises(ConfigError, match="file system root"):
        check_output("/", "build")
    monkeypatch.chdir(tmp_path / "empty")  # `--out .` is the current directory: refused (it was a ValueError)
    with pytest.raises(ConfigError, match="is the current directory"):
        check_output(".", "artifact", ["smollm2-135m"])


def test_a_killed_exports_temporary_folder_is_removed_by_the_next_run(artifacts, tmp_path):
    """SIGKILL while export writes: its hidden .onnx.tmp-PID-* folder stays; the next export removes it."""
    out = tmp_path / "onnx"
    proc = export_killed_midway(artifacts["resq"], out)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list(tmp_path.glob(".onnx.tmp-*/model.onnx"))
    assert list(tmp_path.glob(".onnx.tmp-*")) and not out.exists()
    result = run_cli("export", "--artifact", artifacts["resq"], "--out", out)
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob(".onnx.*")) == [] and (out / "model.onnx").is_file()


def test_build_run_again_keeps_its_finished_stages(tiny_dirs, calib_file, tmp_path):
    """The same build command after a finished (or interrupted-in-validation) build keeps the
    artifact and the ONNX folder as they are and validates again; other settings re-quantise."""
    out = tmp_path / "b"
    args = ["build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
            "--method", "rtn", "--eval-max-tokens", "512"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    stamps = {p: p.stat().st_mtime_ns for p in (out / "artifact" / "manifest.json", out / "onnx" / "export.json")}
    (out / "validation.json").unlink()  # as if stopped during validation
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and (out / "validation.json").is_file()
    assert run_cli(*args, "--nsamples", "3").exit_code == 0  # other settings: quantised again
    assert (out / "artifact" / "manifest.json").stat().st_mtime_ns != stamps[out / "artifact" / "manifest.json"]
