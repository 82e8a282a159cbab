"""The resumable quantise stage: model -> calibrate -> bases -> fold/rotate -> GPTQ/RTN (+LQER) ->
artifact, two streaming passes over the layers with every finished step kept on disk."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifact import artifact_config, write_artifact
from ..calib.stats import BasisStatistics
from ..checkpoint import WorkDir, fingerprint_hash
from ..config import SCHEMA_VERSION, QuantConfig
from ..decoder import Decoder, Layer
from ..errors import ConfigError, ResQError
from ..fileio import note_hashing
from ..layout import role_layouts
from ..models.loader import ModelSource, context_length, open_model
from ..outputs import artifact_side_files, claim_output, output_kind
from ..tensorfile import Entry, write_safetensors
from ..transforms import rotate
from .bases import Bases, compute_bases, statistics_layer, transform_layer
from .calibration import (
    CALIB_BATCH,
    CalibrationSet,
    calibration_ropes,
    load_calibration,
)
from .embedding import embed_dtype, embedding_blocks, head_entries
from .learned import PCA_ROTATIONS
from .linears import layer_tensors, peak_rss_mb, quantize_layer, step_cost
from .rotation_samples import RotationSamples

log = logging.getLogger(__name__)


def _hidden_tensors(hidden: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"batch{j:04d}": h.contiguous() for j, h in enumerate(hidden)}


def _hidden_list(t: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [t[k] for k in sorted(t)]


def _fingerprint(src: ModelSource, quant: QuantConfig, calib: CalibrationSet | None) -> dict:
    calib_hash = hashlib.sha256(calib.tokens.to(torch.int64).numpy().tobytes()).hexdigest() if calib else None
    # The tool version too: a resume by a newer release, whose arithmetic may differ, must not mix
    # its layers into the older one's.
    return {"schema_version": SCHEMA_VERSION, "tool_version": __version__, "settings": quant.to_dict(),
            "source_model": src.source.get("sha256"), "calibration_tokens": calib_hash}


class _Pipeline:
    """Two streaming passes over the layers, each layer read from the source when needed and freed
    after; every finished step is recorded in the work folder so that a rerun continues after it."""

    def __init__(self, src: ModelSource, quant: QuantConfig, calib: CalibrationSet | None, work: WorkDir,
                 progress: bool):
        self.src, self.quant, self.calib, self.work, self.progress = src, quant, calib, work, progress
        self.cfg = src.config
        self.runner = Decoder(self.cfg, torch.empty(0, self.cfg.hidden_size), [], None)  # layer_forward, rope
        self.ropes = calibration_ropes(self.runner, calib) if calib else []
        self.layouts = role_layouts(self.cfg, quant, warn=False) if quant.quantizes_weights else {}

    def _layers(self, done: int, desc: str):
        return tqdm(range(done, self.cfg.num_layers), desc=desc, disable=not self.progress,
                    initial=done, total=self.cfg.num_layers)

    def _float_layer(self, i: int) -> Layer:
        layer = self.src.layer(i)
        rotate.fold_layer_norms(layer)  # exact; the artifact then never carries norm weights
        return layer

    def _calibration_rows(self, u_a: torch.Tensor | None) -> list[torch.Tensor]:
        """First activations (embedding rows of the calibration tokens), reading the embedding by blocks."""
        ids = self.calib.tokens
        gathered = torch.empty(*ids.shape, self.cfg.hidden_size, dtype=torch.float32)
        for _ in embedding_blocks(self.src, u_a, ids, gathered):
            pass
        return list(gathered.split(CALIB_BATCH))

    @torch.inference_mode()
    def pass1(self) -> Bases:
        """Float model, layer by layer: residual/value/key second moments -> bases."""
        w, cfg = self.work, self.cfg
        if w.state["bases_done"]:
            return Bases.from_tensors(w.load("bases.safetensors"), w.state["bases_report"], w.state["spectra"])
        stats = None
        if self.quant.rotation in PCA_ROTATIONS:
            observer = RotationSamples if self.quant.rotation == "learned" else BasisStatistics
            stats = observer(cfg.hidden_size, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
            done = w.state["pass1_done"]
            if done:
                stats.load_state(w.load(f"pass1-stats-{done:05d}.safetensors"), w.state["pass1_counts"])
                hidden = _hidden_list(w.load(f"pass1-acts-{done:05d}.safetensors"))
            else:
                hidden = self._calibration_rows(None)
            for i in self._layers(done, "calibrate (pass 1)"):
                t = time.perf_counter()
                hidden = statistics_layer(self.runner, i, self._float_layer(i), hidden, self.ropes, stats)
                sums, counts = stats.state()
                w.save(f"pass1-stats-{i + 1:05d}.safetensors", sums)
                w.save(f"pass1-acts-{i + 1:05d}.safetensors", _hidden_tensors(hidden))
                w.layer_record(i).update(pass1_s=round(time.perf_counter() - t, 3), pass1_peak_rss_mb=round(peak_rss_mb()))
                w.commit(pass1_done=i + 1, pass1_counts=counts)
                w.drop(f"pass1-stats-{i:05d}.safetensors")
                w.drop(f"pass1-acts-{i:05d}.safetensors")
        t = time.perf_counter()
        bases = compute_bases(cfg, self.quant, stats)
        w.save("bases.safetensors", bases.tensors())
        w.commit(bases_done=True, bases_report=bases.report, spectra=bases.spectra,
                 bases_s=round(time.perf_counter() - t, 3))
        w.drop(f"pass1-stats-{cfg.num_layers:05d}.safetensors")
        w.drop(f"pass1-acts-{cfg.num_layers:05d}.safetensors")
        return bases

    @torch.inference_mode()
    def write_globals(self, bases: Bases) -> None:
        """Embedding and head (rotated, streamed to their files) and the first pass-2 activations."""
        w = self.work
        if w.state["globals_done"]:
            return
        t = time.perf_counter()
        dtype, c = embed_dtype(self.quant), self.cfg
        ids = self.calib.tokens if self.calib and self.quant.quantizes_weights else None
        gathered = torch.empty(*ids.shape, c.hidden_size, dtype=torch.float32) if ids is not None else None
        embed = Entry("embed", dtype, (c.vocab_size, c.hidden_size),
                      lambda: (rows.to(dtype) for rows in embedding_blocks(self.src, bases.u_a, ids, gathered)))
        write_safetensors(w.path("embed.safetensors"), [embed])
        w.written("embed.safetensors")
        write_safetensors(w.path("head.safetensors"), head_entries(self.src, bases.u_a, dtype))
        w.written("head.safetensors")
        shared = {"down_rotation.left": bases.down_left.float().contiguous()} if bases.down_left is not None else {}
        w.save("shared.safetensors", shared)
        if gathered is not None:
            w.save("pass2-acts-00000.safetensors", _hidden_tensors(list(gathered.split(CALIB_BATCH))))
        w.commit(globals_done=True, globals_s=round(time.perf_counter() - t, 3), globals_peak_rss_mb=round(peak_rss_mb()))

    @torch.inference_mode()
    def pass2(self, bases: Bases) -> None:
        """Transformed layers, one at a time: quantise (calibrating through the quantised layers
        before it), write the layer's tensors, free it."""
        w, quant = self.work, self.quant
        done = w.state["pass2_done"]
        hidden = _hidden_list(w.load(f"pass2-acts-{done:05d}.safetensors")) if quant.quantizes_weights else []
        for i in self._layers(done, "quantize layers (pass 2)"):
            t = time.perf_counter()
            layer = self._float_layer(i)
            transform_layer(self.cfg, bases, i, layer)
            record, packed = w.layer_record(i), None
            transform = step_cost(t)
            if quant.quantizes_weights:
                hidden, packed, errors = quantize_layer(self.runner, i, layer, quant, self.layouts, hidden,
                                                        self.ropes)
                errors["pass2_steps"] = {"read_and_transform": transform, **errors["pass2_steps"]}
                record.update(errors)
                w.save(f"pass2-acts-{i + 1:05d}.safetensors", _hidden_tensors(hidden))
            w.save(f"layer-{i:05d}.safetensors", layer_tensors(i, layer, packed))
            del layer
            record.update(pass2_s=round(time.perf_counter() - t, 3), pass2_peak_rss_mb=round(peak_rss_mb()))
            w.commit(pass2_done=i + 1)
            w.drop(f"pass2-acts-{i:05d}.safetensors")

    def check_resume(self) -> None:
        """Before continuing an interrupted run: every file the rest of the run builds on must be the
        bytes recorded when its step finished. A damaged or missing one is said and its step done
        again, from the last point whose inputs are kept (pass 2 keeps only the activations after
        its last finished layer, so a damaged layer means pass 2 again from layer 0)."""
        w, st, n = self.work, self.work.state, self.cfg.num_layers
        acts = self.quant.quantizes_weights
        needed = []
        if st["bases_done"]:
            needed.append(("bases.safetensors", "bases"))
        elif st["pass1_done"] and self.quant.rotation in PCA_ROTATIONS:
            needed += [(f"pass1-{k}-{st['pass1_done']:05d}.safetensors", "pass1") for k in ("stats", "acts")]
        if st["globals_done"]:
            needed += [(f"{k}.safetensors", "globals") for k in ("embed", "head", "shared")]
            if acts:
                needed.append((f"pass2-acts-{st['pass2_done']:05d}.safetensors", "pass2"))
        needed += [(f"layer-{i:05d}.safetensors", "pass2") for i in range(min(st["pass2_done"], n))]
        note_hashing(w.root, [w.path(name) for name, _ in needed])
        bad = {}
        for name, step in needed:
            problem = w.damage(name)
            if problem:
                bad[name] = step
                log.warning("resume: %s %s; %s", w.path(name), problem, _redo(name, step, acts))
        steps = set(bad.values())
        if steps & {"pass1", "bases"}:  # everything after the bases depends on them
            w.commit(pass1_done=0, bases_done=False, globals_done=False, pass2_done=0)
            return
        if "pass2" in steps:
            layers = [int(name[6:11]) for name in bad if name.startswith("layer-")]
            restart = 0 if acts else min(layers)  # without activations a layer depends on no other
            w.commit(pass2_done=restart, globals_done=st["globals_done"] and (restart > 0 or not acts))
        if "globals" in steps:
            w.commit(globals_done=False)

    def files(self) -> list[Path]:
        """The work files whose tensors make up the artifact, in the artifact's order."""
        names = ["embed.safetensors", "head.safetensors"]
        names += [f"layer-{i:05d}.safetensors" for i in range(self.cfg.num_layers)] + ["shared.safetensors"]
        return [self.work.path(n) for n in names]


