"""Pass 2 on one layer: each linear's weights rounded (GPTQ or RTN, + LQER) against the activations
of the quantised layers before it, and the errors measured on the way."""

from __future__ import annotations

import math
import resource
import time

import torch

from ..algo.gptq import HessianError, gptq_quantize
from ..algo.lqer import lqer_factors, whitening_factor
from ..algo.quant import (
    dequantize_groups,
    dequantize_weight,
    group_bounds,
    mse_weight_scale,
    quantize_groups,
    quantize_sym,
    weight_scale,
)
from ..artifact import linear_tensors
from ..algo.finite import check_finite
from ..calib.stats import AbsMeanMax, SecondMoment
from ..errors import NumericalError
from ..config import QuantConfig
from ..decoder import LINEAR_ROLES, Decoder, FloatLinear, KVCache, Layer, StopForward
from ..layout import LinearLayout
from ..reference import LqerBranch, QuantLinear


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
    # LQER's whitening is factorised from the Hessian before GPTQ consumes (and damps) it
    whitener = None
    if quant.lqer_rank and quant.lqer_scale == "hessian":
        try:
            whitener = whitening_factor(hessian[0] if isinstance(hessian, list) else hessian, quant.gptq_damp)
        except ValueError as e:
            raise HessianError(str(e)) from None
    bounds, bits = group_bounds(layout.group_sizes), layout.w_bits
    wscale = torch.cat([mse_weight_scale(w[:, a:b], nbits) if quant.clip_search else weight_scale(w[:, a:b], nbits)
                        for (a, b), nbits in zip(bounds, bits)], 1)
    if quant.weight_algo == "gptq":
        codes = gptq_quantize(w, hessian, wscale, layout.group_sizes, bits, quant.gptq_damp, quant.gptq_block,
                              quant.gptq_order)
    else:
        codes = torch.cat([quantize_sym(w[:, a:b], wscale[:, g:g + 1], nbits).to(torch.int8)
                           for g, ((a, b), nbits) in enumerate(zip(bounds, bits))], 1)
    lqer = None
    if quant.lqer_rank:
        w_q = dequantize_weight(codes, wscale, layout.group_sizes, torch.float64)  # exact products
        a, b = lqer_factors(w, w_q, quant.lqer_rank, act_absmean if whitener is None else None, whitener)
        del w_q, whitener
        lqer = LqerBranch(*_quantize_rows(a.T, quant.lqer_bits), *_quantize_rows(b.T, quant.lqer_bits))
    # stored packed, as written; the GEMM copies of a QuantLinear are only made if it is ever run
    return QuantLinear.from_codes(layout, codes, wscale.to(torch.float32), lin.bias, lqer)


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
            capture = _InputCapture(i, role, lin.in_features, quant.lqer_rank > 0 and quant.lqer_scale == "absmean")
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
        steps[role] = step_cost(t)
    t = time.perf_counter()
    act = _ActivationError(layouts)
    hidden = [runner.layer_forward(i, layer, h, rope, KVCache(), act) for h, rope in zip(hidden, ropes)]
    steps["forward"] = step_cost(t)
    return hidden, tensors, {"weight_sqnr_db": w_sqnr, "activation_sqnr_db": act.sqnr_db(), "pass2_steps": steps}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step_cost(start: float) -> dict:
    """Seconds since start, and the process's peak RSS so far: the step that raised it is where a
    layer's memory peak lies."""
    return {"s": round(time.perf_counter() - start, 3), "peak_rss_mb": round(peak_rss_mb())}


def layer_tensors(i: int, layer: Layer, packed: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The artifact's tensors of layer i: its packed quantised linears (`packed`), or its float
    linears when nothing is quantised, plus its online key rotation and per-head q/k norms."""
    tensors: dict[str, torch.Tensor] = dict(packed or {})
    if packed is None:
        for role, attr in LINEAR_ROLES.items():
            tensors.update(linear_tensors(f"layers.{i}.{role}.", getattr(layer, attr)))
    if layer.key_rotation is not None:
        tensors[f"layers.{i}.key_rotation"] = layer.key_rotation.float().contiguous()
    for name in ("q_norm", "k_norm"):  # per-head norms (Qwen3): float weights the graph multiplies by
        if getattr(layer, name) is not None:
            tensors[f"layers.{i}.{name}"] = getattr(layer, name).float()
    return {k: v.contiguous() for k, v in tensors.items()}
