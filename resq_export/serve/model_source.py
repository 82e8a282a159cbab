"""The one place the served model meets generation: open_generator(path) gives an object with
`.stream(prompt, *, max_new_tokens, temperature, top_p, seed, chat) -> Iterator[str]` and
`.generate(...) -> str`. Today it wraps the ONNX Runtime loop of generate.py; when
resq_export.runtime lands (issue 31, items 1-2: one decode loop for ONNX Runtime and TensorRT), this
becomes `runtime.load(path)` and nothing else in serve/ changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError


class OnnxGenerator:
    """An exported ONNX folder run by ONNX Runtime, its session and tokenizer loaded once."""

    def __init__(self, onnx_dir: Path):
        from ..generate import load_tokenizer
        from ..validate.ort_runner import OrtDecoder

        self.session = OrtDecoder(onnx_dir)
        self.tokenizer = load_tokenizer(onnx_dir)

    def stream(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, chat: bool = False) -> Iterator[str]:
        from ..generate import stream

        if top_p != 1.0:  # generate.py samples from the whole distribution; nucleus sampling comes with runtime/
            raise ConfigError(f"top_p {top_p}: this version samples from the whole distribution only (top_p 1)")
        return stream(self.session, self.tokenizer, prompt, max_new_tokens, temperature, seed, chat)

    def generate(self, prompt: str, **settings) -> str:
        return "".join(self.stream(prompt, **settings))


def open_generator(path: Path, plugin_library: Path | None = None) -> OnnxGenerator:
    """The generator of an ONNX folder (or, with resq_export.runtime, of a TensorRT plan)."""
    path = Path(path)
    if path.is_dir():
        return OnnxGenerator(path)
    raise ConfigError(f"{path}: running a TensorRT plan needs resq_export.runtime (issue 31), which this version "
                      "does not have yet; serve the ONNX folder instead (serve-repo --onnx)")
