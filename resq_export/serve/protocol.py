"""What a request to the served model carries and what comes back: the tensors named in
config.pbtxt (repo.py) and read by the Python-backend model (triton_model.py), in one table, and
the check that turns a request's tensors into generation settings or one clear message."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Field:
    name: str
    triton_type: str  # config.pbtxt's data_type
    default: object  # None: required


INPUTS = (
    Field("prompt", "TYPE_STRING", None),
    Field("max_new_tokens", "TYPE_INT32", 64),
    Field("temperature", "TYPE_FP32", 0.0),
    Field("top_p", "TYPE_FP32", 1.0),
    Field("seed", "TYPE_INT64", 0),
    Field("chat", "TYPE_BOOL", False),
)
OUTPUT = Field("text", "TYPE_STRING", None)  # one piece of text per streamed response


def _scalar(name: str, value):
    """The one element of a request tensor (shape [1], or [1, 1] from a client that adds a batch dim)."""
    flat = np.asarray(value).ravel()
    if flat.size != 1:
        raise ConfigError(f"input {name!r}: one value is expected, got {flat.size}")
    item = flat[0]  # a numpy scalar, or (BYTES tensors are object arrays) a Python object
    return item.item() if isinstance(item, np.generic) else item


def _prompt(value) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"input 'prompt' is not valid UTF-8 (byte 0x{value[e.start]:02x} at {e.start})") from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("input 'prompt' is empty")
    return value


def request_settings(tensors: dict[str, object]) -> dict:
    """Generation settings from a request's tensors (name -> array or None when not sent):
    `prompt` and the keyword arguments of the generator's stream()."""
    unknown = sorted(set(tensors) - {f.name for f in INPUTS})
    if unknown:
        raise ConfigError(f"unknown input {unknown[0]!r}: the model takes {', '.join(f.name for f in INPUTS)}")
    values = {}
    for field in INPUTS:
        raw = tensors.get(field.name)
        if raw is None:
            if field.default is None:
                raise ConfigError(f"input {field.name!r} is required")
            values[field.name] = field.default
        else:
            values[field.name] = _scalar(field.name, raw)
    settings = {"prompt": _prompt(values["prompt"]), "max_new_tokens": int(values["max_new_tokens"]),
                "temperature": float(values["temperature"]), "top_p": float(values["top_p"]),
                "seed": int(values["seed"]), "chat": bool(values["chat"])}
    if settings["max_new_tokens"] < 1:
        raise ConfigError(f"input 'max_new_tokens' is {settings['max_new_tokens']}: 1 or more is needed")
    if not (math.isfinite(settings["temperature"]) and settings["temperature"] >= 0):
        raise ConfigError(f"input 'temperature' is {settings['temperature']}: a finite value >= 0 is needed "
                          "(0: greedy)")
    if not (0 < settings["top_p"] <= 1):
        raise ConfigError(f"input 'top_p' is {settings['top_p']}: a value in (0, 1] is needed")
    return settings