def _redo(name: str, step: str, acts: bool) -> str:
    """What a resume does about a damaged file, for its warning line."""
    restart = "pass 2 restarts at layer 0, the last point whose inputs are kept"
    if name.startswith("layer-"):
        return f"layer {int(name[6:11])} is recomputed" + (f": {restart}" if acts else "")
    return {"pass1": "calibration restarts at layer 0", "bases": "calibration restarts at layer 0",
            "globals": "the embedding and head are written again", "pass2": restart}[step]


def _finished_stats(out_dir: Path, fingerprint: str) -> dict | None:
    """The manifest stats of a whole artifact in out_dir made with this fingerprint, else None."""
    from ..artifact import read_manifest

    try:
        stats = read_manifest(out_dir).get("stats", {})
    except ResQError:
        return None
    return stats if stats.get("fingerprint") == fingerprint else None


def quantize(
    source: str, quant: QuantConfig, out_dir: Path, calib_data: Sequence[str] | None = None,
    progress: bool = True, in_memory: bool = False, overwrite: bool = False, reuse_finished: bool = False,
) -> dict:
    """Run the whole stage and write the artifact. Returns the stats recorded in its manifest.

    Streams the model layer by layer (memory does not grow with the number of layers) and keeps its
    progress in `<out_dir>.partial/`, so an interrupted run continues with the same call. in_memory:
    read every source tensor up front instead (same result; for comparison and small models).
    out_dir must be new, empty or an earlier artifact holding only files resq-export wrote
    (overwrite: or another output of ours; it also lets stale results and a work folder of other
    settings go), apart from the model and calibration files (outputs.check_output); it is locked
    while the run lasts.
    reuse_finished: an artifact already in out_dir from the same model, settings, calibration data
    and tool version is kept as it is (what `build` does when run again)."""
    quant.validate()
    with claim_output(out_dir, "artifact", [source, *(calib_data or ())], overwrite) as out_dir:
        return _quantize(source, quant, out_dir, calib_data, progress, in_memory, overwrite, reuse_finished)


