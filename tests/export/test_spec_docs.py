"""The op tables of each op folder's README (plugins/<op>/README.md, the folder named by ops.json's
"native") and of docs/ops.md are generated from ops.json, the one source
(plugins/tools/gen_op_tables.py); these tests fail when a table is stale or missing."""

import importlib.util
from pathlib import Path

from resq_export.export.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_op_tables", ROOT / "plugins" / "tools" / "gen_op_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_op_has_its_native_folder_and_table():
    gen = _generator()
    for op, spec in load_spec()["ops"].items():
        folder = ROOT / spec["native"]
        # GPU code: hand-written CUDA (*.cu) or launch code on the Triton cubins (triton_*.cpp)
        gpu = list(folder.glob("*.cu")) + list(folder.glob("triton_*.cpp"))
        assert list(folder.glob("*_ref.cpp")) and gpu, f"{op}: {folder} lacks a reference or GPU code"
        readme = (folder / "README.md").read_text()
        assert gen.BEGIN.format(op=op) in readme, f"{op}: no generated table in {spec['native']}/README.md"


def test_op_tables_equal_what_ops_json_renders():
    stale = [str(path.relative_to(ROOT)) for path, text in _generator().documents().items() if path.read_text() != text]
    assert not stale, f"stale op tables in {stale}: run python plugins/tools/gen_op_tables.py"


def test_rendered_table_lists_every_input_with_its_presence_rule():
    gen = _generator()
    spec = load_spec()["ops"]["ResQMixedLinearPrepared"]
    table = gen.render("ResQMixedLinearPrepared", spec)
    assert "ResQMixedLinearPrepared v1" in table
    for item in spec["inputs"] + spec["outputs"]:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{item['name']}` |"))
        if item.get("present_if"):
            assert f"when {item['present_if']} > 0" in row


def test_ops_md_holds_the_prepared_linear_table():
    assert _generator().BEGIN.format(op="ResQMixedLinearPrepared") in (ROOT / "docs" / "ops.md").read_text()
