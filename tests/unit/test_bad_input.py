"""Every command's bad input: one clear line and a non-zero exit, never a traceback. A table of
command line -> exit code and a fragment of the message, so that none regresses."""

import errno
import json
import shutil

import pytest
from click.testing import CliRunner

from resq_export.cli import main
from resq_export.export.writer import export_onnx


@pytest.fixture(scope="module")
def places(artifacts, tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    onnx_dir = root / "onnx"
    export_onnx(artifacts["rtn"], onnx_dir)
    no_tokenizer = root / "onnx_no_tokenizer"
    shutil.copytree(onnx_dir, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    for name, config in [("list_config", [1, 2]), ("string_arch", {"architectures": "BertModel"})]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    cut = shutil.copytree(tiny_dirs["llama"], root / "cut_weights")
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    (root / "busy").mkdir()
    (root / "busy" / "keep.txt").write_text("x")
    return {"root": root, "onnx": onnx_dir, "no_tokenizer": no_tokenizer, "art": artifacts["rtn"],
            "model": tiny_dirs["llama"]}


CASES = [
    # (command line with {placeholders}, exit code, fragment of the message)
    ("quantize --model {root}/list_config --out {root}/o1 --quiet", 1, "is not a JSON object"),
    ("quantize --model {root}/string_arch --out {root}/o2 --quiet", 1, "unsupported architecture 'BertModel'"),
    ("quantize --model {root}/missing --out {root}/o3 --quiet", 1, "not found"),
    ("quantize --model {root}/cut_weights --out {root}/o7 --quiet", 1, "truncated"),
    ("quantize --model {model} --out {root}/busy --quiet", 1, "--overwrite"),
    ("quantize --model {model} --out {model} --quiet", 1, "is the input"),
    ("quantize --model {model} --out {root}/o4 --method nope", 2, "Invalid value for '--method'"),
    ("quantize --model {model} --out {root}/o6 --lqer-rank 1000 --quiet", 1, "exceeds the smallest linear dimension"),
    ("export --artifact {root}/missing --out {root}/o5", 1, "not a resq-export artifact"),
    ("export --artifact {art} --out {art}", 1, "is the input"),
    ("validate --onnx {root}/busy", 1, "is not a resq-export ONNX folder"),
    ("validate --onnx {onnx} --decode-steps 0", 2, "0 is not in the range x>=1"),
    ("validate --onnx {onnx} --seqlen 8 --max-tokens 16 --decode-steps 40 --quiet", 1, "--decode-steps 40 needs 55"),
    ("generate --onnx {onnx} --prompt ''", 2, "the prompt is empty"),
    ("generate --onnx {onnx} --prompt hi --max-new-tokens 0", 2, "--max-new-tokens >= 1"),
    ("generate --onnx {no_tokenizer} --prompt hi", 1, "tokenizer.json is missing"),
    ("generate --onnx {onnx} --prompt '" + "word " * 300 + "'", 1, "exceeds the model's context of 256 tokens"),
    ("engine --onnx {root}/busy --engine {root}/e.plan", 1, "is not a resq-export ONNX folder"),
    ("engine --onnx {onnx} --engine {root}/e.plan --target-sm ada", 1, "compute capability"),
    ("report --artifact {root}/busy --out {root}/r.html", 1, "not a resq-export artifact"),
    ("eval --quiet", 2, "exactly one of --artifact or --model"),
    ("eval --artifact {root}/missing --quiet", 1, "not a resq-export artifact"),
    ("eval --model {root}/missing --quiet", 1, "not found"),
    ("build --model {model} --out {root}/busy --quiet", 1, "--overwrite"),
]


@pytest.mark.parametrize("line, code, fragment", CASES, ids=[c[0].split()[0] + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_input_table(places, line, code, fragment):
    import shlex

    args = shlex.split(line.format(**{k: str(v) for k, v in places.items()}))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (line, result.output, result.exception)
    assert fragment in result.output, (line, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (line, repr(result.exception))


def test_unwritable_output_is_one_line(places, tmp_path):
    """A location the process may not write (sysfs, as root in a container) ends in one line naming it."""
    import os

    target = "/sys/resq-export-test"
    try:
        os.mkdir(target)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EROFS, errno.EACCES):
            pytest.skip(f"mkdir {target}: {e} (not a write refusal)")
    else:
        os.rmdir(target)
        pytest.skip(f"{target} is writable here")
    result = CliRunner().invoke(main, ["export", "--artifact", str(places["art"]), "--out", f"{target}/onnx"])
    assert result.exit_code == 1 and "/sys" in result.output and "choose a" in result.output, result.output
    assert not isinstance(result.exception, OSError)


def test_seqlen_beyond_the_context_is_said(places, caplog):
    """Calibration windows longer than the model's context run (RoPE extends) but are said."""
    import logging

    from tiny_models import SMALL, calibration_text

    calib = places["root"] / "calib.txt"
    calib.write_text(calibration_text())
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(main, ["quantize", "--model", str(places["model"]), "--out",
                                           str(places["root"] / "long"), "--calib-data", str(calib), *SMALL,
                                           "--seqlen", "300", "--nsamples", "2", "--method", "rtn"])
    assert result.exit_code == 0, result.output
    assert "--seqlen 300 exceeds the model's context of 256 tokens" in caplog.text


def test_a_note_before_hashing_a_large_model(tmp_path, caplog, monkeypatch):
    """Minutes of hashing at 8B are announced, not silent; a small model says nothing."""
    import logging

    from resq_export import fileio

    big = tmp_path / "model.safetensors"
    big.write_bytes(bytes(4096))
    with caplog.at_level(logging.WARNING):
        fileio.note_hashing(tmp_path, [big])
        assert not caplog.records
        monkeypatch.setattr(fileio, "HASH_NOTE_BYTES", 1024)
        fileio.note_hashing(tmp_path, [big, tmp_path / "absent"])
    assert f"checking the sha256 of {tmp_path}" in caplog.text
