"""Where a command may write. resq-export replaces only what it wrote itself: an output folder that
exists must be empty or a previous output of the same kind (recognised by the file resq-export
writes into it), unless the user passes --overwrite; and no output may be, contain or lie inside
one of the command's inputs, whatever the flags."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

# kind -> the marker file resq-export writes into such a folder, with "tool": "resq-export"
_MARKERS = {"artifact": ("manifest.json",), "onnx": ("export.json",),
            "build": ("validation.json", "artifact/manifest.json", "onnx/export.json")}
_OVERWRITE = {"artifact": "replace the folder and everything in it", "onnx": "replace the folder and everything in it",
              "build": "write artifact/, onnx/ and validation.json into it (replacing those, keeping the rest)"}
TOOL = "resq-export"


def _ours(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("tool") == TOOL or path.name == "validation.json"
    except (OSError, ValueError, AttributeError):
        return False


def is_previous_output(folder: Path, kind: str) -> bool:
    return any(_ours(folder / marker) for marker in _MARKERS[kind] if (folder / marker).is_file())


def _relation(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    if inp in out.parents:
        return "lies inside"
    if out in inp.parents:
        return "contains"
    return None


def check_output(out: Path, kind: str, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> Path:
    """The output folder, resolved, once it is safe to (re)write; ConfigError otherwise. `inputs`
    are the paths the command reads (names that are no path, like 'smollm2-135m', are skipped)."""
    out = Path(out).expanduser().resolve()
    if out == Path(out.anchor):
        raise ConfigError(f"--out {out} is a file system root: choose a folder for the {kind}")
    for inp in inputs:
        inp_path = Path(inp).expanduser()
        if not inp_path.exists():
            continue
        relation = _relation(out, inp_path.resolve())
        if relation:
            raise ConfigError(f"--out {out} {relation} the input {inp_path.resolve()}: "
                              "choose an output folder outside the command's inputs")
    if not out.exists():
        return out
    if not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if not any(out.iterdir()) or is_previous_output(out, kind):
        return out
    if overwrite:
        log.warning("replacing %s, which is not a resq-export %s output (--overwrite)", out, kind)
        return out
    raise ConfigError(f"--out {out} exists, is not empty and holds no resq-export {kind} output: choose another "
                      f"folder, or pass --overwrite to {_OVERWRITE[kind]}")
