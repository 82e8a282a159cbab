"""The flagship chain, callable from Python: quantize -> export -> validate (ONNX Runtime against the
reference executor, and the float model's perplexity on the same windows) -> TensorRT engine. Run
again, every finished stage is kept and the chain continues at the first unfinished one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .artifact import VALIDATION_FILE, WEIGHTS_FILE, open_artifact, read_manifest
from .calib.data import evaluation_windows
from .config import QuantConfig
from .errors import ConfigError
from .fileio import atomic_write_text
from .outputs import BUILD_ENTRIES, BUILD_MARKER, TOOL, check_output, claim_output

EVAL_SEQLEN = 512
DECODE_STEPS = 16  # compare()'s default: tokens decoded one by one through the cache


@dataclass
class BuildResult:
    artifact: Path
    onnx_dir: Path
    quantize_stats: dict
    validation: dict | None = None  # validation.json (with ppl_fp), None when stopped before it
    plan: dict | None = None  # the engine's manifest
    missing_runtime: Exception | None = None  # TensorRTMissing: stopped after the export
    stage_times_s: list[tuple[str, float]] = field(default_factory=list)


def check_evaluation_sizes(seqlen: int, max_tokens: int) -> None:
    """The validation's window sizes, checked before hours of quantisation rather than after them."""
    if seqlen < 2:
        raise ConfigError(f"--eval-seqlen {seqlen} is too short: a window needs at least 2 tokens")
    if max_tokens < seqlen:
        raise ConfigError(f"--eval-max-tokens {max_tokens} is fewer than one validation window of --eval-seqlen "
                          f"{seqlen} tokens: raise --eval-max-tokens to at least {seqlen} or lower --eval-seqlen")
    from .validate.compare import DECODE_PROMPT

    read, needed = (max_tokens // seqlen) * seqlen, DECODE_PROMPT + DECODE_STEPS - 1
    if read < needed:
        raise ConfigError(f"--eval-max-tokens {max_tokens} with --eval-seqlen {seqlen} reads {read} tokens; the "
                          f"decode check needs {needed}: raise --eval-max-tokens")


def build(model_source: str, out_dir: Path, quant: QuantConfig, calib_data: Sequence[str] = (),
          engine_path: Path | None = None, runtime: str = "auto", target_sm: str | None = None,
          eval_max_tokens: int = 2048, progress: bool = True, overwrite: bool = False,
          announce: Callable[[str], None] = lambda _: None, eval_seqlen: int = EVAL_SEQLEN) -> BuildResult:
    """out_dir gets artifact/, onnx/, validation.json and build.json (engine_path the plan). A target that cannot
    work is refused before hours of quantisation; a missing TensorRT runtime or plugin library only
    after the ONNX is written (result.missing_runtime, no validation). announce: told each stage's name.
    out_dir is locked while the build lasts; build.json in it marks it as a build folder."""
    check_evaluation_sizes(eval_seqlen, eval_max_tokens)
    inputs = [model_source, *calib_data]
    with claim_output(out_dir, "build", inputs, overwrite) as out_dir:
        # the stages' folders are checked now, not after hours of quantisation
        check_output(out_dir / "artifact", "artifact", inputs, overwrite)
        check_output(out_dir / "onnx", "onnx", [], overwrite)
        marker = {"tool": TOOL, "tool_version": __version__, "command": "build", "files": list(BUILD_ENTRIES)}
        atomic_write_text(out_dir / BUILD_MARKER, json.dumps(marker, indent=2))
        return _build(model_source, out_dir, quant, calib_data, engine_path, runtime, target_sm, eval_max_tokens,
                      eval_seqlen, progress, overwrite, announce)


def _build(model_source: str, out_dir: Path, quant: QuantConfig, calib_data: Sequence[str], engine_path: Path | None,
           runtime: str, target_sm: str | None, eval_max_tokens: int, eval_seqlen: int, progress: bool,
           overwrite: bool, announce: Callable[[str], None]) -> BuildResult:
    from .engine.build import TensorRTMissing, build_engine, prepare_engine
    from .export.writer import export_onnx
    from .models.loader import open_model
    from .quantize import quantize
    from .validate.compare import compare
    from .validate.layerwise import float_layers, reference_layers
    from .validate.onnx_layers import OnnxLayers
    from .validate.ppl import perplexity

    setup, missing = None, None
    if engine_path is not None:
        try:
            setup = prepare_engine(runtime, target_sm)
        except TensorRTMissing as e:
            missing = e
            announce(f"note: no engine will be built: {e}. The ONNX folder is still written; the command then "
                     "stops with exit code 2")
    art, onnx_dir = out_dir / "artifact", out_dir / "onnx"
    result = BuildResult(art, onnx_dir, {}, missing_runtime=missing)
    n_stages = 5 if engine_path else 4

    def stage(name: str, fn):
        announce(f"[{len(result.stage_times_s) + 1}/{n_stages}] {name} ...")
        t = time.perf_counter()
        out = fn()
        result.stage_times_s.append((name, time.perf_counter() - t))
        return out

    result.quantize_stats = stage("quantize", lambda: quantize(model_source, quant, art, list(calib_data) or None,
                                                               progress=progress, overwrite=overwrite,
                                                               reuse_finished=True))
    stage("export", lambda: export_onnx(art, onnx_dir, overwrite=overwrite, reuse_finished=True))
    if missing is not None:  # stop as soon as the ONNX is written
        return result
    reader = open_artifact(art)
    windows = evaluation_windows(reader.tokenizer(), (), eval_seqlen, eval_max_tokens)

    def validate() -> dict:
        with OnnxLayers(onnx_dir) as ort_model:
            return compare(ort_model, reference_layers(reader), windows, DECODE_STEPS, progress=progress)

    validation = stage("validate", validate)
    fp = stage("FP baseline", lambda: perplexity(float_layers(open_model(model_source)), windows, progress=progress))
    weights_sha = read_manifest(art)["files"].get(WEIGHTS_FILE)
    validation.update(tool=TOOL, ppl_fp=fp["ppl"], seqlen=eval_seqlen, text="packaged eval text",
                      artifact={"path": str(art.resolve()), "weights_sha256": weights_sha})
    atomic_write_text(out_dir / VALIDATION_FILE, json.dumps(validation, indent=2))  # read by `resq-export report`
    result.validation = validation
    if engine_path is not None:
        result.plan = stage("engine", lambda: build_engine(onnx_dir, engine_path, setup))
    return result
