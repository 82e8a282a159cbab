"""Checks on a model source's files made before they are read: a GGUF file's header, and whether the
cache that built-in models are dequantised into can be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ModelLoadError

GGUF_MAGIC, GGUF_HEADER_BYTES = b"GGUF", 24  # magic, uint32 version, uint64 tensor and key-value counts


def check_gguf_header(path: Path) -> None:
    """A cut-off or foreign file is named as such before transformers' parser fails on it obscurely."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(GGUF_HEADER_BYTES)
    if len(head) >= 4 and head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a valid GGUF file (it does not start with the bytes 'GGUF')")
    if size < GGUF_HEADER_BYTES:
        raise ModelLoadError(f"{path} is not a valid GGUF file (truncated: {size} bytes, shorter than its "
                             f"{GGUF_HEADER_BYTES}-byte header); copy or download it again")


CACHE_VARIABLE = "RESQ_EXPORT_CACHE"


def cache_location() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "resq-export")


def check_cache_writable(root: Path) -> None:
    """Create the cache folder and write a probe file in it: what the dequantisation will do, tried
    before it (os.access alone does not know a read-only mount, and says yes to root everywhere)."""
    where = f"{CACHE_VARIABLE}={root}" if os.environ.get(CACHE_VARIABLE) else f"the cache {root}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise ModelLoadError(f"{where} is not writable ({e.strerror}): built-in models are dequantised into it "
                             f"once; set {CACHE_VARIABLE} to a folder you may write to") from None
