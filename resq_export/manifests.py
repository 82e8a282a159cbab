"""The shapes of the JSON files resq-export writes and later reads back (export.json, an artifact's
manifest.json and config.json, validation.json, OUT.partial/state.json, out.plan.json,
evaluations.json), and the one checker every reader passes them through. A file that is damaged,
hand-edited or another tool's is then refused with one line naming the file and the field, instead
of an AttributeError deep inside whichever reader touches it first.

A schema is a Python type (or a tuple of them; None for JSON null), a dict of field -> schema (an
object; fields wrapped in Optional may be absent; fields not named are allowed, so a newer release
may add some), ListOf(schema) or DictOf(schema) (an object whose values all follow the schema), or
ANY."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError, ResQError


@dataclass(frozen=True)
class Optional:
    schema: Any


@dataclass(frozen=True)
class ListOf:
    schema: Any


@dataclass(frozen=True)
class DictOf:
    schema: Any


ANY = object()
NUMBER = (int, float)

_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
          bool: "true or false", type(None): "null"}


def _kind(value: Any) -> str:
    shown = repr(value) if not isinstance(value, (dict, list)) else ""
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return _NAMES.get(type(value), type(value).__name__) + (f" ({shown})" if shown else "")


def _expected(schema: Any) -> str:
    if isinstance(schema, dict) or isinstance(schema, DictOf):
        return "an object"
    if isinstance(schema, ListOf):
        return "a list"
    types = schema if isinstance(schema, tuple) else (schema,)
    if int in types and float in types:  # a JSON number, whole or not
        types = tuple(t for t in types if t is not int)
    names = [_NAMES.get(type(None) if t is None else t, getattr(t, "__name__", str(t))) for t in types]
    return " or ".join(dict.fromkeys(names))


def _matches(value: Any, types: tuple) -> bool:
    for t in types:
        t = type(None) if t is None else t
        if t is int and isinstance(value, bool):  # JSON true is not a count
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if isinstance(value, t):
            return True
    return False


def _problem(value: Any, schema: Any, where: str) -> str | None:
    """The first field of `value` that does not follow `schema`, as a sentence; None when it does."""
    if schema is ANY:
        return None
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{_field(where)} should be an object, not {_kind(value)}"
        for name, sub in schema.items():
            optional = isinstance(sub, Optional)
            if name not in value:
                if optional:
                    continue
                return f"the field {_join(where, name)!r} is missing"
            problem = _problem(value[name], sub.schema if optional else sub, _join(where, name))
            if problem:
                return problem
        return None
    if isinstance(schema, (ListOf, DictOf)):
        container = list if isinstance(schema, ListOf) else dict
        if not isinstance(value, container):
            return f"{_field(where)} should be {_expected(schema)}, not {_kind(value)}"
        items = enumerate(value) if container is list else value.items()
        for key, item in items:
            problem = _problem(item, schema.schema, f"{where}[{key!r}]" if container is dict else f"{where}[{key}]")
            if problem:
                return problem
        return None
    types = schema if isinstance(schema, tuple) else (schema,)
    if not _matches(value, types):
        return f"{_field(where)} should be {_expected(schema)}, not {_kind(value)}"
    return None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _field(where: str) -> str:
    return f"the field {where!r}" if where else "the file"


def check_schema(data: Any, schema: Any, path: Path | str, remedy: str,
                 error: type[ResQError] = ArtifactError) -> Any:
    """`data` (read from `path`) when it follows `schema`; else `error` naming the file, the field and
    what to do (`remedy`)."""
    problem = _problem(data, schema, "")
    if problem:
        raise error(f"{path}: {problem}; {remedy}")
    return data


# --- the files -------------------------------------------------------------------------------------

EXPORT_JSON = {  # an ONNX folder's export.json (export/writer.py)
    "tool": str,
    "tool_version": Optional(str),
    "method": Optional(str),
    "spec_version": Optional(int),
    "ops": Optional(DictOf(int)),
    "tensorrt_ops": Optional(DictOf(int)),
    "source_artifact": Optional({"path": str, "manifest_sha256_of_weights": Optional((str, None))}),
    "inputs": Optional(ListOf(str)),
    "outputs": Optional(ListOf(str)),
    "files": Optional(DictOf({"bytes": int, "sha256": str})),
}

ARTIFACT_MANIFEST = {  # an artifact's manifest.json (artifact.py)
    "schema_version": int,
    "tool": Optional(str),
    "tool_version": Optional(str),
    "source_model": Optional(dict),
    "files": DictOf(str),
    "stats": Optional(dict),
}

_INT = int
MODEL_CONFIG = {  # models/config.py ModelConfig.to_dict()
    "architecture": str, "vocab_size": _INT, "hidden_size": _INT, "num_layers": _INT, "num_heads": _INT,
    "num_kv_heads": _INT, "head_dim": _INT, "intermediate_size": _INT, "rms_norm_eps": NUMBER,
    "rope_theta": NUMBER, "rope_scaling": Optional((dict, None)), "tie_word_embeddings": Optional(bool),
    "rotary_dim": Optional(_INT), "qk_norm": Optional(bool),
}

ARTIFACT_CONFIG = {  # an artifact's config.json (artifact.artifact_config)
    "schema_version": int,
    "model": MODEL_CONFIG,
    "quant": dict,
    "layouts": (dict, None),
}

VALIDATION_JSON = {  # validation.json of a build folder (build.py)
    "passed": bool,
    "ppl_ort": NUMBER,
    "ppl_reference": NUMBER,
    "ppl_fp": Optional(NUMBER),
    "tokens": Optional(int),
    "artifact": Optional({"path": Optional(str), "weights_sha256": Optional((str, None))}),
}

STATE_JSON = {  # OUT.partial/state.json of an interrupted quantize (checkpoint.py)
    "fingerprint": str,
    "fingerprint_data": Optional(dict),
    "layers": Optional(dict),
}

PLAN_MANIFEST = {  # out.plan.json beside a TensorRT engine (engine/build.py)
    "tool": str,
    "onnx": Optional(str),
    "runtime": Optional({"name": str, "version": str}),
    "target_sm": Optional(int),
    "profiles": Optional(dict),
    "plan_bytes": Optional(int),
}

EVALUATIONS_JSON = ListOf({  # evaluations.json beside an artifact (evaluations.py)
    "ppl": NUMBER,
    "seqlen": Optional(int),
    "windows": Optional(int),
    "tokens": Optional(int),
    "label": Optional(str),
    "text": Optional(str),
})
