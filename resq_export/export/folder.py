"""Read an ONNX folder that export wrote (export.json, model.onnx, model.trt.onnx and their weights)
and refuse one that is not ours, damaged or of another op version. Apart from the writer: running
a folder (ONNX Runtime, serving) reads it without torch, which the writer's graph building needs."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from ..errors import ArtifactError
from ..fileio import note_hashing, read_json, sha256_file
from ..manifests import EXPORT_JSON, check_schema
from .spec import DOMAIN, load_spec, op_version

log = logging.getLogger(__name__)

ORT_FILE = "model.onnx"
TRT_FILE = "model.trt.onnx"
META_FILE = "export.json"


def check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse a graph whose weights file is missing or shorter than the graph says (a folder copied
    without its .data files, an interrupted copy), before a runtime fails on it less clearly."""
    needed: dict[str, int] = {}
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
            needed[info["location"]] = max(needed.get(info["location"], 0), end)
    for location, end in needed.items():
        data = Path(path).parent / location
        if not data.is_file():
            problem = "missing"
        elif data.stat().st_size < end:
            problem = f"{data.stat().st_size} bytes, the graph reads up to {end}"
        else:
            continue
        raise ArtifactError(f"{path}: its weights file {data} is {problem}; copy the whole ONNX folder")


def check_tensorrt_flavour(proto: onnx.ModelProto, path: Path) -> None:
    """Refuse a TensorRT-flavour graph written by another resq-export (the plugins would not match)."""
    check_external_data(proto, path)
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = attrs.get("plugin_version", b"none")
        version = version.decode() if isinstance(version, bytes) else str(version)
        known = node.op_type in load_spec()["ops"] and node.op_type != "ResQMixedLinear"
        if not known or version != str(op_version(node.op_type)):
            raise ArtifactError(f"{path}: {node.name} is {node.op_type} version {version}, which this resq-export's "
                                "plugins do not run; re-export the ONNX folder with this version")


# Files up to this size are hashed by the quick check; larger ones (the .data weights of big models,
# about 20 s per 10 GB) only by their size, unless the full check is asked for.
_QUICK_WHOLE = 512 * 1024**2


def verify_onnx_files(onnx_dir: Path, meta: dict, full: bool = False) -> None:
    """Check the folder's files against export.json: each present with its size, and its sha256
    (whole files up to 512 MiB; with full, every file). ArtifactError names the first that differs."""
    files = meta.get("files")
    if files is None:
        log.warning("%s was exported before export.json listed its files: its integrity is not checked "
                    "(re-export to get the check)", onnx_dir)
        return
    note_hashing(onnx_dir, [Path(onnx_dir) / n for n, w in files.items() if full or w["bytes"] <= _QUICK_WHOLE])
    for name, want in files.items():
        path = Path(onnx_dir) / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; copy the whole ONNX folder, or re-export it")
        if path.stat().st_size != want["bytes"]:
            raise ArtifactError(f"{path} has {path.stat().st_size} bytes where export.json records {want['bytes']}: "
                                "the folder is damaged; re-export it")
        if full or want["bytes"] <= _QUICK_WHOLE:
            if sha256_file(path) != want["sha256"]:
                raise ArtifactError(f"{path} differs from what export wrote (sha256): the folder is damaged; "
                                    "re-export it")


def check_onnx_folder(onnx_dir: Path, verify: str = "quick") -> dict:
    """Refuse folders that are not ours, corrupt, or from another op version, with a clear message.
    verify: the files against export.json, "quick" (sizes, and hashes of files up to 512 MiB),
    "full" (every hash) or "none"."""
    onnx_dir = Path(onnx_dir)
    meta_path = onnx_dir / META_FILE
    if not meta_path.is_file() or not (onnx_dir / ORT_FILE).is_file():
        raise ArtifactError(f"{onnx_dir} is not a resq-export ONNX folder (needs {ORT_FILE} and {META_FILE})")
    meta = check_schema(read_json(meta_path, ArtifactError), EXPORT_JSON, meta_path,
                        "the folder is damaged or not one this resq-export wrote: re-export it")
    if verify != "none":
        verify_onnx_files(onnx_dir, meta, full=verify == "full")
    try:
        proto = onnx.load(str(onnx_dir / ORT_FILE), load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"{onnx_dir / ORT_FILE} is not a readable ONNX file: {e}") from None
    check_external_data(proto, onnx_dir / ORT_FILE)
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            continue
        attrs = {a.name: a for a in node.attribute}
        found = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "none"
        try:
            expected = str(op_version(node.op_type))
        except KeyError:
            raise ArtifactError(f"{node.name}: unknown custom op {node.op_type!r}") from None
        if found != expected:
            source = meta.get("source_artifact", {}).get("path", "ARTIFACT")
            raise ArtifactError(
                f"{node.name}: {node.op_type} has op version {found}; this resq-export reads version {expected}; "
                f"re-export it: resq-export export --artifact {source} --out {onnx_dir} --overwrite"
            )
    return meta
