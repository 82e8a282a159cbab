"""`--rotation learned`: ResQ's bases with the rotation inside each precision subspace learned
instead of left random (issue 32).

Every rotation starts from the random one `--rotation pca` draws (same seed, same draws), and is
refined on pass 1's sample rows against the quantisation error of the groups the layout gives
that subspace (algo/learned_rotation.py): U_A's 4-bit and 8-bit parts on the residual stream's
inputs to attn_qkv and mlp_gate_up (one U_A for the model, as ResQ shares it); U_B per layer and
KV head on the values (their cache rows and the o_proj input's head parts are quantised in those
parts); U_C per layer on the keys after RoPE. ResQ reuses one R2 for every U_B and U_C; here each
gets its own, which the artifact already stores (u_b [layers, kv heads, hd, hd], u_c [layers, hd,
hd]), so export, ONNX and the kernels see ordinary bases."""

from __future__ import annotations

import logging

import torch

from ..algo.learned_rotation import LearnSettings, learn_rotation
from ..algo.rotation import block_diag_rotation
from ..config import QuantConfig
from ..layout import high_channels, role_layouts
from ..models.config import ModelConfig
from .rotation_samples import RotationSamples

log = logging.getLogger(__name__)

PCA_ROTATIONS = ("pca", "learned")  # rotations built on ResQ's PCA bases (pass 1 collects statistics)
SETTINGS = LearnSettings()  # the search's budget for every subspace (the tests shorten it for tiny models)


def _quantised_bits(bits: int) -> int:
    """The grid a subspace is fitted to: its bit width, or 4 where that part stays float (16)."""
    return 4 if bits == 16 else bits


def _learn_parts(y: torch.Tensor, parts: list[tuple[list[int], int]], seed: int, block: int,
                 out: list[dict]) -> torch.Tensor:
    """diag(R_part, ...) learned on y (rows already in the start basis): each part's channels
    (contiguous, in order) with its group widths and bits. Returns the float64 block rotation that
    right-multiplies the start basis."""
    blocks, at = [], 0
    for k, (groups, bits) in enumerate(parts):
        width = sum(groups)
        eye = torch.eye(width, dtype=torch.float64)
        rot, report = learn_rotation(y[:, at:at + width], eye, groups, bits, seed + k, block, SETTINGS)
        blocks.append(rot)
        out.append(report)
        at += width
    return block_diag_rotation(blocks[0], blocks[1]) if len(blocks) == 2 else blocks[0]


def _residual_parts(cfg: ModelConfig, quant: QuantConfig) -> list[tuple[list[int], int]]:
    """U_A's subspaces as the residual-stream linears quantise them: (group widths, bits) of the
    low part (hidden - r channels), then of the high part (the last r), from the layout."""
    low_width = cfg.hidden_size - high_channels(cfg.hidden_size, quant)
    groups = role_layouts(cfg, quant, warn=False)["attn_qkv"].group_sizes
    low, high, at = [], [], 0
    for g in groups:
        (low if at < low_width else high).append(g)
        at += g
    parts = [(low, _quantised_bits(quant.a_bits))]
    return parts + ([(high, quant.high_bits)] if high else [])


def _summary(reports: list[dict]) -> dict:
    """Mean relative quantisation error before and after, over a basis's subspaces that were learned."""
    done = [r for r in reports if r]
    if not done:
        return {}
    mean = lambda key: sum(r[key] for r in done) / len(done)  # noqa: E731
    return {"subspaces": len(done), "quantised_error_start": mean("quantised_error_start"),
            "quantised_error": mean("quantised_error")}


def learn_subspace_rotations(cfg: ModelConfig, quant: QuantConfig, bases, stats: RotationSamples) -> dict:
    """Replace the random rotations inside bases.u_a, u_b, u_c (PCA basis times the random block
    rotation) by learned ones, in place. Returns the report (mean error before / after per basis)."""
    r_head = high_channels(cfg.head_dim, quant)
    parts_a = _residual_parts(cfg, quant)
    seed = quant.seed * 100_003
    rep_a: list[dict] = []
    y = stats.residual_samples().to(torch.float64) @ bases.u_a
    bases.u_a = bases.u_a @ _learn_parts(y.float(), parts_a, seed, stats.rows, rep_a)

    kv_low = _quantised_bits(quant.kv_bits)
    head_parts = [([cfg.head_dim - r_head], kv_low)] + ([([r_head], quant.high_bits)] if r_head else [])
    u_b, u_c, rep_b, rep_c = bases.u_b.clone(), bases.u_c.clone(), [], []
    for i in range(cfg.num_layers):
        for h in range(cfg.num_kv_heads):
            y = stats.value_samples(i, h).to(torch.float64) @ u_b[i, h]
            u_b[i, h] = u_b[i, h] @ _learn_parts(y.float(), head_parts, seed + 1000 * (i + 1) + 10 * h,
                                                stats.rows, rep_b)
        y = stats.key_samples(i).to(torch.float64) @ u_c[i]
        u_c[i] = u_c[i] @ _learn_parts(y.float(), head_parts, seed + 1000 * (i + 1) + 500, stats.rows, rep_c)
    bases.u_b, bases.u_c = u_b, u_c
    report = {"U_A": _summary(rep_a), "U_B": _summary(rep_b), "U_C": _summary(rep_c)}
    log.info("learned rotations, relative quantisation error of the calibration rows before -> after: %s", report)
    return report
