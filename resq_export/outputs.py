"""Where a command may write. resq-export replaces only what it wrote itself:

- an output folder that exists must be empty or an earlier output, recognised by the marker file
  resq-export writes into it (manifest.json of an artifact, export.json of an ONNX folder, build.json
  of a build folder, each with "tool": "resq-export" and the files written), never by a file name;
- a file in it that resq-export did not write stops the command, naming it, whatever the flags:
  nothing the user put there is deleted (--overwrite only lets one kind of our output replace another);
- no output may be, contain or lie inside one of the command's inputs, the file system root, the
  current directory or the home directory;
- one run at a time per output (a lock beside it, fileio.OutputLock), and what killed runs left
  beside it is removed first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import ConfigError
from .fileio import OutputBusy, OutputLock, lock_path, sweep_stale_temporaries

log = logging.getLogger(__name__)

TOOL = "resq-export"
BUILD_MARKER = "build.json"  # a build folder's own marker: tool, command, the entries it writes
BUILD_ENTRIES = ("artifact", "onnx", "validation.json", BUILD_MARKER)
SERVE_MARKER = "serve.json"  # a Triton model repository's (serve-repo): tool, command, the files written
EVALUATIONS_FILE = "evaluations.json"  # beside an artifact's files, written by `eval --artifact`
REPORT_GENERATOR = '<meta name="generator" content="resq-export'  # in every report `report` writes
_ARTICLE = {"artifact": "an artifact", "onnx": "an ONNX folder", "build": "a build folder",
            "serve": "a Triton model repository"}
_SHOWN = 3  # files named in a refusal; the rest are counted


def _json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _tool_json(path: Path) -> dict | None:
    """The JSON object at path when resq-export wrote it ("tool": "resq-export"), else None."""
    data = _json(path)
    return data if isinstance(data, dict) and data.get("tool") == TOOL else None


def is_our_evaluations(path: Path) -> bool:
    """evaluations.json as `eval --artifact` writes it: a list of results, each marked with the tool
    (or, before the mark, with the fields it always wrote)."""
    data = _json(path)
    return isinstance(data, list) and bool(data) and all(
        isinstance(e, dict) and (e.get("tool") == TOOL or {"ppl", "label", "date"} <= e.keys()) for e in data)


def is_our_report(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return REPORT_GENERATOR in head


def is_our_validation(path: Path) -> bool:
    """A build's validation.json: marked with the tool, or (before the mark) its result fields."""
    data = _json(path)
    return isinstance(data, dict) and (data.get("tool") == TOOL or (
        {"ppl_fp", "passed", "artifact"} <= data.keys() and isinstance(data["artifact"], dict)))


def artifact_side_files(folder: Path) -> list[str]:
    """Results resq-export keeps beside an artifact's own files: evaluations.json and reports."""
    folder = Path(folder)
    side = [EVALUATIONS_FILE] if is_our_evaluations(folder / EVALUATIONS_FILE) else []
    return side + sorted(p.name for p in folder.glob("*.html") if p.is_file() and is_our_report(p))


def output_kind(folder: Path) -> str | None:
    """Which resq-export output the folder is, by its marker file, or None."""
    folder = Path(folder)
    if _tool_json(folder / "manifest.json"):
        return "artifact"
    if _tool_json(folder / "export.json"):
        return "onnx"
    if _tool_json(folder / SERVE_MARKER):
        return "serve"
    marker = _tool_json(folder / BUILD_MARKER)
    if marker and marker.get("command") == "build":
        return "build"
    # builds before build.json: an artifact/ or onnx/ of ours inside (validation.json alone is not enough)
    if _tool_json(folder / "artifact" / "manifest.json") or _tool_json(folder / "onnx" / "export.json"):
        return "build"
    return None


# ONNX folders exported before export.json listed its files
_LEGACY_ONNX = ("export.json", "model.onnx", "model.onnx.data", "model.trt.onnx", "model.trt.onnx.data")


def _listed(folder: Path, marker: str, legacy: Iterable[str]) -> set[str]:
    meta = _tool_json(folder / marker) or {}
    files = meta.get("files")
    if isinstance(files, dict):
        return {str(name) for name in files} | {marker}
    names = set(legacy) | {marker}
    tokenizer = folder / "tokenizer"
    if tokenizer.is_dir():
        names |= {p.relative_to(folder).as_posix() for p in tokenizer.rglob("*") if not p.is_dir()}
    return names


