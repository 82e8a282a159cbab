"""Nothing lost, round two (issue 33, items 1-7 and 24): `report` never replaces a file it did not
write; replacing an earlier output keeps or refuses (naming them) the files resq-export did not
write, and its own side results; outputs are recognised by the marker resq-export writes, not by a
file name; a resume recomputes a damaged layer; one run per output at a time (two real processes);
the current and home directories are refused; temporaries of killed runs are swept; a leftover
work folder of other settings says what differs and --overwrite discards it.

Every case compares the sha256 of every file it does not mean to change, before and after."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_models import SMALL, export_killed_midway, run_cli

from resq_export.checkpoint import work_dir_for
from resq_export.evaluations import read_evaluations, record_evaluation
from resq_export.fileio import lock_path
from resq_export.outputs import output_kind

ROOT = Path(__file__).resolve().parents[2]
RTN = ["--method", "rtn"]


def _snapshot(folder):
    """Every file under folder -> sha256 of its bytes (folders too, as None)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(Path(folder).rglob("*"))}


def _same_weights(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)


def _quantize_args(model, out, calib_file, *extra):
    return ["quantize", "--model", model, "--out", out, "--calib-data", calib_file, *SMALL, *RTN, *extra]


@pytest.fixture
def art(artifacts, tmp_path):
    """A private copy of the tiny llama RTN artifact (made with _quantize_args' settings)."""
    return Path(shutil.copytree(artifacts["rtn"], tmp_path / "A"))


# The CLI in a child process, with two hooks set by the environment: KILL_AT="pass2:1" SIGKILLs it
# right after the work folder records that step (as abrupt as a kill from outside, without a race);
# PAUSE_DIR makes it write PAUSE_DIR/ready at its first record and wait there for PAUSE_DIR/go.
_HOOKED_CLI = """
import os, signal, sys, time
from pathlib import Path
from resq_export import checkpoint
from resq_export.cli import main

real_commit = checkpoint.WorkDir.commit

def commit(self, **changes):
    real_commit(self, **changes)
    if os.environ.get("KILL_AT"):
        phase, layer = os.environ["KILL_AT"].split(":")
        if changes.get(phase + "_done") == int(layer) + 1:
            os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("PAUSE_DIR")
    if pause and not (Path(pause) / "ready").exists():
        (Path(pause) / "ready").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not (Path(pause) / "go").exists() and time.time() < deadline:
            time.sleep(0.05)

checkpoint.WorkDir.commit = commit
sys.argv[0] = "resq-export"
main()
"""


