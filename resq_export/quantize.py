"""The quantise stage: model -> calibrate -> bases -> fold/rotate -> GPTQ/RTN (+LQER) -> artifact."""

from __future__ import annotations

import hashlib
import logging
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .algo.gptq import HessianError, gptq_quantize
from .algo.hadamard import hadamard_left_factor, sylvester
from .algo.lqer import lqer_factors
from .algo.quant import (dequantize_groups, dequantize_weight, group_bounds, mse_weight_scale, quantize_groups,
                         quantize_sym, weight_scale)
from .algo.rotation import haar_orthogonal, pca_basis, subspace_rotations
from .artifact import artifact_config, linear_tensors, write_artifact
from .calib.data import calibration_windows, default_calibration_path, read_texts, tokenize_corpus
from .calib.stats import AbsMeanMax, BasisStatistics, NumericalError, SecondMoment, check_finite
from .checkpoint import WorkDir, fingerprint_hash, maybe_test_kill
from .config import SCHEMA_VERSION, QuantConfig
from .decoder import LINEAR_ROLES, Decoder, FloatLinear, KVCache, Layer, StopForward
from .errors import ConfigError, ResQError
from .layout import LinearLayout, high_channels, role_layouts
from .models.config import ModelConfig
from .models.loader import ModelSource, context_length, open_model
from .outputs import check_output
from .reference import LqerBranch, QuantLinear
from .tensorfile import Entry, write_safetensors
from .transforms import rotate

log = logging.getLogger(__name__)

CALIB_BATCH = 8  # windows per forward pass


@dataclass
class CalibrationSet:
    tokens: torch.Tensor  # [n, seqlen]

    def batches(self) -> list[torch.Tensor]:
        return list(self.tokens.split(CALIB_BATCH))


def load_calibration(tokenizer, quant: QuantConfig, calib_data: Sequence[str] | None) -> CalibrationSet:
    texts = read_texts(list(calib_data) if calib_data else [default_calibration_path()])
    tokens = tokenize_corpus(tokenizer, texts)
    return CalibrationSet(calibration_windows(tokens, quant.nsamples, quant.seqlen, quant.seed))


# --- bases (pass 1) -------------------------------------------------------------------------------

@dataclass
class Bases:
    """Everything the per-layer surgery needs, decided before any layer is quantised."""

    u_a: torch.Tensor | None = None  # [hidden, hidden] float64
    u_b: torch.Tensor | None = None  # [layers, n_kv, hd, hd]
    u_c: torch.Tensor | None = None  # [layers, hd, hd]
    down_left: torch.Tensor | None = None  # left factor of U_D
    o_perm: torch.Tensor | None = None  # o_proj input permutation
    report: dict = field(default_factory=dict)  # variance shares, U_D shape (the manifest's stats)
    spectra: dict = field(default_factory=dict)  # eigenvalues per basis (the report's plots)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("u_a", "u_b", "u_c", "down_left", "o_perm")
        return {n: getattr(self, n).contiguous() for n in names if getattr(self, n) is not None}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], report: dict, spectra: dict) -> Bases:
        return cls(**{n: t.get(n) for n in ("u_a", "u_b", "u_c", "down_left", "o_perm")}, report=report,
                   spectra=spectra)


def statistics_layer(runner: Decoder, i: int, layer: Layer, hidden: list[torch.Tensor], ropes: list,
                     stats: BasisStatistics) -> list[torch.Tensor]:
    """Push the calibration activations through one float layer (norms folded), observing ResQ's statistics."""
    return [runner.layer_forward(i, layer, h, rope, KVCache(), stats) for h, rope in zip(hidden, ropes)]