def tool_files(folder: Path, kind: str) -> set[str]:
    """Paths (relative, '/'-separated) of the files resq-export wrote into this output of `kind`."""
    folder = Path(folder)
    if kind == "artifact":
        return _listed(folder, "manifest.json", ()) | set(artifact_side_files(folder))
    if kind == "onnx":
        return _listed(folder, "export.json", _LEGACY_ONNX)
    if kind == "serve":
        return _listed(folder, SERVE_MARKER, ())
    names = {BUILD_MARKER} if _tool_json(folder / BUILD_MARKER) else set()
    if is_our_validation(folder / "validation.json"):
        names.add("validation.json")
    for sub, sub_kind in (("artifact", "artifact"), ("onnx", "onnx")):
        if output_kind(folder / sub) == sub_kind:
            names |= {f"{sub}/{n}" for n in tool_files(folder / sub, sub_kind)}
        names.add(lock_path(folder / sub).name)  # left by a killed stage (unlocked: no run holds it)
    partial = folder / "artifact.partial"  # an interrupted quantize stage (its own check guards its content)
    if partial.is_dir():
        names |= {p.relative_to(folder).as_posix() for p in partial.rglob("*") if not p.is_dir()}
    return names


_SCANNED = 100_000  # entries looked at in a folder: enough to name some, without walking a whole disk


def foreign_files(folder: Path, ours: set[str]) -> list[str]:
    """What in folder is not in `ours`: files, links, and empty folders (named 'd/')."""
    folder = Path(folder)
    foreign = []
    for path in sorted(itertools.islice(folder.rglob("*"), _SCANNED)):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(o == rel or o.startswith(rel + "/") for o in ours) and not any(path.iterdir()):
                foreign.append(rel + "/")
        elif rel not in ours:
            foreign.append(rel)
    return foreign


def _named(files: list[str]) -> str:
    shown = ", ".join(files[:_SHOWN])
    return shown + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")


def _refuse_foreign(out: Path, files: list[str], where: str = "") -> ConfigError:
    return ConfigError(f"--out {out} holds {'a file' if len(files) == 1 else 'files'} resq-export did not write"
                       f"{where} ({_named(files)}): move {'it' if len(files) == 1 else 'them'} elsewhere or choose "
                       "another --out (resq-export never deletes files it did not write, --overwrite included)")


def _relation(out: Path, inp: Path) -> str | None:
    if out == inp:
        return "is"
    if inp in out.parents:
        return "lies inside"
    if out in inp.parents:
        return "contains"
    return None


def _refuse_special(out: Path, kind: str) -> None:
    """The root, the current directory and the home directory (or a folder around them): a command
    that replaces its output would take them with it, whatever the flags."""
    if out == Path(out.anchor):
        raise ConfigError(f"--out {out} is a file system root: choose a folder for the {kind}")
    places = [(Path.cwd().resolve(), "the current directory")]
    with contextlib.suppress(RuntimeError):  # no home directory known: nothing to guard there
        places.append((Path.home().resolve(), "your home directory"))
    for relation, (place, label) in ((r, p) for r in ("is", "contains") for p in places):  # the closer one first
        if _relation(out, place) == relation:
            raise ConfigError(f"--out {out} {relation} {label}, which resq-export never writes over: choose a "
                              f"new folder for the {kind}")


