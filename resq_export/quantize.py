"""The quantise stage: model -> calibrate -> bases -> fold/rotate -> GPTQ/RTN (+LQER) -> artifact."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .algo.gptq import HessianError, gptq_quantize
from .algo.hadamard import hadamard_left_factor, sylvester
from .algo.lqer import lqer_factors
from .algo.quant import expand_groups, group_bounds, mse_weight_scale, quantize_sym, weight_scale
from .algo.rotation import haar_orthogonal, pca_basis, subspace_rotations
from .artifact import write_artifact
from .calib.data import calibration_windows, default_calibration_path, read_texts, tokenize_corpus
from .calib.stats import AbsMeanMax, BasisStatistics, NumericalError, SecondMoment, check_finite
from .config import QuantConfig
from .decoder import LINEAR_ROLES, Decoder, FloatLinear, KVCache, StopForward
from .layout import LinearLayout, high_channels, kv_quantizer, role_layouts
from .models.loader import load_model
from .reference import LqerBranch, QuantLinear
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


# --- bases -----------------------------------------------------------------------------------------

@torch.inference_mode()
def collect_basis_statistics(model: Decoder, calib: CalibrationSet, progress: bool) -> BasisStatistics:
    cfg = model.config
    stats = BasisStatistics(cfg.hidden_size, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    for batch in tqdm(calib.batches(), desc="calibrate", disable=not progress):
        model.hidden_states(batch, observer=stats)
    return stats


def _variance_share(eigvals: torch.Tensor, n_high: int) -> float:
    return float(eigvals[-n_high:].sum() / eigvals.sum()) if n_high else 0.0


def apply_bases(model: Decoder, quant: QuantConfig, calib: CalibrationSet, progress: bool) -> dict:
    """Compute U_A, U_B, U_C (and U_D) for the setting's rotation and bake them into the model."""
    cfg = model.config
    gen = torch.Generator().manual_seed(quant.seed)
    r_res, r_head = high_channels(cfg.hidden_size, quant), high_channels(cfg.head_dim, quant)
    report: dict = {}
    if quant.rotation == "pca":
        stats = collect_basis_statistics(model, calib, progress)
        eig_a, u_a = pca_basis(stats.residual.finalize())
        u_a = u_a @ subspace_rotations(cfg.hidden_size, r_res, gen)
        r2 = subspace_rotations(cfg.head_dim, r_head, gen)  # one R2 for V and K of every layer
        u_b, u_c, share_b, share_c = [], [], [], []
        for i in range(cfg.num_layers):
            heads = []
            for acc in stats.values_[i]:
                eig, basis = pca_basis(acc.finalize())
                heads.append(basis @ r2)
                share_b.append(_variance_share(eig, r_head))
            u_b.append(torch.stack(heads))
            eig, basis = pca_basis(stats.keys_[i].finalize())
            u_c.append(basis @ r2)
            share_c.append(_variance_share(eig, r_head))
        report = {
            "variance_in_high_subspace": {
                "U_A": _variance_share(eig_a, r_res),
                "U_B_mean": sum(share_b) / len(share_b),
                "U_C_mean": sum(share_c) / len(share_c),
            },
            "eigenvalues_U_A": eig_a.tolist(),
        }
    elif quant.rotation == "random":
        u_a = haar_orthogonal(cfg.hidden_size, gen)
        hd = cfg.head_dim
        head = sylvester(hd) / hd ** 0.5 if hd & (hd - 1) == 0 else haar_orthogonal(hd, gen)
        u_b = [head.expand(cfg.num_kv_heads, hd, hd) for _ in range(cfg.num_layers)]
        u_c = [head] * cfg.num_layers
    if quant.rotation != "none":
        rotate.rotate_residual(model, u_a)
        rotate.rotate_values(model, u_b)
        rotate.set_key_rotations(model, u_c)
    if quant.online_hadamard:
        left, is_hadamard = hadamard_left_factor(cfg.intermediate_size, quant.seed)
        report["down_rotation"] = {"left": left.shape[0], "walsh_hadamard": cfg.intermediate_size // left.shape[0],
                                   "hadamard": is_hadamard}
        rotate.set_down_rotation(model, left)
    if r_head:
        rotate.permute_o_inputs(model, r_head)
    return report


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
    hessian: torch.Tensor | None, act_absmean: torch.Tensor | None,
) -> QuantLinear:
    w = lin.weight.to(torch.float32)
    scales = []
    for (a, b), bits in zip(group_bounds(layout.group_sizes), layout.w_bits):
        scales.append(mse_weight_scale(w[:, a:b], bits) if quant.clip_search else weight_scale(w[:, a:b], bits))
    wscale = torch.cat(scales, 1)
    col_scale = expand_groups(wscale, layout.group_sizes)
    col_bits = expand_groups(torch.tensor(layout.w_bits), layout.group_sizes)
    if quant.weight_algo == "gptq":
        q = gptq_quantize(w, hessian, col_scale, col_bits, quant.gptq_damp, quant.gptq_block)
    else:
        q = torch.cat([quantize_sym(w[:, a:b], col_scale[:, a:b], bits)
                       for (a, b), bits in zip(group_bounds(layout.group_sizes), layout.w_bits)], 1)
    lqer = None
    if quant.lqer_rank:
        a, b = lqer_factors(w, q * col_scale, quant.lqer_rank, act_absmean)
        lqer = LqerBranch(*_quantize_rows(a.T, quant.lqer_bits), *_quantize_rows(b.T, quant.lqer_bits))
    return QuantLinear(layout, q.to(torch.int32), wscale.to(torch.float32), lin.bias, lqer)


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


