"""The op tables of plugins/trt/README.md and docs/ops.md against ops.json, the one source: every
input and output is listed, under the op's current version, with the presence rule the plugin uses."""

import re
from pathlib import Path

from resq_export.export.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^##+ {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"no section '{heading}'"
    return m.group(1)


def _listed(section: str) -> dict[str, str]:
    """Names in the name columns (1st, and 3rd where a table puts outputs beside inputs) of the
    section's tables, brace and comma lists expanded -> their row."""
    rows = {}
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = line.split("|")
        for cell in (cells[1], cells[3] if len(cells) > 4 else ""):
            words = re.sub(r"\(.*?\)", "", cell).replace("`", "")
            words = re.sub(r"(\w*)\{(\w+),(\w+)\}(\w*)", r"\1\2\4, \1\3\4", words)  # past_{key,value}_codes
            for item in (w.strip() for w in words.split(",")):
                if re.fullmatch(r"\w+", item):
                    rows[item] = line
    return rows


def test_plugin_readme_lists_every_input_and_output():
    readme = (ROOT / "plugins" / "trt" / "README.md").read_text()
    for op, spec in load_spec()["ops"].items():
        if op == "ResQMixedLinear":  # ONNX Runtime only: the TensorRT flavour has ResQMixedLinearPrepared
            continue
        section = _section(readme, f"{op} v{spec['version']}")
        rows = _listed(section)
        names = [i["name"] for i in spec["inputs"]] + [o["name"] for o in spec["outputs"]]
        listed = {n for n in names if n in rows or (n.startswith("present_") and "present_*" in section)}
        assert listed == set(names), f"{op}: not in plugins/trt/README.md: {sorted(set(names) - listed)}"
        for i in spec["inputs"]:
            if i.get("present_if") and i["name"] in rows:
                assert f"when {i['present_if']} > 0" in rows[i["name"]], (op, i["name"])
            elif i.get("optional") and i["name"] in rows and "present_if" not in i:
                assert "optional" in rows[i["name"]], (op, i["name"])


def test_ops_md_lists_the_prepared_linear_inputs():
    spec = load_spec()["ops"]["ResQMixedLinearPrepared"]
    rows = _listed(_section((ROOT / "docs" / "ops.md").read_text(), "ResQMixedLinearPrepared"))
    missing = [i["name"] for i in spec["inputs"] if i["name"] not in rows]
    assert not missing, missing
