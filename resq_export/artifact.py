"""The quantised checkpoint artifact: a folder with model.safetensors, config.json, manifest.json and
the tokenizer. Written atomically; read back into a Decoder (the reference executor)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import SCHEMA_VERSION, QuantConfig
from .decoder import LINEAR_ROLES, Decoder, FloatLinear, Layer, TiedHead
from .errors import ArtifactError
from .fileio import atomic_directory, note_hashing, read_json, sha256_file
from .manifests import ARTIFACT_CONFIG, ARTIFACT_MANIFEST, check_schema
from .layout import KVQuantizer, LinearLayout, high_channels, kv_quantizer, role_layouts
from .models.config import ModelConfig
from .reference import LqerBranch, QuantLinear
from .tensorfile import Entry, SafetensorsFile, write_safetensors
from .transforms.rotate import o_input_permutation

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
VALIDATION_FILE = "validation.json"  # beside the artifact in a `build` folder: its validation and FP baseline
STATS_FILE = "stats.json"  # calibration spectra, per-layer errors and times (read by `resq-export report`)


def linear_tensors(prefix: str, lin: FloatLinear | QuantLinear) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(lin, FloatLinear):
        out[prefix + "weight"] = lin.weight.float()
    else:
        if lin.qweight_low is not None:
            out[prefix + "qweight_low"] = lin.qweight_low
        if lin.qweight_high is not None:
            out[prefix + "qweight_high"] = lin.qweight_high
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
        "layouts": {r: lay.to_dict() for r, lay in role_layouts(model_cfg, quant, warn=False).items()}
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
    details: dict, keep: Sequence[Path] = (),
) -> None:
    """Assemble the artifact from finished per-step tensor files (streamed into one model.safetensors,
    never all in memory), atomically: the folder appears complete under its name, or not at all.
    stats go to the manifest; details (spectra, per-layer errors and times) to stats.json. keep:
    side files of the artifact being replaced (evaluations, reports) copied into the new one."""
    entries = [e for f in tensor_files for e in _file_entries(f)]
    with atomic_directory(Path(out_dir)) as tmp:
        kept = {Path(path).name for path in keep}
        for path in keep:  # not in the manifest: side files, as they were
            shutil.copy2(path, tmp / Path(path).name)
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
            "files": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*"))
                      if p.is_file() and p.relative_to(tmp).as_posix() not in kept},
            "stats": stats,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


_DAMAGED = "the artifact is damaged or not one this resq-export wrote: quantize the model again"


def read_manifest(art_dir: Path) -> dict:
    art_dir = Path(art_dir)
    path = art_dir / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{art_dir} is not a resq-export artifact (no manifest.json)")
    manifest = check_schema(read_json(path, ArtifactError), ARTIFACT_MANIFEST, path, _DAMAGED)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{art_dir} has schema version {manifest.get('schema_version')}, this tool reads {SCHEMA_VERSION}"
        )
    return manifest


def load_artifact(art_dir: Path, verify: bool = True) -> tuple[Decoder, QuantConfig, Any]:
    """Artifact folder -> (reference Decoder with every layer, settings, tokenizer). verify: check every
    file's sha256. Validation reads it layer by layer instead (open_artifact)."""
    reader = open_artifact(art_dir, verify)
    return reader.decoder(), reader.quant, reader.tokenizer()


def open_artifact(art_dir: Path, verify: bool = True) -> "ArtifactReader":
    art_dir = Path(art_dir)
    manifest = read_manifest(art_dir)
    files = manifest.get("files", {})
    if verify:
        note_hashing(art_dir, [art_dir / n for n in files])
    for name, digest in files.items():
        f = art_dir / name
        if not f.is_file():
            raise ArtifactError(f"{f} is missing from the artifact")
        if verify and sha256_file(f) != digest:
            raise ArtifactError(f"{f} is corrupt (its sha256 differs from the manifest)")
    return ArtifactReader(art_dir)


