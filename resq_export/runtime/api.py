"""`load(path)`: an ONNX folder (ONNX Runtime) or a .plan (TensorRT) as a Generator."""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError, ConfigError
from ..export.folder import check_onnx_folder
from .loop import Generator
from .ort_backend import OrtBackend
from .plan import check_plugins, read_plan
from .text import load_tokenizer


def load(path: str | Path, *, plugins: str | Path | None = None, verify: str = "quick",
         threads: int | None = None) -> Generator:
    """A Generator for an exported ONNX folder (run by ONNX Runtime on the CPU) or a TensorRT plan
    (out.plan with its out.plan.json; its tokenizer is the ONNX folder's the plan was built from).

    The files are checked here (the ONNX folder's, or the plan's manifest and plugin library); the
    runtime opens at the first prompt (or `.open()`), where a plan is checked against this machine's
    GPU and TensorRT and deserialised. `plugins`: the plugin library for a plan [the one it was
    built with]; `threads`: ONNX Runtime's intra-op threads."""
    path = Path(path)
    if path.is_dir():
        if not (path / "export.json").is_file():
            raise ConfigError(f"{path} is not an ONNX folder (no export.json): give an ONNX folder or a .plan")
        check_onnx_folder(path, verify)  # a damaged folder is refused here, not at the first prompt
        tokenizer = load_tokenizer(path)
        return Generator(tokenizer, lambda: OrtBackend.open(path, verify="none", threads=threads))
    info = read_plan(path)
    plugin_path = check_plugins(info, Path(plugins) if plugins else None)
    if not (info.onnx_dir / "tokenizer").is_dir():
        raise ArtifactError(f"the plan's tokenizer is missing: {info.onnx_dir / 'tokenizer'} (the ONNX folder "
                            f"{path.name} was built from, out.plan.json \"onnx\"): copy that folder back to where the "
                            "manifest says, or rebuild the plan from an ONNX folder on this machine")
    tokenizer = load_tokenizer(info.onnx_dir)

    def open_backend():
        from .trt_open import open_plan

        return open_plan(info, plugin_path)

    limits = info.limits
    return Generator(tokenizer, open_backend, capacity=int(limits["max_context"]),
                     capacity_what=f"the plan's --max-context ({path.name})", max_batch=int(limits["max_batch"]),
                     batch_what=f"the plan's --max-batch ({path.name})")
