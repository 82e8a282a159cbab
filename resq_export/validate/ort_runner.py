"""ONNX Runtime execution of an exported folder, with the (quantised) KV cache carried between calls."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from ..export.writer import ORT_FILE, check_onnx_folder


def empty_past(inputs: dict[str, tuple[list, bool]], batch: int) -> dict[str, np.ndarray]:
    """The past of no tokens for graph inputs name -> (dims, uint8?): a dim is an int or a symbol,
    "batch" becoming `batch` and any other (the past sequence) 0."""
    return {name: np.zeros([d if isinstance(d, int) else batch if d == "batch" else 0 for d in dims],
                           np.uint8 if is_uint8 else np.float32)
            for name, (dims, is_uint8) in inputs.items()}


def return_freed_memory() -> None:
    """Hand the heap that ONNX Runtime's constant folding freed back to the OS. glibc keeps it
    otherwise, and a session holds several times the memory it needs (docs/architecture.md,
    "Measured design choices")."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def session_options(optimization: str = "basic", threads: int | None = None, profile_prefix: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # "basic" folds the weight unpacking into constants but leaves MatMulInteger chains alone
    # (extended fusions may change the float epilogue, see DESIGN.md)
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


class OrtDecoder:
    """The whole graph in one session (generate, benchmarks); validate runs it layer by layer
    (onnx_layers.py)."""

    def __init__(self, onnx_dir: Path, optimization: str = "basic", threads: int | None = None,
                 profile_prefix: str | None = None, verify: str = "quick"):
        import onnxruntime as ort

        self.meta = check_onnx_folder(onnx_dir, verify)
        so = session_options(optimization, threads, profile_prefix)
        self.session = ort.InferenceSession(str(Path(onnx_dir) / ORT_FILE), so, providers=["CPUExecutionProvider"])
        return_freed_memory()
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past.")]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return empty_past({i.name: (i.shape, "uint8" in i.type) for i in self.past_inputs}, batch)

    def forward(self, input_ids: np.ndarray, past: dict[str, np.ndarray] | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """input_ids [B, S] continuing `past` -> (logits [B, S, V], the new past)."""
        batch, seq = input_ids.shape
        past = self.empty_past(batch) if past is None else past
        start = next(iter(past.values())).shape[2] if past else 0
        feeds = {"input_ids": input_ids.astype(np.int64),
                 "position_ids": np.tile(np.arange(start, start + seq, dtype=np.int64), (batch, 1)), **past}
        outs = dict(zip(self.output_names, self.session.run(None, feeds)))
        present = {name.replace("present.", "past.", 1): v for name, v in outs.items() if name.startswith("present.")}
        return outs["logits"], present
