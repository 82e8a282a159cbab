"""The op spec (ops.json): the single source of truth for custom op names, versions, inputs,
outputs and attributes, read by the exporter, the checks and (later) the plugin header generator."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DOMAIN = "resq"


@cache
def load_spec() -> dict[str, Any]:
    return json.loads(resources.files("resq_export.export").joinpath("ops.json").read_text())


def op_spec(name: str) -> dict[str, Any]:
    return load_spec()["ops"][name]


def op_version(name: str) -> int:
    return int(op_spec(name)["version"])
