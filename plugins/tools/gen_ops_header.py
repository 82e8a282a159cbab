"""Generate resq_ops.h (op names, versions, input/output indices, which optional inputs a node lists,
attribute names and defaults, the plugin creators' fields)
from resq_export/export/ops.json. Run by CMake at build time; stdlib only."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SystemExit(f"ops.json: {name!r} is not usable as a C++ identifier")
    return name


def _input_index(op: dict, name: str) -> int:
    """The spec index of an aliased input, which must come before every optional input: the plugins
    then find it at that position whatever a node lists (PluginUtils.h, getAliasedInput)."""
    names = [i["name"] for i in op["inputs"]]
    if name not in names:
        raise SystemExit(f"ops.json: an output aliases {name!r}, which is not an input")
    if any(i.get("optional") for i in op["inputs"][:names.index(name)]):
        raise SystemExit(f"ops.json: the aliased input {name!r} follows an optional input")
    return names.index(name)


def _manifest(spec: dict) -> str:
    """One line per op, the same text resq_export.native.spec_manifest() builds from ops.json."""
    lines = []
    for op, s in sorted(spec["ops"].items()):
        ins = ",".join(i["name"] + ("?" if i.get("optional") else "") for i in s["inputs"])
        outs = ",".join(o["name"] for o in s["outputs"])
        attrs = ",".join(sorted(s["attributes"]))
        lines.append(f"{op} v{s['version']} in={ins} out={outs} attrs={attrs}")
    return "\\n".join(lines)


def generate(spec: dict) -> str:
    out = [
        "// Generated from resq_export/export/ops.json by plugins/tools/gen_ops_header.py. Do not edit.",
        "#pragma once",
        "",
        f'#define RESQ_SPEC_DOMAIN "{spec["domain"]}"',
        f'#define RESQ_SPEC_PLUGIN_NAMESPACE "{spec["plugin_namespace"]}"',
        f"#define RESQ_SPEC_VERSION {int(spec['spec_version'])}",
        # the C entry points' signatures: bumped with any change, checked by the Python loader and the plugins
        f"#define RESQ_ABI_VERSION {int(spec['abi_version'])}",
        f'#define RESQ_SPEC_MANIFEST "{_manifest(spec)}"',
        "",
        "#ifdef __cplusplus",
        "namespace resq { namespace spec {",
    ]
    for op, s in sorted(spec["ops"].items()):
        out += [f"namespace {_ident(op)} {{",
                f'constexpr const char* kName = "{op}";',
                f'constexpr const char* kVersion = "{int(s["version"])}";',
                f"constexpr int kNumInputs = {len(s['inputs'])};",
                f"constexpr int kNumOutputs = {len(s['outputs'])};",
                "enum Input : int { " + ", ".join(f"in_{_ident(i['name'])} = {n}" for n, i in enumerate(s["inputs"])) + " };",
                "enum Output : int { "
                + ", ".join(f"out_{_ident(o['name'])} = {n}" for n, o in enumerate(s["outputs"])) + " };",
                "constexpr bool kInputOptional[] = {"
                + ", ".join("true" if i.get("optional") else "false" for i in s["inputs"]) + "};",
                # an input with present_if is listed when that attribute (or its default) is > 0
                "constexpr const char* kInputPresentIf[] = {"
                + ", ".join(f'"{i["present_if"]}"' if i.get("present_if") else "nullptr" for i in s["inputs"]) + "};",
                "constexpr int kInputPresentDefault[] = {"
                + ", ".join(str(int(s["attributes"][i["present_if"]].get("default", 0))) if i.get("present_if") else "1"
                            for i in s["inputs"]) + "};",
                # the creator's plugin fields: every INT attribute, in ops.json's order
                "constexpr const char* kIntFields[] = {"
                + ", ".join([f'"{n}"' for n, a in s["attributes"].items() if a["type"] == "INT"] or ["nullptr"]) + "};",
                f"constexpr int kNumIntFields = {sum(1 for a in s['attributes'].values() if a['type'] == 'INT')};",
                "// whether a node lists spec input `spec`; attrs.get(name, fallback) reads an INT attribute",
                "template <class Attrs> inline bool input_present(int spec, const Attrs& attrs) {",
                "  return kInputPresentIf[spec] == nullptr ||",
                "         attrs.get(kInputPresentIf[spec], kInputPresentDefault[spec]) > 0;",
                "}",
                "constexpr const char* kInputDTypes[] = {" + ", ".join(f'"{i["dtype"]}"' for i in s["inputs"]) + "};",
                "constexpr const char* kOutputDTypes[] = {" + ", ".join(f'"{o["dtype"]}"' for o in s["outputs"]) + "};",
                # the spec input each output shares its buffer with (ops.json "aliases"), -1 for none
                "constexpr int kOutputAliasesInput[] = {"
                + ", ".join(str(_input_index(s, o["aliases"])) if o.get("aliases") else "-1" for o in s["outputs"]) + "};"]
        # what the CUDA kernels run (ops.json "gpu"), asked by the kernels, the plugins and Python
        # (a list: the values allowed, gpu_<key>[] and its length gpu_<key>_count)
        for k, v in s.get("gpu", {}).items():
            if k == "doc":
                continue
            if isinstance(v, list):
                out += [f"constexpr int gpu_{_ident(k)}[] = {{{', '.join(str(int(x)) for x in v)}}};",
                        f"constexpr int gpu_{_ident(k)}_count = {len(v)};"]
            else:
                out.append(f"constexpr int gpu_{_ident(k)} = {int(v)};")
        for name, a in sorted(s["attributes"].items()):
            out.append(f'constexpr const char* attr_{_ident(name)} = "{name}";')
            if "default" in a and a["type"] == "INT":
                out.append(f"constexpr int default_{name} = {int(a['default'])};")
            elif "default" in a and a["type"] == "STRING":
                out.append(f'constexpr const char* default_{name} = "{a["default"]}";')
        out.append(f"}}  // namespace {op}")
    out += ["}}  // namespace resq::spec", "#endif", ""]
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: gen_ops_header.py ops.json out.h")
    spec = json.loads(Path(argv[1]).read_text())
    text = generate(spec)
    dest = Path(argv[2])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_text() != text:  # keep the timestamp: no needless rebuilds
        dest.write_text(text)


if __name__ == "__main__":
    main(sys.argv)
