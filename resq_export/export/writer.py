"""Write and read the ONNX folder: model.onnx (ORT flavour, with function bodies), model.trt.onnx
(the model for the TensorRT parser and the plugins: float32, no bodies, prepared weights, compact
inputs; tensorrt_flavour says what differs) and export.json."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model

from .. import __version__
from ..artifact import open_artifact, read_manifest
from ..config import QuantConfig
from ..decoder import Decoder
from ..errors import ArtifactError
from ..fileio import atomic_directory, sha256_file
from ..outputs import claim_output
from .builder import ExternalData
from .folder import META_FILE, ORT_FILE, TRT_FILE, check_onnx_folder
from .graph import GraphExporter, build_onnx
from .spec import DOMAIN, load_spec, op_version

log = logging.getLogger(__name__)

_EXTERNAL_THRESHOLD = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with room for the graph


def tensorrt_flavour(model: Decoder, quant: QuantConfig, external: ExternalData | None = None) -> onnx.ModelProto:
    """The graph for TensorRT's ONNX parser and the resq plugins (graph.GraphExporter, tensorrt=True):

    - float32 (no float64 islands: TensorRT has no float64 kernels), but for the head below;
    - custom nodes without function bodies;
    - every ResQMixedLinear is ResQMixedLinearPrepared: weights in the GEMM's layout (padded groups,
      code sums), so the plugin runs on the engine's constants as they are;
    - custom nodes list only the inputs they have: absent optional inputs are left out rather than
      written as "" (which the parser turns into null tensors of unspecified type), and a linear
      without bias gets a zero bias, so the plugins tell their inputs apart by attributes alone
      (low_groups, high_groups, lqer_rank) and the count (key_rotation);
    - uint8 graph I/O (KV codes and zero points) is int8 with the same bytes;
    - the LM head is a Gemm in fp16 on the fp16 table as stored (no Cast of a weight, which TensorRT
      would fold into FP32 copies), its logits widened to float32, and a tied head's factor written
      exactly symmetric (TensorRT then holds it once; docs/ops.md, the LM head).
    """
    return GraphExporter(model, quant, float_islands=False, tensorrt=True, external=external).build()


def _write_flavour(path: Path, make: Callable[[ExternalData], onnx.ModelProto], external_over: int):
    """Build one flavour with its weights streamed to <file>.data; a model within external_over bytes
    then takes them back into the file. Returns (graph, whether the weights stayed external)."""
    data = path.with_name(path.name + ".data")
    with ExternalData(data) as sink:
        m = make(sink)
    external = sink.size + m.ByteSize() > external_over
    if not external:
        load_external_data_for_model(m, str(path.parent))
        data.unlink()
    onnx.save_model(m, str(path))
    return m, external


def _custom_ops(m: onnx.ModelProto) -> dict[str, int]:
    return {op: op_version(op) for op in sorted({n.op_type for n in m.graph.node if n.domain == DOMAIN})}


def _finished_export(artifact: Path, out_dir: Path) -> dict | None:
    """export.json of an intact export of this artifact's weights by this tool version, else None."""
    try:
        meta = check_onnx_folder(out_dir)
    except ArtifactError:
        return None
    weights = read_manifest(artifact)["files"].get("model.safetensors")
    same = (meta.get("tool_version") == __version__ and meta.get("spec_version") == load_spec()["spec_version"]
            and meta.get("source_artifact", {}).get("manifest_sha256_of_weights") == weights)
    return meta if same else None


def export_onnx(artifact: Path, out_dir: Path, external_over: int = _EXTERNAL_THRESHOLD, overwrite: bool = False,
                reuse_finished: bool = False) -> dict:
    """Both flavours, one after the other, their weights written as they are made: in memory are the
    model and one graph without its weights. A flavour over external_over bytes (by default
    protobuf's limit) keeps its weights in <file>.data. out_dir must be new, empty or an earlier
    ONNX folder (overwrite: any other output of ours), apart from the artifact, and is locked while
    the export lasts. reuse_finished: an intact export of this artifact by this version is kept as
    it is (what `build` does when run again)."""
    with claim_output(out_dir, "onnx", [artifact], overwrite) as out_dir:
        return _export(artifact, out_dir, external_over, reuse_finished)


def _export(artifact: Path, out_dir: Path, external_over: int, reuse_finished: bool) -> dict:
    if reuse_finished:
        kept = _finished_export(artifact, out_dir)
        if kept is not None:
            log.warning("%s is already exported from this artifact: kept", out_dir)
            return kept
    reader = open_artifact(artifact)
    model, quant, tokenizer = reader.decoder(lazy=True), reader.quant, reader.tokenizer()
    with atomic_directory(Path(out_dir)) as tmp:
        proto, external = _write_flavour(tmp / ORT_FILE, lambda sink: build_onnx(model, quant, sink), external_over)
        onnx.checker.check_model(str(tmp / ORT_FILE), full_check=not external)  # by path: external data too
        meta = {
            "tool": "resq-export", "tool_version": __version__, "method": quant.method,
            "spec_version": load_spec()["spec_version"], "ops": _custom_ops(proto),
            "source_artifact": {"path": str(Path(artifact).resolve()), "manifest_sha256_of_weights":
                                read_manifest(artifact)["files"].get("model.safetensors")},
            "inputs": [i.name for i in proto.graph.input], "outputs": [o.name for o in proto.graph.output],
            "external_data": external,
        }
        del proto
        trt, meta["tensorrt_external_data"] = _write_flavour(
            tmp / TRT_FILE, lambda sink: tensorrt_flavour(model, quant, sink), external_over)
        meta["tensorrt_ops"] = _custom_ops(trt)
        del trt
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        meta["files"] = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def source_artifact(meta: dict, given: Path | None = None) -> Path:
    """The artifact an ONNX folder was exported from: `given`, else the path export.json records;
    refused when its weights are not the ones the folder was exported from (re-quantised since, or
    another artifact)."""
    recorded = meta.get("source_artifact", {})
    path = Path(given or recorded.get("path", ""))
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"the artifact {path} the ONNX folder was exported from is not there: pass --artifact")
    want = recorded.get("manifest_sha256_of_weights")
    have = read_manifest(path)["files"].get("model.safetensors")
    if want and have != want:
        raise ArtifactError(f"the ONNX folder was exported from another artifact than {path} (its weights' sha256 "
                            f"{want[:12]}..., this artifact's {str(have)[:12]}...): pass the right --artifact, or "
                            f"re-export from this one")
    return path