def check_output(out: Path, kind: str, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> Path:
    """The output folder, resolved, once it is safe to (re)write; ConfigError otherwise. `inputs`
    are the paths the command reads (names that are no path, like 'smollm2-135m', are skipped).
    kind "artifact"/"onnx": the folder is replaced whole; "build": artifact/, onnx/, validation.json
    and build.json are written into it and everything else in it is kept."""
    out = Path(out).expanduser().resolve()
    _refuse_special(out, kind)
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
    if not any(out.iterdir()):
        return out
    found = output_kind(out)
    if found is None:
        raise _refuse_foreign(out, foreign_files(out, set()))
    if kind == "build":
        if found != "build":
            raise ConfigError(f"--out {out} is {_ARTICLE[found]} of resq-export, not a build folder: choose another "
                              "--out for the build")
        foreign = foreign_files(out, tool_files(out, "build"))
        at_risk = [f for f in foreign if f.split("/")[0] in BUILD_ENTRIES]  # the rest of a build folder is kept
        if at_risk:
            raise _refuse_foreign(out, at_risk, " where the build writes")
        return out
    foreign = foreign_files(out, tool_files(out, found))
    if foreign:
        raise _refuse_foreign(out, foreign)
    if found != kind and not overwrite:
        raise ConfigError(f"--out {out} is {_ARTICLE[found]} of resq-export, not {_ARTICLE[kind]}: pass --overwrite "
                          f"to replace it, or choose another --out")
    return out


def _missing_parents(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def claim_output(out: Path, kind: str, inputs: Iterable[str | Path] = (), overwrite: bool = False) -> Iterator[Path]:
    """check_output under the output's lock, held until the block ends: a second run on the same
    output stops at once, naming the first. Temporaries that killed runs left beside the output
    (and in it, and in its work folder) are removed first."""
    inputs = list(inputs)
    out = Path(out).expanduser().resolve()
    _refuse_special(out, kind)  # before anything is created beside it
    created = _missing_parents(out.parent)
    existing = created[-1].parent if created else out.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is not a folder; choose an --out inside a folder")
    out.parent.mkdir(parents=True, exist_ok=True)  # the lock lives beside the output
    lock = OutputLock(out)
    try:
        lock.acquire()
    except OutputBusy as e:
        raise ConfigError(f"--out {out} is in use by another resq-export run ({e}): wait for it to finish, or "
                          "choose another --out") from None
    try:
        for folder in (out.parent, out, out.with_name(out.name + ".partial")):
            sweep_stale_temporaries(folder)
        yield check_output(out, kind, inputs, overwrite)
    finally:
        lock.release()
        if not out.exists():  # refused or failed before writing: leave no empty folders behind
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _input_folder(folder: Path) -> str | None:
    """What kind of folder of inputs this is, one that no report may be written into: an artifact,
    an ONNX folder, a model folder, a quantize work folder; else None."""
    kind = output_kind(folder)
    if kind in ("artifact", "onnx"):
        return {"artifact": "artifact", "onnx": "ONNX folder"}[kind]
    if (folder / "config.json").is_file() and any(
            any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.gguf", "*.safetensors.index.json")):
        return "model folder"
    if folder.name.endswith(".partial") and (folder / "state.json").is_file():
        return "quantize work folder"
    if (folder / "model.onnx").is_file():
        return "ONNX folder"
    return None


def check_report_output(out: Path, artifact: Path) -> Path:
    """Where `report` may write its HTML page: a new file, or a report it wrote before (recognised by
    its generator mark), outside every artifact, ONNX, model and work folder, except at the top of
    the reported artifact's own folder, beside its evaluations, under a name that is none of its
    files. Anything else is refused, whatever the flags: report never replaces a file it did not write."""
    out = Path(out).expanduser().resolve()
    art = Path(artifact).expanduser().resolve()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: name the HTML file to write, e.g. --out {out / 'report.html'}")
    if out.parent == art:
        taken = tool_files(art, "artifact") - set(artifact_side_files(art))
        if out.name in taken or (out.name == EVALUATIONS_FILE):
            raise ConfigError(f"--out {out} is a file of the artifact {art}: choose another name for the report "
                              "(e.g. report.html)")
    if output_kind(out.parent) == "build" and out.name in BUILD_ENTRIES:
        raise ConfigError(f"--out {out} is where the build in {out.parent} keeps its {out.name}: choose another "
                          "name for the report (e.g. report.html)")
    for folder in out.parents:
        what = _input_folder(folder)
        if what and not (folder == art and out.parent == art):
            raise ConfigError(f"--out {out} lies inside the {what} {folder}: write the report outside it "
                              "(or at the top of the reported artifact's folder)")
    if out.exists() and not is_our_report(out):
        raise ConfigError(f"--out {out} exists and is not a report resq-export wrote: choose another file name "
                          "(report replaces only its own earlier reports)")
    sweep_stale_temporaries(out.parent)
    return out
