"""The quantised checkpoint artifact: a folder with model.safetensors, config.json, manifest.json and
the tokenizer. Written atomically; read back into a Decoder (the reference executor)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .algo.quant import pack_int4, unpack_int4
from .config import SCHEMA_VERSION, QuantConfig
from .decoder import LINEAR_ROLES, Decoder, FloatLinear, KVQuantizer, Layer, TiedHead
from .errors import ArtifactError
from .fileio import atomic_directory, read_json, sha256_file
from .layout import LinearLayout, high_channels, kv_quantizer, role_layouts
from .models.config import ModelConfig
from .reference import LqerBranch, QuantLinear
from .tensorfile import Entry, SafetensorsFile, write_safetensors
from .transforms.rotate import o_input_permutation

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "stats.json"  # calibration spectra, per-layer errors and times (read by `resq-export report`)


def linear_tensors(prefix: str, lin: FloatLinear | QuantLinear) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(lin, FloatLinear):
        out[prefix + "weight"] = lin.weight.float()
    else:
        low = lin.layout.low_channels
        if low:
            out[prefix + "qweight_low"] = pack_int4(lin.qweight[:, :low])
        if low < lin.in_features:
            out[prefix + "qweight_high"] = lin.qweight[:, low:].to(torch.int8)
        out[prefix + "wscale"] = lin.wscale.float()
        if lin.lqer is not None:
            out[prefix + "lqer_a"] = lin.lqer.a_q.to(torch.int8)
            out[prefix + "lqer_a_scale"] = lin.lqer.a_scale.float()
            out[prefix + "lqer_b"] = lin.lqer.b_q.to(torch.int8)
            out[prefix + "lqer_b_scale"] = lin.lqer.b_scale.float()
    if lin.bias is not None:
        out[prefix + "bias"] = lin.bias.float()
    return out


def artifact_config(model_cfg: ModelConfig, quant: QuantConfig) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model_cfg.to_dict(),
        "quant": quant.to_dict(),
        "layouts": {r: lay.to_dict() for r, lay in role_layouts(model_cfg, quant).items()}
        if quant.quantizes_weights else None,
    }


def _file_entries(path: Path, block_bytes: int = 1 << 26) -> list[Entry]:
    """Every tensor of a safetensors file as a streamed entry (big ones read by blocks of rows)."""
    f = SafetensorsFile(path)

    def reader(name: str):
        shape = f.shape(name)

        def blocks():
            if len(shape) < 2:
                yield f.get(name)
                return
            step = max(1, block_bytes // max(1, f.rows(name, 0, 1).nbytes))
            for a in range(0, shape[0], step):
                yield f.rows(name, a, a + step)
        return blocks

    return [Entry(name, f.dtype(name), f.shape(name), reader(name)) for name in f.names()]


def write_artifact(
    out_dir: Path, tensor_files: list[Path], config: dict, tokenizer: Any, source: dict, stats: dict,
    details: dict,
) -> None:
    """Assemble the artifact from finished per-step tensor files (streamed into one model.safetensors,
    never all in memory), atomically: the folder appears complete under its name, or not at all.
    stats go to the manifest; details (spectra, per-layer errors and times) to stats.json."""
    entries = [e for f in tensor_files for e in _file_entries(f)]
    with atomic_directory(Path(out_dir)) as tmp:
        write_safetensors(tmp / WEIGHTS_FILE, entries,
                          metadata={"format": "resq-export", "schema_version": str(SCHEMA_VERSION)})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / STATS_FILE).write_text(json.dumps(details, indent=1))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "tool": "resq-export",
            "tool_version": __version__,
            "source_model": source,
            "files": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
            "stats": stats,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def read_manifest(art_dir: Path) -> dict:
    art_dir = Path(art_dir)
    path = art_dir / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{art_dir} is not a resq-export artifact (no manifest.json)")
    manifest = read_json(path, ArtifactError)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{art_dir} has schema version {manifest.get('schema_version')}, this tool reads {SCHEMA_VERSION}"
        )
    return manifest


def load_artifact(art_dir: Path, verify: bool = True) -> tuple[Decoder, QuantConfig, Any]:
    """Artifact folder -> (reference Decoder, settings, tokenizer). verify: check every file's sha256."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    art_dir = Path(art_dir)
    manifest = read_manifest(art_dir)
    for name, digest in manifest.get("files", {}).items():
        f = art_dir / name
        if not f.is_file():
            raise ArtifactError(f"{f} is missing from the artifact")
        if verify and sha256_file(f) != digest:
            raise ArtifactError(f"{f} is corrupt (its sha256 differs from the manifest)")
    config = json.loads((art_dir / "config.json").read_text())
    model_cfg = ModelConfig.from_dict(config["model"])
    quant = QuantConfig.from_dict(config["quant"])
    layouts = {r: LinearLayout.from_dict(d) for r, d in (config["layouts"] or {}).items()}
    try:
        with safe_open(str(art_dir / WEIGHTS_FILE), framework="pt") as f:
            # each tensor read when its linear is built: the packed file is never in memory whole
            # beside the decoder (at 8B that was 5.6 GB on top of 11)
            model = _decoder_from_tensors(model_cfg, quant, layouts, _TensorReader(f))
    except KeyError as e:
        raise ArtifactError(f"{art_dir / WEIGHTS_FILE} lacks the tensor {e.args[0]}") from None
    except Exception as e:
        raise ArtifactError(f"cannot read {art_dir / WEIGHTS_FILE}: {e}") from None
    tokenizer = AutoTokenizer.from_pretrained(str(art_dir / "tokenizer"))
    return model, quant, tokenizer