@torch.inference_mode()
def quantize_weights(model: Decoder, quant: QuantConfig, calib: CalibrationSet, progress: bool) -> None:
    """Layer by layer, sublayer by sublayer (qkv, o, gate_up, down): capture the inputs through the
    already quantised weights, quantise, then push the calibration activations through the layer."""
    layouts = role_layouts(model.config, quant)
    needs_inputs = quant.weight_algo == "gptq" or quant.lqer_rank > 0
    hidden = [model.embed_tokens(b) for b in calib.batches()]
    ropes = [model.rope(torch.arange(b.shape[1])[None].expand(b.shape[0], -1)) for b in calib.batches()]
    for i, layer in enumerate(tqdm(model.layers, desc="quantize layers", disable=not progress)):
        quantized = {}
        for role, attr in LINEAR_ROLES.items():
            lin = getattr(layer, attr)
            hessian = absmean = None
            if needs_inputs:
                capture = _InputCapture(i, role, lin.in_features, quant.lqer_rank > 0)
                for h, rope in zip(hidden, ropes):
                    try:
                        model.layer_forward(i, layer, h, rope, KVCache(), capture)
                    except StopForward:
                        pass
                hessian = capture.hessian.sum
                absmean = capture.absmean.finalize() if capture.absmean else None
            try:
                quantized[role] = quantize_linear(lin, layouts[role], quant, hessian, absmean)
            except HessianError as e:
                raise NumericalError(f"layer {i} {role}: {e}") from None
            setattr(layer, attr, _effective_float(quantized[role]))
        hidden = [model.layer_forward(i, layer, h, rope, KVCache()) for h, rope in zip(hidden, ropes)]
        for role, q in quantized.items():
            setattr(layer, LINEAR_ROLES[role], q)
    model.kv_quantizer = kv_quantizer(model.config, quant)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def quantize(
    source: str, quant: QuantConfig, out_dir: Path, calib_data: Sequence[str] | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole stage and write the artifact. Returns the stats recorded in its manifest."""
    quant.validate()
    torch.manual_seed(quant.seed)
    t0 = time.perf_counter()
    loaded = load_model(source)
    model = loaded.decoder
    if quant.quantizes_weights:
        role_layouts(model.config, quant)  # shapes that do not fit fail here, before the long work
    times = {"load": time.perf_counter() - t0}
    report: dict = {}
    rotate.fold_norms(model)  # exact; the artifact then never carries norm weights
    if quant.quantizes_weights:
        t = time.perf_counter()
        calib = load_calibration(loaded.tokenizer, quant, calib_data)
        report = apply_bases(model, quant, calib, progress)
        times["bases"] = time.perf_counter() - t
        t = time.perf_counter()
        quantize_weights(model, quant, calib, progress)
        times["weights"] = time.perf_counter() - t
    stats = {
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "stage_times_s": {k: round(v, 2) for k, v in times.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
        **report,
    }
    write_artifact(Path(out_dir), model, quant, loaded.tokenizer, loaded.source, stats)
    log.info("wrote %s in %.1f s (peak RSS %.0f MB)", out_dir, stats["wall_time_s"], stats["peak_rss_mb"])
    return stats