class ArtifactReader:
    """An artifact's settings, and its tensors read when asked: one layer, or rows of the embedding
    and head, at a time (the packed file is never in memory whole)."""

    def __init__(self, art_dir: Path):
        self.dir = Path(art_dir)
        config = check_schema(read_json(self.dir / "config.json", ArtifactError), ARTIFACT_CONFIG,
                              self.dir / "config.json", _DAMAGED)
        self.config = ModelConfig.from_dict(config["model"])
        self.quant = QuantConfig.from_dict(config["quant"])
        self.layouts = {r: LinearLayout.from_dict(d) for r, d in (config["layouts"] or {}).items()}
        try:  # positional reads, not a memory map: the mapped pages of an 8B model would count as RSS
            self._file = SafetensorsFile(self.dir / WEIGHTS_FILE)
        except (ValueError, KeyError, OSError) as e:
            raise ArtifactError(f"cannot read {self.dir / WEIGHTS_FILE}: {e}") from None
        self._names = set(self._file.names())

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.dir / "tokenizer"))

    def has(self, name: str) -> bool:
        return name in self._names

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise ArtifactError(f"{self.dir / WEIGHTS_FILE} lacks the tensor {name}")
        return self._file.get(name)

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the embedding or the head, as float32."""
        if name not in self._names:
            raise ArtifactError(f"{self.dir / WEIGHTS_FILE} lacks the tensor {name}")
        return self._file.rows(name, start, stop).to(torch.float32)

    @property
    def kv_quantizer(self) -> KVQuantizer | None:
        return kv_quantizer(self.config, self.quant) if self.quant.quantizes_weights else None

    def layer(self, i: int) -> Layer:
        cfg = self.config
        lin = {r: _linear_from_tensors(f"layers.{i}.{r}.", self, self.layouts.get(r)) for r in LINEAR_ROLES}
        r_head = high_channels(cfg.head_dim, self.quant)
        key_rotation = f"layers.{i}.key_rotation"
        return Layer(
            qkv=lin["attn_qkv"], o=lin["attn_o"], gate_up=lin["mlp_gate_up"], down=lin["mlp_down"],
            key_rotation=self.tensor(key_rotation) if self.has(key_rotation) else None,
            down_rotation=self.tensor("down_rotation.left") if self.has("down_rotation.left") else None,
            o_input_perm=o_input_permutation(cfg.num_heads, cfg.head_dim, r_head) if r_head else None,
            q_norm=self.tensor(f"layers.{i}.q_norm") if cfg.qk_norm else None,
            k_norm=self.tensor(f"layers.{i}.k_norm") if cfg.qk_norm else None,
        )

    def decoder(self, lazy: bool = False) -> Decoder:
        """The reference executor (float64 islands) with every layer in memory, or (lazy) with its
        layers read each time they are visited and freed after: export walks them once per flavour."""
        cfg = self.config
        layers = LazyLayers(self) if lazy else [self.layer(i) for i in range(cfg.num_layers)]
        head = TiedHead(self.tensor("lm_head.factor")) if self.has("lm_head.factor") else \
            FloatLinear(self.tensor("lm_head.weight").float())
        return Decoder(cfg, self.tensor("embed"), layers, head, None, self.kv_quantizer, float_islands=True)


class LazyLayers(Sequence):
    """An artifact's layers as a sequence that reads each one when it is visited and keeps none."""

    def __init__(self, reader: ArtifactReader):
        self._reader = reader

    def __len__(self) -> int:
        return self._reader.config.num_layers

    def __getitem__(self, i: int) -> Layer:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._reader.layer(i % len(self))


def _linear_from_tensors(prefix: str, t: ArtifactReader, layout: LinearLayout | None) -> FloatLinear | QuantLinear:
    bias = t.tensor(prefix + "bias") if t.has(prefix + "bias") else None
    if layout is None:
        return FloatLinear(t.tensor(prefix + "weight").float(), bias)
    lqer = None
    if t.has(prefix + "lqer_a"):
        lqer = LqerBranch(t.tensor(prefix + "lqer_a").to(torch.int32), t.tensor(prefix + "lqer_a_scale"),
                          t.tensor(prefix + "lqer_b").to(torch.int32), t.tensor(prefix + "lqer_b_scale"))
    low = t.tensor(prefix + "qweight_low") if layout.low_channels else None
    high = t.tensor(prefix + "qweight_high") if layout.low_channels < layout.in_features else None
    return QuantLinear(layout, low, high, t.tensor(prefix + "wscale"), bias, lqer)