@torch.inference_mode()
def collect_basis_statistics(model: Decoder, calib: CalibrationSet, progress: bool) -> BasisStatistics:
    """Pass 1 over a whole in-memory Decoder (its norms already folded)."""
    cfg = model.config
    stats = BasisStatistics(cfg.hidden_size, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    hidden = [model.embed_tokens(b) for b in calib.batches()]
    ropes = _ropes(model, calib)
    for i, layer in enumerate(tqdm(model.layers, desc="calibrate", disable=not progress)):
        hidden = statistics_layer(model, i, layer, hidden, ropes, stats)
    return stats


def _variance_share(eigvals: torch.Tensor, n_high: int) -> float:
    return float(eigvals[-n_high:].sum() / eigvals.sum()) if n_high else 0.0


def compute_bases(cfg: ModelConfig, quant: QuantConfig, stats: BasisStatistics | None) -> Bases:
    """U_A, U_B, U_C (PCA + subspace rotations, or random), U_D and the o_proj permutation."""
    bases = Bases()
    if not quant.quantizes_weights:
        return bases
    gen = torch.Generator().manual_seed(quant.seed)
    r_res, r_head = high_channels(cfg.hidden_size, quant), high_channels(cfg.head_dim, quant)
    if quant.rotation == "pca":
        eig_a, u_a = pca_basis(stats.residual.finalize())
        bases.u_a = u_a @ subspace_rotations(cfg.hidden_size, r_res, gen)
        r2 = subspace_rotations(cfg.head_dim, r_head, gen)  # one R2 for V and K of every layer
        u_b, u_c, share_b, share_c, eig_b, eig_c = [], [], [], [], [], []
        for i in range(cfg.num_layers):
            heads, layer_eigs = [], []
            for acc in stats.values_[i]:
                eig, basis = pca_basis(acc.finalize())
                heads.append(basis @ r2)
                share_b.append(_variance_share(eig, r_head))
                layer_eigs.append(eig.tolist())
            u_b.append(torch.stack(heads))
            eig_b.append(layer_eigs)
            eig, basis = pca_basis(stats.keys_[i].finalize())
            u_c.append(basis @ r2)
            share_c.append(_variance_share(eig, r_head))
            eig_c.append(eig.tolist())
        bases.u_b, bases.u_c = torch.stack(u_b), torch.stack(u_c)
        bases.report = {
            "variance_in_high_subspace": {
                "U_A": _variance_share(eig_a, r_res),
                "U_B_mean": sum(share_b) / len(share_b),
                "U_C_mean": sum(share_c) / len(share_c),
            },
        }
        bases.spectra = {"U_A": eig_a.tolist(), "U_B": eig_b, "U_C": eig_c,
                         "high_channels": {"U_A": r_res, "U_B": r_head, "U_C": r_head}}
    elif quant.rotation == "random":
        bases.u_a = haar_orthogonal(cfg.hidden_size, gen)
        hd = cfg.head_dim
        head = sylvester(hd) / hd ** 0.5 if hd & (hd - 1) == 0 else haar_orthogonal(hd, gen)
        bases.u_b = head.expand(cfg.num_layers, cfg.num_kv_heads, hd, hd)
        bases.u_c = head.expand(cfg.num_layers, hd, hd)
    if quant.online_hadamard:
        left, is_hadamard = hadamard_left_factor(cfg.intermediate_size, quant.seed)
        bases.report["down_rotation"] = {"left": left.shape[0], "walsh_hadamard": cfg.intermediate_size // left.shape[0],
                                         "hadamard": is_hadamard}
        bases.down_left = left
    if r_head:
        bases.o_perm = rotate.o_input_permutation(cfg.num_heads, cfg.head_dim, r_head)
    return bases


def transform_layer(cfg: ModelConfig, bases: Bases, i: int, layer: Layer) -> None:
    """Bake the bases into layer i (norms already folded); exact without quantisation."""
    if bases.u_a is not None:
        rotate.rotate_layer_residual(layer, bases.u_a)
        rotate.rotate_layer_values(cfg, layer, bases.u_b[i])
        layer.key_rotation = bases.u_c[i].float()
    if bases.down_left is not None:
        rotate.set_layer_down_rotation(layer, bases.down_left)
    if bases.o_perm is not None:
        rotate.permute_layer_o(layer, bases.o_perm)


def apply_bases(model: Decoder, quant: QuantConfig, calib: CalibrationSet, progress: bool) -> dict:
    """Compute the bases on a whole in-memory Decoder (norms folded) and bake them in."""
    stats = collect_basis_statistics(model, calib, progress) if quant.rotation == "pca" else None
    bases = compute_bases(model.config, quant, stats)
    for i, layer in enumerate(model.layers):
        transform_layer(model.config, bases, i, layer)
    if bases.u_a is not None:
        model.embed = rotate.rotate_rows(model.embed, bases.u_a)
        rotate.rotate_head(model, bases.u_a)
    return bases.report


def _ropes(runner: Decoder, calib: CalibrationSet) -> list:
    return [runner.rope(torch.arange(b.shape[1])[None].expand(b.shape[0], -1)) for b in calib.batches()]


# --- weights ---------------------------------------------------------------------------------------

class _InputCapture:
    """Observer accumulating one linear's input Hessian (and LQER scale), then ending the pass."""

    def __init__(self, layer: int, role: str, dim: int, want_absmean: bool):
        self.layer, self.role = layer, role
        self.hessian = SecondMoment(dim)
        self.absmean = AbsMeanMax(dim) if want_absmean else None

    def linear_input(self, layer: int, role: str, x: torch.Tensor) -> None:
        if role != self.role:
            return
        check_finite(x, f"layer {layer} {role} input")
        for window in x:  # LQER's statistic is a max over calibration batches of one window each
            self.hessian.add_batch(window)
            if self.absmean is not None:
                self.absmean.add_batch(window)
        raise StopForward

    def values(self, layer: int, v: torch.Tensor) -> None:
        pass

    def keys(self, layer: int, k: torch.Tensor) -> None:
        pass


def quantize_linear(
    lin: FloatLinear, layout: LinearLayout, quant: QuantConfig,
    hessian: torch.Tensor | list[torch.Tensor] | None, act_absmean: torch.Tensor | None,
) -> QuantLinear:
    w = lin.weight.to(torch.float32)
    bounds, bits = group_bounds(layout.group_sizes), layout.w_bits
    wscale = torch.cat([mse_weight_scale(w[:, a:b], nbits) if quant.clip_search else weight_scale(w[:, a:b], nbits)
                        for (a, b), nbits in zip(bounds, bits)], 1)
    if quant.weight_algo == "gptq":
        codes = gptq_quantize(w, hessian, wscale, layout.group_sizes, bits, quant.gptq_damp, quant.gptq_block)
    else:
        codes = torch.cat([quantize_sym(w[:, a:b], wscale[:, g:g + 1], nbits).to(torch.int8)
                           for g, ((a, b), nbits) in enumerate(zip(bounds, bits))], 1)
    lqer = None
    if quant.lqer_rank:
        w_q = dequantize_weight(codes, wscale, layout.group_sizes, torch.float64)  # exact products
        a, b = lqer_factors(w, w_q, quant.lqer_rank, act_absmean)
        del w_q
        lqer = LqerBranch(*_quantize_rows(a.T, quant.lqer_bits), *_quantize_rows(b.T, quant.lqer_bits))
    # int8 codes: the streaming quantiser packs them and takes the effective weight; the GEMM
    # copies of a QuantLinear are only made if it is ever run.
    return QuantLinear(layout, codes, wscale.to(torch.float32), lin.bias, lqer)


def _quantize_rows(m: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = m.to(torch.float32)
    scale = weight_scale(m, bits)
    return quantize_sym(m, scale, bits).to(torch.int32), scale[:, 0]


def _effective_float(q: QuantLinear) -> FloatLinear:
    """The quantised weights as a float linear (activations unquantised, as GPTQ calibrates)."""
    w = q.dequantized_weight()
    if q.lqer is not None:
        a = q.lqer.a_q.float() * q.lqer.a_scale[:, None]
        b = q.lqer.b_q.float() * q.lqer.b_scale[:, None]
        w = w + b @ a
    return FloatLinear(w, q.bias)


class _ActivationError:
    """Observer on the pass that propagates the calibration activations through a quantised layer:
    guards against NaN/Inf and measures each linear's activation quantisation SQNR."""

    def __init__(self, layouts: dict[str, LinearLayout]):
        self.layouts = layouts
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def linear_input(self, layer: int, role: str, x: torch.Tensor) -> None:
        check_finite(x, f"layer {layer} {role} input")
        layout = self.layouts.get(role)
        if layout is None or layout.float_activations:
            return
        q, scale, zero = quantize_groups(x, layout.group_sizes, layout.a_bits)
        err = x - dequantize_groups(q, scale, zero, layout.group_sizes)
        self.signal[role] = self.signal.get(role, 0.0) + float(x.double().pow(2).sum())
        self.noise[role] = self.noise.get(role, 0.0) + float(err.double().pow(2).sum())

    def values(self, layer: int, v: torch.Tensor) -> None:
        check_finite(v, f"layer {layer} values")

    def keys(self, layer: int, k: torch.Tensor) -> None:
        check_finite(k, f"layer {layer} keys")

    def sqnr_db(self) -> dict[str, float]:
        return {r: _db(self.signal[r], self.noise[r]) for r in self.signal}


def _db(signal: float, noise: float) -> float:
    return round(10 * math.log10(signal / noise), 3) if noise > 0 and signal > 0 else float("inf")


@torch.inference_mode()
def quantize_layer(
    runner: Decoder, i: int, layer: Layer, quant: QuantConfig, layouts: dict[str, LinearLayout],
    hidden: list[torch.Tensor], ropes: list,
) -> tuple[list[torch.Tensor], dict]:
    """Pass 2 for one (transformed) layer, sublayer by sublayer (qkv, o, gate_up, down): capture the
    inputs through the already quantised weights, quantise, then push the calibration activations
    through the quantised layer. Returns the new activations, the layer's packed artifact tensors
    and its error statistics and per-step costs (the layer is left holding the effective float weights)."""
    needs_inputs = quant.weight_algo == "gptq" or quant.lqer_rank > 0
    tensors, w_sqnr, steps = {}, {}, {}
    for role, attr in LINEAR_ROLES.items():
        t = time.perf_counter()
        lin = getattr(layer, attr)
        hessian = absmean = None
        if needs_inputs:
            capture = _InputCapture(i, role, lin.in_features, quant.lqer_rank > 0)
            for h, rope in zip(hidden, ropes):
                try:
                    runner.layer_forward(i, layer, h, rope, KVCache(), capture)
                except StopForward:
                    pass
            # Handed over in a list, so that GPTQ holds the only reference and frees it early.
            hessian = [capture.hessian.sum]
            absmean = capture.absmean.finalize() if capture.absmean else None
            del capture
        try:
            q = quantize_linear(lin, layouts[role], quant, hessian, absmean)
        except HessianError as e:
            raise NumericalError(f"layer {i} {role} (Hessian of its input): {e}") from None
        # Packed for the artifact at once; the QuantLinear (codes plus its GEMM copies, about 8
        # bytes per weight) is not kept: the rest of the layer's calibration needs only the
        # effective float weights.
        tensors.update(linear_tensors(f"layers.{i}.{role}.", q))
        effective = _effective_float(q)
        del q
        w = lin.weight  # float32 differences, float64 sums: no float64 copy of a big matrix
        w_sqnr[role] = _db(float(w.square().sum(dtype=torch.float64)),
                           float(torch.sub(w, effective.weight).square_().sum(dtype=torch.float64)))
        setattr(layer, attr, effective)
        steps[role] = _step_cost(t)
    t = time.perf_counter()
    act = _ActivationError(layouts)
    hidden = [runner.layer_forward(i, layer, h, rope, KVCache(), act) for h, rope in zip(hidden, ropes)]
    steps["forward"] = _step_cost(t)
    return hidden, tensors, {"weight_sqnr_db": w_sqnr, "activation_sqnr_db": act.sqnr_db(), "pass2_steps": steps}


def _step_cost(start: float) -> dict:
    """Seconds since start, and the process's peak RSS so far: the step that raised it is where a
    layer's memory peak lies."""
    return {"s": round(time.perf_counter() - start, 3), "peak_rss_mb": round(peak_rss_mb())}


def layer_tensors(i: int, layer: Layer, packed: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The artifact's tensors of layer i: its packed quantised linears (`packed`), or its float
    linears when nothing is quantised, plus its online key rotation."""
    tensors: dict[str, torch.Tensor] = dict(packed or {})
    if packed is None:
        for role, attr in LINEAR_ROLES.items():
            tensors.update(linear_tensors(f"layers.{i}.{role}.", getattr(layer, attr)))
    if layer.key_rotation is not None:
        tensors[f"layers.{i}.key_rotation"] = layer.key_rotation.float().contiguous()
    return {k: v.contiguous() for k, v in tensors.items()}


# --- embedding and head ----------------------------------------------------------------------------

EMBED_BLOCK_ROWS = 8192  # rows of the embedding / head transformed at once (bounds their memory)


def _row_blocks(vocab: int):
    return [(a, min(a + EMBED_BLOCK_ROWS, vocab)) for a in range(0, vocab, EMBED_BLOCK_ROWS)]


def embedding_blocks(src: ModelSource, u_a: torch.Tensor | None, ids: torch.Tensor | None,
                     gathered: torch.Tensor | None):
    """The (rotated) float32 embedding, block of rows by block; the rows of the calibration tokens
    `ids` are copied into `gathered` on the way (they are the calibration's first activations)."""
    for a, b in _row_blocks(src.config.vocab_size):
        rows = src.rows(src.embed_name, a, b)
        if u_a is not None:
            rows = rotate.rotate_rows(rows, u_a)
        if ids is not None:
            hit = (ids >= a) & (ids < b)
            gathered[hit] = rows[ids[hit] - a]
        yield rows


def head_entries(src: ModelSource, u_a: torch.Tensor | None, dtype: torch.dtype) -> list[Entry]:
    """The artifact's output-head tensors: lm_head with the final norm folded in and U_A on its
    input side, streamed block by block; a tied head as the [hidden, hidden] factor that turns the
    (rotated) embedding into it (decoder.TiedHead), so the embedding is stored once."""
    final_norm = src.final_norm()
    if src.tied_head:
        factor = rotate.fold_head_norm(torch.eye(src.config.hidden_size), final_norm)
        return [Entry.of("lm_head.factor", rotate.tied_head_factor(factor, u_a) if u_a is not None else factor)]

    def blocks():
        for a, b in _row_blocks(src.config.vocab_size):
            rows = rotate.fold_head_norm(src.rows(src.head_name, a, b), final_norm)
            yield (rotate.rotate_rows(rows, u_a) if u_a is not None else rows).to(dtype)

    return [Entry("lm_head.weight", dtype, (src.config.vocab_size, src.config.hidden_size), blocks)]


def _embed_dtype(quant: QuantConfig) -> torch.dtype:
    return torch.float32 if quant.method == "fp" else torch.float16


# --- the pipeline ----------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
        self.ropes = _ropes(self.runner, calib) if calib else []
        self.layouts = role_layouts(self.cfg, quant) if quant.quantizes_weights else {}

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
        if self.quant.quantizes_weights and self.quant.rotation == "pca":
            stats = BasisStatistics(cfg.hidden_size, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
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
                maybe_test_kill("pass1", i)
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
        dtype, c = _embed_dtype(self.quant), self.cfg
        ids = self.calib.tokens if self.calib else None
        gathered = torch.empty(*ids.shape, c.hidden_size, dtype=torch.float32) if ids is not None else None
        embed = Entry("embed", dtype, (c.vocab_size, c.hidden_size),
                      lambda: (rows.to(dtype) for rows in embedding_blocks(self.src, bases.u_a, ids, gathered)))
        write_safetensors(w.path("embed.safetensors"), [embed])
        write_safetensors(w.path("head.safetensors"), head_entries(self.src, bases.u_a, dtype))
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
        hidden = _hidden_list(w.load(f"pass2-acts-{done:05d}.safetensors")) if self.calib else []
        for i in self._layers(done, "quantize layers (pass 2)"):
            t = time.perf_counter()
            layer = self._float_layer(i)
            transform_layer(self.cfg, bases, i, layer)
            record, packed = w.layer_record(i), None
            transform = _step_cost(t)
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
            maybe_test_kill("pass2", i)

    def files(self) -> list[Path]:
        """The work files whose tensors make up the artifact, in the artifact's order."""
        names = ["embed.safetensors", "head.safetensors"]
        names += [f"layer-{i:05d}.safetensors" for i in range(self.cfg.num_layers)] + ["shared.safetensors"]
        return [self.work.path(n) for n in names]


def _finished_stats(out_dir: Path, fingerprint: str) -> dict | None:
    """The manifest stats of a whole artifact in out_dir made with this fingerprint, else None."""
    from .artifact import read_manifest

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
    out_dir must be new, empty or an earlier artifact (overwrite: any folder), and apart from the
    model and calibration files (outputs.check_output). reuse_finished: an artifact already in
    out_dir from the same model, settings, calibration data and tool version is kept as it is (what
    `build` does when run again)."""
    quant.validate()
    out_dir = check_output(out_dir, "artifact", [source, *(calib_data or ())], overwrite)
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
    calib = load_calibration(src.tokenizer, quant, calib_data) if quant.quantizes_weights else None
    run_fingerprint = _fingerprint(src, quant, calib)
    fingerprint = fingerprint_hash(run_fingerprint)
    if reuse_finished:
        finished = _finished_stats(out_dir, fingerprint)
        if finished is not None:
            log.warning("%s is already quantised from this model with these settings: kept", out_dir)
            return finished
    work = WorkDir.open(out_dir, run_fingerprint)
    times = {"load": time.perf_counter() - t0}
    pipe = _Pipeline(src, quant, calib, work, progress)
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
                   stats, details)
    work.remove()
    log.info("wrote %s in %.1f s (assembly %.1f s, peak RSS %.0f MB)", out_dir, time.perf_counter() - t0,
             time.perf_counter() - t, stats["peak_rss_mb"])
    return stats