class _TensorReader(Mapping):
    """A safetensors file as a read-on-access mapping (each key is read once by the loader)."""

    def __init__(self, handle):
        self._handle, self._keys = handle, set(handle.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._handle.get_tensor(key)

    def __contains__(self, key) -> bool:  # Mapping's would read the tensor
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _linear_from_tensors(prefix: str, t: dict, layout: LinearLayout | None) -> FloatLinear | QuantLinear:
    bias = t.get(prefix + "bias")
    if layout is None:
        return FloatLinear(t[prefix + "weight"].float(), bias)
    parts = []  # int8 codes, as the quantiser makes them: a quarter of int32's memory at 8B
    if layout.low_channels:
        parts.append(unpack_int4(t[prefix + "qweight_low"], signed=True).to(torch.int8))
    if layout.low_channels < layout.in_features:
        parts.append(t[prefix + "qweight_high"].to(torch.int8))
    lqer = None
    if prefix + "lqer_a" in t:
        lqer = LqerBranch(t[prefix + "lqer_a"].to(torch.int32), t[prefix + "lqer_a_scale"],
                          t[prefix + "lqer_b"].to(torch.int32), t[prefix + "lqer_b_scale"])
    return QuantLinear(layout, torch.cat(parts, 1), t[prefix + "wscale"], bias, lqer)


def _decoder_from_tensors(cfg: ModelConfig, quant: QuantConfig, layouts: dict, t: dict) -> Decoder:
    down_rot = None
    if "down_rotation.left" in t:
        down_rot = t["down_rotation.left"]
    r_head = high_channels(cfg.head_dim, quant)
    perm = o_input_permutation(cfg.num_heads, cfg.head_dim, r_head) if r_head else None
    layers = []
    for i in range(cfg.num_layers):
        lin = {r: _linear_from_tensors(f"layers.{i}.{r}.", t, layouts.get(r)) for r in LINEAR_ROLES}
        layers.append(Layer(
            qkv=lin["attn_qkv"], o=lin["attn_o"], gate_up=lin["mlp_gate_up"], down=lin["mlp_down"],
            key_rotation=t.get(f"layers.{i}.key_rotation"),
            down_rotation=down_rot,
            o_input_perm=perm,
        ))
    kvq: KVQuantizer | None = kv_quantizer(cfg, quant) if quant.quantizes_weights else None
    head = TiedHead(t["lm_head.factor"]) if "lm_head.factor" in t else FloatLinear(t["lm_head.weight"].float())
    return Decoder(cfg, t["embed"], layers, head, None, kvq, float_islands=True)  # the reference executor