def _child(args, **env):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.Popen([sys.executable, "-c", _HOOKED_CLI, *map(str, args)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_child(args, **env):
    proc = _child(args, **env)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 1. report has an output guard ------------------------------------------------------------


def test_report_never_replaces_a_file_it_did_not_write(art, tiny_dirs, artifacts, tmp_path):
    model = Path(shutil.copytree(tiny_dirs["llama"], tmp_path / "M"))
    onnx = tmp_path / "O"
    assert run_cli("export", "--artifact", art, "--out", onnx).exit_code == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "page.html").write_text("<html>my page</html>")
    before = {d: _snapshot(d) for d in (art, model, onnx, mine)}
    cases = {
        art / "config.json": "is a file of the artifact",
        art / "manifest.json": "is a file of the artifact",
        art / "evaluations.json": "is a file of the artifact",
        model / "model.safetensors": "lies inside the model folder",
        model / "report.html": "lies inside the model folder",
        onnx / "report.html": "lies inside the ONNX folder",
        artifacts["resq"] / "report.html": "lies inside the artifact",  # another artifact than the one reported
        mine / "page.html": "exists and is not a report resq-export wrote",
    }
    for out, message in cases.items():
        result = run_cli("report", "--artifact", art, "--out", out)
        assert result.exit_code == 1 and message in result.output, (out, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    link = tmp_path / "link.html"  # a link is followed: the file it names is what would be replaced
    link.symlink_to(model / "model.safetensors")
    assert run_cli("report", "--artifact", art, "--out", link).exit_code == 1
    assert {d: _snapshot(d) for d in (art, model, onnx, mine)} == before
    # a new file, then the same report again (recognised by its generator mark, not its name)
    for out in (mine / "new.html", mine / "new.html", art / "report.html"):
        result = run_cli("report", "--artifact", art, "--out", out)
        assert result.exit_code == 0, result.output
        assert '<meta name="generator" content="resq-export' in out.read_text()[:4096]
    assert (mine / "page.html").read_text() == "<html>my page</html>"


# ---- 2. replacing an earlier output refuses to delete the user's files ------------------------


def test_requantize_refuses_to_delete_user_files_inside_the_artifact(art, tiny_dirs, calib_file):
    (art / "NOTES.txt").write_text("n")
    (art / "d").mkdir()
    (art / "d" / "x.csv").write_text("")
    (art / "empty").mkdir()
    before = _snapshot(art)
    for extra in ([], ["--overwrite"]):
        result = run_cli(*_quantize_args(tiny_dirs["llama"], art, calib_file, *extra))
        assert result.exit_code == 1, result.output
        assert "did not write (NOTES.txt, d/x.csv, empty/)" in result.output and "move them elsewhere" in result.output
        assert _snapshot(art) == before
    assert not work_dir_for(art).exists() and not lock_path(art).exists()


def test_reexport_refuses_to_delete_user_files_inside_the_onnx_folder(artifacts, tmp_path):
    onnx = tmp_path / "O"
    assert run_cli("export", "--artifact", artifacts["rtn"], "--out", onnx).exit_code == 0
    (onnx / "DEPLOY.md").write_text("how we deploy")
    before = _snapshot(onnx)
    for extra in ([], ["--overwrite"]):
        result = run_cli("export", "--artifact", artifacts["resq"], "--out", onnx, *extra)
        assert result.exit_code == 1 and "did not write (DEPLOY.md)" in result.output, result.output
        assert _snapshot(onnx) == before


def test_requantize_keeps_its_evaluations_and_report_only_while_they_are_valid(art, tiny_dirs, calib_file, caplog):
    result = run_cli("eval", "--artifact", art, "--text", calib_file, "--seqlen", "32", "--max-tokens", "64", "--quiet")
    assert result.exit_code == 0, result.output
    assert run_cli("report", "--artifact", art, "--out", art / "report.html").exit_code == 0
    side = {name: (art / name).read_bytes() for name in ("evaluations.json", "report.html")}
    weights = (art / "model.safetensors").read_bytes()
    # the same settings make the same artifact: its results stay valid and are carried into it
    result = run_cli(*_quantize_args(tiny_dirs["llama"], art, calib_file))
    assert result.exit_code == 0, result.output
    assert {name: (art / name).read_bytes() for name in side} == side
    assert (art / "model.safetensors").read_bytes() == weights
    assert not set(side) & set(json.loads((art / "manifest.json").read_text())["files"])
    # other settings: the results would describe weights that are gone; refused, naming them
    before = _snapshot(art)
    result = run_cli(*_quantize_args(tiny_dirs["llama"], art, calib_file, "--seed", "1"))
    assert result.exit_code == 1, result.output
    assert "(evaluations.json, report.html)" in result.output and "--overwrite" in result.output
    assert _snapshot(art) == before and not work_dir_for(art).exists()
    # --overwrite deletes them with the artifact they describe, and says so
    result = run_cli(*_quantize_args(tiny_dirs["llama"], art, calib_file, "--seed", "1", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not (art / "evaluations.json").exists() and not (art / "report.html").exists()
    assert "deleting evaluations.json, report.html" in caplog.text


def test_eval_never_replaces_a_users_evaluations_json(art):
    (art / "evaluations.json").write_text('{"mine": true}')
    record_evaluation(art, {"ppl": 1.0, "label": "x"})
    assert (art / "evaluations.json").read_text() == '{"mine": true}' and read_evaluations(art) == []
    (art / "evaluations.json").unlink()
    record_evaluation(art, {"ppl": 1.0, "label": "x"})
    assert [e["ppl"] for e in read_evaluations(art)] == [1.0]


# ---- 3. earlier outputs are recognised by the marker resq-export writes -----------------------


def test_a_users_validation_json_does_not_make_a_build_folder(tiny_dirs, calib_file, tmp_path):
    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "validation.json").write_text('{"my":1}')
    assert output_kind(folder) is None
    for extra in ([], ["--overwrite"]):
        result = run_cli("build", "--model", tiny_dirs["llama"], "--out", folder, "--calib-data", calib_file, *SMALL,
                         *RTN, *extra)
        assert result.exit_code == 1 and "did not write (validation.json)" in result.output, result.output
        assert sorted(p.name for p in folder.iterdir()) == ["validation.json"]
        assert (folder / "validation.json").read_text() == '{"my":1}'


def test_a_build_folder_carries_its_marker_and_keeps_the_users_files(tiny_dirs, calib_file, tmp_path):
    out = tmp_path / "b"
    args = ["build", "--model", tiny_dirs["llama"], "--out", out, "--calib-data", calib_file, *SMALL, *RTN,
            "--eval-max-tokens", "512"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    marker = json.loads((out / "build.json").read_text())
    assert marker["tool"] == "resq-export" and marker["command"] == "build"
    assert set(marker["files"]) == {"artifact", "onnx", "validation.json", "build.json"}
    assert json.loads((out / "validation.json").read_text())["tool"] == "resq-export"
    assert output_kind(out) == "build" and output_kind(out / "artifact") == "artifact"
    # a user's file beside the build's is kept by the next build; one inside artifact/ stops it at once
    (out / "NOTES.txt").write_text("mine")
    (out / "artifact" / "NOTES.txt").write_text("mine too")
    before = _snapshot(out)
    result = run_cli(*args)
    assert result.exit_code == 1 and "where the build writes (artifact/NOTES.txt)" in result.output, result.output
    assert _snapshot(out) == before
    (out / "artifact" / "NOTES.txt").unlink()
    (out / "validation.json").unlink()  # as if stopped before validating: a report must not take its name
    for name in ("validation.json", "build.json"):
        result = run_cli("report", "--artifact", out / "artifact", "--out", out / name)
        assert result.exit_code == 1 and "where the build in" in result.output, result.output
    assert _snapshot(out) == {k: v for k, v in before.items() if k not in ("artifact/NOTES.txt", "validation.json")}
    assert run_cli(*args).exit_code == 0
    assert (out / "NOTES.txt").read_text() == "mine"


# ---- 4. resume checks every finished file's sha256 --------------------------------------------


@pytest.fixture(scope="module")
def three_layers(tiny_dirs, tmp_path_factory):
    """A 3-layer Llama of the tiny shape: a kill after layer 1 leaves a layer still to do."""
    sys.path.insert(0, str(ROOT / "tools"))
    from make_model import make_model

    shape = {"arch": "llama", "hidden": 64, "layers": 3, "heads": 4, "kv_heads": 2, "intermediate": 96,
             "vocab": 400, "tied": False, "rope_theta": 10000.0}
    return make_model(tmp_path_factory.mktemp("three") / "m", shape, "fp32", shard_gb=1.0,
                      tokenizer_dir=tiny_dirs["llama"], log=lambda *_: None)


@pytest.mark.parametrize("damage", ["zeros", "missing"])
def test_resume_recomputes_a_damaged_layer(three_layers, calib_file, tmp_path, damage):
    model = three_layers
    reference = tmp_path / "reference"
    code, output = _run_child(_quantize_args(model, reference, calib_file))
    assert code == 0, output
    out = tmp_path / "out"
    code, output = _run_child(_quantize_args(model, out, calib_file), KILL_AT="pass2:1")  # layers 0 and 1 done
    assert code == -signal.SIGKILL, output
    partial = work_dir_for(out)
    state = json.loads((partial / "state.json").read_text())
    assert state["pass2_done"] == 2 and {"layer-00000.safetensors", "layer-00001.safetensors"} <= set(state["files"])
    layer = partial / "layer-00001.safetensors"
    assert hashlib.sha256(layer.read_bytes()).hexdigest() == state["files"][layer.name]
    if damage == "zeros":  # 1000 bytes of the tensors (past the header) overwritten with zeros
        with open(layer, "r+b") as f:
            f.seek(layer.stat().st_size // 2)
            f.write(bytes(1000))
    else:
        layer.unlink()
    code, output = _run_child(_quantize_args(model, out, calib_file))
    assert code == 0, output
    problem = "is damaged (its sha256" if damage == "zeros" else "is missing"
    assert f"layer-00001.safetensors {problem}" in output and "layer 1 is recomputed" in output
    assert _same_weights(reference, out)
    files = [json.loads((d / "manifest.json").read_text())["files"] for d in (reference, out)]
    assert [f["model.safetensors"] for f in files] == [files[0]["model.safetensors"]] * 2
    assert [f["config.json"] for f in files] == [files[0]["config.json"]] * 2


# ---- 5. one run per output: a second stops at once, naming the first ---------------------------


def test_a_second_run_on_the_same_output_stops_at_once(tiny_dirs, calib_file, tmp_path):
    out, pause = tmp_path / "X", tmp_path / "pause"
    pause.mkdir()
    first = _child(_quantize_args(tiny_dirs["llama"], out, calib_file), PAUSE_DIR=str(pause))
    try:
        _wait_for(pause / "ready", first)  # the first run holds the lock and has begun its work folder
        partial = _snapshot(work_dir_for(out))
        for args in (_quantize_args(tiny_dirs["llama"], out, calib_file),
                     ["export", "--artifact", tmp_path / "elsewhere", "--out", out],
                     ["build", "--model", tiny_dirs["llama"], "--out", out, *SMALL]):
            t = time.perf_counter()
            code, output = _run_child(args)
            assert code == 1 and "Traceback" not in output, output
            assert f"is in use by another resq-export run (pid {first.pid}: resq-export quantize" in output, output
            assert time.perf_counter() - t < 60
        assert _snapshot(work_dir_for(out)) == partial  # the live run's work folder is untouched
        assert lock_path(out).exists()
    finally:
        (pause / "go").write_text("")
        out_text, err_text = first.communicate(timeout=300)
    assert first.returncode == 0, err_text
    assert (out / "manifest.json").is_file() and not lock_path(out).exists()  # released and removed


def test_a_killed_runs_lock_does_not_block(tiny_dirs, calib_file, tmp_path):
    out, pause = tmp_path / "Y", tmp_path / "pause"
    pause.mkdir()
    first = _child(_quantize_args(tiny_dirs["llama"], out, calib_file), PAUSE_DIR=str(pause))
    _wait_for(pause / "ready", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert lock_path(out).exists()  # left by the kill, but no longer locked
    result = run_cli(*_quantize_args(tiny_dirs["llama"], out, calib_file))
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and not lock_path(out).exists()


# ---- 6. the current directory, the home directory, folders holding the user's files ------------


def test_current_and_home_directories_are_refused_whatever_the_flags(art, tiny_dirs, calib_file, tmp_path,
                                                                     monkeypatch):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "work" / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    before = {d: _snapshot(d) for d in (home, art)}
    cases = [(art, ".", "is the current directory"),  # even an earlier artifact: replacing it would take the cwd
             (home / "work", ".", "is the current directory"),
             (home / "work", "..", "is your home directory"),
             (home / "work", "~", "is your home directory"),
             (home / "work", str(tmp_path), "contains the current directory")]
    for cwd, out, message in cases:
        monkeypatch.chdir(cwd)
        for command in (_quantize_args(tiny_dirs["llama"], out, calib_file, "--overwrite"),
                        ["export", "--artifact", art, "--out", out, "--overwrite"],
                        ["build", "--model", tiny_dirs["llama"], "--out", out, "--overwrite", *SMALL]):
            result = run_cli(*command)
            assert result.exit_code == 1 and message in result.output, (cwd, out, command[0], result.output)
    assert {d: _snapshot(d) for d in (home, art)} == before


def test_an_output_under_a_file_is_one_clear_line(artifacts, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    result = run_cli("export", "--artifact", artifacts["rtn"], "--out", tmp_path / "file.txt" / "sub" / "O")
    assert result.exit_code == 1 and f"{tmp_path / 'file.txt'} is not a folder" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"] and (tmp_path / "file.txt").read_text() == "mine"


# ---- 7. temporaries of killed runs are swept at the start of every command ---------------------


def test_a_killed_exports_temporary_goes_with_the_next_command_beside_it(artifacts, tmp_path):
    proc = export_killed_midway(artifacts["rtn"], tmp_path / "O1")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    stale = list(tmp_path.glob(".O1.tmp-*"))
    assert len(stale) == 1 and (stale[0] / "model.onnx").is_file()
    dead = _dead_pid()
    planted = [tmp_path / f".A2.tmp-{dead}-abcd_123", tmp_path / f".report.html.old-{dead}-zz99zz99"]
    planted[0].mkdir()
    planted[1].write_text("x")
    live = tmp_path / f".O9.tmp-{os.getpid()}-abcdefgh"  # a live process's write: left alone
    live.write_text("being written")
    lookalikes = [tmp_path / name for name in (f".notes.tmp-{dead}-short", f"notes.tmp-{dead}-abcdefgh",
                                                ".x.tmp-y-abcdefgh")]  # not what resq-export names its temporaries
    for path in lookalikes:
        path.write_text(path.name)
    # a command that writes beside them, refused at once (another --out), still sweeps them first
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("a")
    result = run_cli("export", "--artifact", artifacts["rtn"], "--out", mine)
    assert result.exit_code == 1 and "did not write (a.txt)" in result.output
    assert not any(p.exists() for p in stale + planted)
    assert live.read_text() == "being written" and all(p.read_text() == p.name for p in lookalikes)


def test_quantize_sweeps_its_work_folder_and_report_its_folder(art, tiny_dirs, calib_file, tmp_path):
    dead = _dead_pid()
    out = tmp_path / "Q"
    code, output = _run_child(_quantize_args(tiny_dirs["llama"], out, calib_file), KILL_AT="pass2:0")
    assert code == -signal.SIGKILL, output
    inside = work_dir_for(out) / f".layer-00001.safetensors.tmp-{dead}-k1ll3d00"
    beside = tmp_path / f".Q.tmp-{dead}-k1ll3d00"
    inside.write_bytes(b"half a layer")
    beside.mkdir()
    result = run_cli(*_quantize_args(tiny_dirs["llama"], out, calib_file))
    assert result.exit_code == 0, result.output
    assert not inside.exists() and not beside.exists()
    stale = tmp_path / f".r.html.tmp-{dead}-k1ll3d00"
    stale.write_text("<html>")
    assert run_cli("report", "--artifact", art, "--out", tmp_path / "other.html").exit_code == 0
    assert not stale.exists()


# ---- 24. a leftover work folder of other settings ----------------------------------------------


def test_a_leftover_work_folder_of_other_settings_names_the_values_and_overwrite_clears_it(tiny_dirs, calib_file,
                                                                                          tmp_path, caplog):
    out = tmp_path / "A"
    code, output = _run_child(_quantize_args(tiny_dirs["llama"], out, calib_file), KILL_AT="pass2:0")
    assert code == -signal.SIGKILL, output
    partial = work_dir_for(out)
    before = _snapshot(partial)
    result = run_cli(*_quantize_args(tiny_dirs["llama"], out, calib_file, "--seed", "3", "--nsamples", "3"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "different calibration_tokens (" in result.output  # other windows: they follow from the settings
    assert "and settings (nsamples: 4 there, 3 now; seed: 0 there, 3 now)" in result.output, result.output
    assert "pass --overwrite to discard it" in result.output
    assert _snapshot(partial) == before
    (partial / "mine.txt").write_text("not the tool's")  # --overwrite never deletes that
    result = run_cli(*_quantize_args(tiny_dirs["llama"], out, calib_file, "--seed", "3", "--overwrite"))
    assert result.exit_code == 1 and "mine.txt" in result.output and (partial / "mine.txt").is_file()
    (partial / "mine.txt").unlink()
    result = run_cli(*_quantize_args(tiny_dirs["llama"], out, calib_file, "--seed", "3", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert "discarding the interrupted run" in caplog.text and "seed: 0 there, 3 now" in caplog.text
    assert json.loads((out / "config.json").read_text())["quant"]["seed"] == 3 and not partial.exists()
