"""Issue 33 item 9: every JSON file resq-export reads back is checked against its schema where it is
read; a file of another shape is refused in one line naming the file and the field."""

import json
import shutil

import pytest
from click.testing import CliRunner

from resq_export.cli import main
from resq_export.errors import ArtifactError, ResumeError
from resq_export.fileio import sha256_file
from resq_export.manifests import (ARTIFACT_CONFIG, ARTIFACT_MANIFEST, EVALUATIONS_JSON, EXPORT_JSON, PLAN_MANIFEST,
                                   STATE_JSON, VALIDATION_JSON, check_schema)


def _problem(data, schema) -> str:
    with pytest.raises(ArtifactError) as e:
        check_schema(data, schema, "F.json", "do this")
    return str(e.value)


def test_the_checker_names_the_field_and_what_it_should_be():
    assert _problem({"tool": "resq-export", "files": 5}, EXPORT_JSON) == (
        "F.json: the field 'files' should be an object, not an integer (5); do this")
    assert _problem([1], EXPORT_JSON) == "F.json: the file should be an object, not a list; do this"
    assert "the field 'tool' is missing" in _problem({}, EXPORT_JSON)
    assert "the field \"files['model.onnx'].bytes\" should be an integer, not a string ('12')" in _problem(
        {"tool": "x", "files": {"model.onnx": {"bytes": "12", "sha256": "ab"}}}, EXPORT_JSON)
    assert "'schema_version' should be an integer, not true or false (True)" in _problem(
        {"schema_version": True, "files": {}}, ARTIFACT_MANIFEST)
    assert "the field 'model.architecture' is missing" in _problem(
        {"schema_version": 1, "model": {"hidden_size": 64}, "quant": {}, "layouts": None}, ARTIFACT_CONFIG)
    assert "'passed' should be true or false, not a string ('yes')" in _problem(
        {"passed": "yes", "ppl_ort": 1.0, "ppl_reference": 1.0}, VALIDATION_JSON)
    assert "'fingerprint' should be a string, not an integer (3)" in _problem({"fingerprint": 3}, STATE_JSON)
    assert "'runtime' should be an object" in _problem({"tool": "resq-export", "runtime": "trt"}, PLAN_MANIFEST)
    assert "'[0].ppl' should be a number, not null" in _problem([{"ppl": None}], EVALUATIONS_JSON)
    with pytest.raises(ResumeError):  # each reader raises its own error class
        check_schema({}, STATE_JSON, "state.json", "delete it", ResumeError)


def test_what_the_tool_writes_passes(artifacts, tmp_path):
    """The files of a real artifact and export follow their schemas (a schema stricter than the writer
    would refuse every output)."""
    from resq_export.export.writer import export_onnx

    art = artifacts["resq"]
    check_schema(json.loads((art / "manifest.json").read_text()), ARTIFACT_MANIFEST, "m", "")
    check_schema(json.loads((art / "config.json").read_text()), ARTIFACT_CONFIG, "c", "")
    meta = export_onnx(art, tmp_path / "onnx")
    check_schema(meta, EXPORT_JSON, "e", "")
    check_schema(json.loads((tmp_path / "onnx" / "export.json").read_text()), EXPORT_JSON, "e", "")


def _rehash(art, name):
    """Record an edited file's hash in the manifest, so that the schema check is what the test reaches."""
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(art / name)
    (art / "manifest.json").write_text(json.dumps(manifest))


def test_readers_refuse_files_of_another_shape(artifacts, tmp_path):
    art = shutil.copytree(artifacts["rtn"], tmp_path / "art")
    config = json.loads((art / "config.json").read_text())
    (art / "config.json").write_text(json.dumps({**config, "model": "llama"}))
    _rehash(art, "config.json")
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art), "--quiet"])
    assert result.exit_code == 1 and "config.json: the field 'model' should be an object, not a string" in result.output

    art2 = shutil.copytree(artifacts["rtn"], tmp_path / "art2")
    (art2 / "manifest.json").write_text(json.dumps({"schema_version": 1, "tool": "resq-export", "files": [1]}))
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art2), "--quiet"])
    assert result.exit_code == 1 and "manifest.json: the field 'files' should be an object, not a list" in result.output
    assert "quantize the model again" in result.output

    art3 = shutil.copytree(artifacts["rtn"], tmp_path / "art3")
    (art3 / "evaluations.json").write_text(json.dumps({"ppl": 3}))
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art3), "--quiet", "--seqlen", "64",
                                       "--max-tokens", "128"])
    # not a list of resq-export's entries: the user's file, left alone; the evaluation runs, unrecorded
    assert result.exit_code == 0, result.output
    assert json.loads((art3 / "evaluations.json").read_text()) == {"ppl": 3}  # the user's file is left as it was

    # one of ours whose entries lost a field the report reads: refused, naming the field
    art4 = shutil.copytree(artifacts["rtn"], tmp_path / "art4")
    (art4 / "evaluations.json").write_text(json.dumps([{"tool": "resq-export", "ppl": "high"}]))
    result = CliRunner().invoke(main, ["eval", "--artifact", str(art4), "--quiet", "--seqlen", "64",
                                       "--max-tokens", "128"])
    assert result.exit_code == 1, result.output
    assert "evaluations.json" in result.output and "'[0].ppl' should be a number" in result.output


def test_state_and_validation_readers_check_their_schema(tiny_dirs, calib_file, artifacts, tmp_path):
    """The two readers hooked up after the merge: quantize's resume (state.json) and the report's
    build validation (validation.json): one line naming the file and the field, the file left alone."""
    out = tmp_path / "A"
    partial = tmp_path / "A.partial"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"fingerprint": 7}))
    result = CliRunner().invoke(main, ["quantize", "--model", str(tiny_dirs["llama"]), "--out", str(out),
                                       "--method", "rtn", "--calib-data", str(calib_file), "--nsamples", "4",
                                       "--seqlen", "32", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "state.json: the field 'fingerprint' should be a string, not an integer (7)" in result.output
    assert json.loads((partial / "state.json").read_text()) == {"fingerprint": 7}

    build = tmp_path / "B"
    shutil.copytree(artifacts["rtn"], build / "artifact")
    bad = {"tool": "resq-export", "passed": "yes", "ppl_ort": 1.0, "ppl_reference": 1.0, "ppl_fp": 1.0,
           "artifact": {"path": "x", "weights_sha256": "y"}}
    (build / "validation.json").write_text(json.dumps(bad))
    result = CliRunner().invoke(main, ["report", "--artifact", str(build / "artifact"), "--out",
                                       str(tmp_path / "r.html")])
    assert result.exit_code == 1, result.output
    assert "validation.json: the field 'passed' should be true or false" in result.output