def _results_to_keep(out_dir: Path, fingerprint: str, overwrite: bool) -> list[Path]:
    """Results kept beside an artifact being replaced (evaluations.json, reports): carried into the
    new one when it is the same (same fingerprint, hence the same bytes); when it is not they would
    describe weights that are gone, so the run stops naming them, unless --overwrite deletes them."""
    if output_kind(out_dir) != "artifact":
        return []
    side = artifact_side_files(out_dir)
    if not side or _finished_stats(out_dir, fingerprint) is not None:
        return [out_dir / name for name in side]
    if not overwrite:
        raise ConfigError(f"{out_dir} holds results of the artifact this run replaces ({', '.join(side)}), which "
                          "other settings or inputs make stale: move them out of it to keep them, or pass --overwrite "
                          "to delete them with that artifact")
    log.warning("deleting %s in %s with the artifact they describe (--overwrite)", ", ".join(side), out_dir)
    return []


def _quantize(source: str, quant: QuantConfig, out_dir: Path, calib_data: Sequence[str] | None, progress: bool,
              in_memory: bool, overwrite: bool, reuse_finished: bool) -> dict:
    torch.manual_seed(quant.seed)
    t0 = time.perf_counter()
    src = open_model(source, in_memory=in_memory)
    if quant.quantizes_weights:
        role_layouts(src.config, quant)  # shapes that do not fit fail here, before the long work
        smallest = min(src.config.hidden_size, src.config.num_heads * src.config.head_dim)
        if quant.lqer_rank > smallest:  # the decomposition cannot give more components than that
            raise ConfigError(f"--lqer-rank {quant.lqer_rank} exceeds the smallest linear dimension of this "
                              f"model ({smallest}); choose a rank of at most {smallest}")
    context = context_length(src.tokenizer)
    if context is not None and quant.seqlen > context:  # runs (RoPE extends), but not what the model saw
        log.warning("--seqlen %d exceeds the model's context of %d tokens: calibration windows longer than the "
                    "model was trained on", quant.seqlen, context)
    needs_calib = quant.quantizes_weights or quant.rotation in PCA_ROTATIONS
    calib = load_calibration(src.tokenizer, quant, calib_data) if needs_calib else None
    run_fingerprint = _fingerprint(src, quant, calib)
    fingerprint = fingerprint_hash(run_fingerprint)
    if reuse_finished:
        finished = _finished_stats(out_dir, fingerprint)
        if finished is not None:
            log.warning("%s is already quantised from this model with these settings: kept", out_dir)
            return finished
    keep = _results_to_keep(out_dir, fingerprint, overwrite)
    work = WorkDir.open(out_dir, run_fingerprint, discard_other=overwrite)
    times = {"load": time.perf_counter() - t0}
    pipe = _Pipeline(src, quant, calib, work, progress)
    if work.state.get("resumed"):
        pipe.check_resume()
    try:
        t = time.perf_counter()
        bases = pipe.pass1()
        times["bases"] = time.perf_counter() - t
        t = time.perf_counter()
        pipe.write_globals(bases)
        times["embed_head"] = time.perf_counter() - t
        t = time.perf_counter()
        pipe.pass2(bases)
        times["weights"] = time.perf_counter() - t
    except ResQError:
        # A deterministic failure (NaN, singular Hessian): a rerun would fail the same way, so its
        # work folder is of no use. Anything else (full disk, a kill) keeps it for the resume.
        work.remove()
        raise
    stats = {
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "stage_times_s": {k: round(v, 2) for k, v in times.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
        "resumed": work.state.get("resumed", False),
        "fingerprint": fingerprint,
        **bases.report,
    }
    layers = [work.state["layers"].get(str(i), {}) for i in range(src.config.num_layers)]
    details = {"model": src.config.to_dict(), "settings": quant.to_dict(), "spectra": bases.spectra,
               "layers": layers, "timings_s": {k: work.state.get(k) for k in ("bases_s", "globals_s")},
               "manifest_stats": stats}
    t = time.perf_counter()
    write_artifact(Path(out_dir), pipe.files(), artifact_config(src.config, quant), src.tokenizer, src.source,
                   stats, details, keep)
    work.remove()
    log.info("wrote %s in %.1f s (assembly %.1f s, peak RSS %.0f MB)", out_dir, time.perf_counter() - t0,
             time.perf_counter() - t, stats["peak_rss_mb"])
    return stats
