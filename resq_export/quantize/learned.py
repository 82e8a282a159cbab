"""`--rotation learned`: ResQ's bases with the rotation inside each precision subspace learned
instead of left random (issue 32).

Every rotation starts from the random one `--rotation pca` draws (same seed, same draws), and is
refined on pass 1's sample rows against the quantisation error of the groups the layout gives
that subspace (algo/learned_rotation.py): U_A's 4-bit and 8-bit parts on the residual stream's
inputs to attn_qkv and mlp_gate_up (one U_A for the model, as ResQ shares it; with
--gate-up-high-fraction a third, middle block at attn_qkv's 4 bits); U_B per layer and
KV head on the values (their cache rows and the o_proj input's head parts are quantised in those
parts); U_C per layer on the keys after RoPE. ResQ reuses one R2 for every U_B and U_C; here each
gets its own, which the artifact already stores (u_b [layers, kv heads, hd, hd], u_c [layers, hd,
hd]), so export, ONNX and the kernels see ordinary bases."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..algo.learned_rotation import LearnSettings, learn_rotations
from ..config import QuantConfig
from ..layout import high_channels, residual_blocks, role_layouts
from ..models.config import ModelConfig
from .rotation_samples import RotationSamples

log = logging.getLogger(__name__)

PCA_ROTATIONS = ("pca", "learned")  # rotations built on ResQ's PCA bases (pass 1 collects statistics)
# The search's budget (the tests shorten it for tiny models): U_A's two subspaces, then the batched
# U_B / U_C searches (hundreds of head-sized problems at once, so fewer rows per step each).
SETTINGS = LearnSettings()
HEAD_BATCH = 256


def _quantised_bits(bits: int) -> int:
    """The grid a subspace is fitted to: its bit width, or 4 where that part stays float (16)."""
    return 4 if bits == 16 else bits


def _learn_parts(y: torch.Tensor, parts: list[tuple[list[int], int]], seed: int, block: int,
                 out: list[dict], batch: int | None = None) -> torch.Tensor:
    """diag(R_part, ...) learned on y [P, N, d] (P independent problems, rows already in their start
    bases): each part's channels (contiguous, in order) with its group widths and bits. Returns the
    float64 block rotations [P, d, d] that right-multiply the start bases."""
    blocks, at = [], 0
    for k, (groups, bits) in enumerate(parts):
        width = sum(groups)
        eye = torch.eye(width, dtype=torch.float64).expand(y.shape[0], width, width)
        settings = replace(SETTINGS, batch=batch) if batch else SETTINGS
        rot, reports = learn_rotations(y[..., at:at + width], eye, groups, bits, seed + k, block, settings)
        blocks.append(rot)
        out.extend(reports)
        at += width
    return torch.stack([torch.block_diag(*(b[p] for b in blocks)) if len(blocks) > 1 else blocks[0][p]
                        for p in range(y.shape[0])])


def _groups_within(groups: tuple[int, ...], a: int, b: int) -> list[int]:
    """The widths of the groups (consecutive, from channel 0) cut to channels [a, b)."""
    out, at = [], 0
    for g in groups:
        lo, hi = max(at, a), min(at + g, b)
        if hi > lo:
            out.append(hi - lo)
        at += g
    return out


def _residual_parts(cfg: ModelConfig, quant: QuantConfig) -> list[tuple[list[int], int]]:
    """U_A's subspaces (layout.residual_blocks: low, then mlp_gate_up's extra 8-bit block where
    --gate-up-high-fraction makes one, then high), each with the group widths and bits of the
    stricter of the two residual-stream linears: attn_qkv, which holds the low and mid blocks at
    4 bits and the high one at 8. The blocks are whole groups of attn_qkv's layout wherever
    --group-size splits them (auto always); a group spanning two blocks (--group-size 0) is fitted
    as its part in each."""
    groups = role_layouts(cfg, quant, warn=False)["attn_qkv"].group_sizes
    low, mid, high = residual_blocks(cfg.hidden_size, quant)
    low_bits = _quantised_bits(quant.a_bits)
    parts, at = [], 0
    for width, bits in ((low, low_bits), (mid, low_bits), (high, quant.high_bits)):
        if width:
            parts.append((_groups_within(groups, at, at + width), bits))
        at += width
    return parts


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
    # Each observed batch's rows are strided over its 8 windows in order, so quarters of them come
    # from different windows: holding out every fourth quarter checks on unseen windows even when
    # calibration has only one or two batches.
    block = max(1, stats.rows // 4)
    rep_a: list[dict] = []
    y = stats.residual_samples().to(torch.float64) @ bases.u_a
    bases.u_a = bases.u_a @ _learn_parts(y.float()[None], parts_a, seed, block, rep_a)[0]

    # U_B (every layer and KV head) and U_C (every layer): one batched search per part each.
    kv_low = _quantised_bits(quant.kv_bits)
    head_parts = [([cfg.head_dim - r_head], kv_low)] + ([([r_head], quant.high_bits)] if r_head else [])
    u_b, u_c = bases.u_b.clone(), bases.u_c.clone()
    layers, heads = range(cfg.num_layers), range(cfg.num_kv_heads)
    values = _rows([stats.value_samples(i, h) for i in layers for h in heads], [u_b[i, h] for i in layers for h in heads])
    keys = _rows([stats.key_samples(i) for i in layers], [u_c[i] for i in layers])
    rep_b: list[dict] = []
    rep_c: list[dict] = []
    learned_b = _learn_parts(values, head_parts, seed + 10, block, rep_b, HEAD_BATCH)
    learned_c = _learn_parts(keys, head_parts, seed + 20, block, rep_c, HEAD_BATCH)
    bases.u_b = u_b @ learned_b.view(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, cfg.head_dim)
    bases.u_c = u_c @ learned_c
    report = {"U_A": _summary(rep_a), "U_B": _summary(rep_b), "U_C": _summary(rep_c)}
    log.info("learned rotations, relative quantisation error of held-out calibration rows before -> after: %s",
             report)
    return report


def _rows(samples: list[torch.Tensor], starts: list[torch.Tensor]) -> torch.Tensor:
    """[P, N, d]: each problem's sample rows in its start basis (the same N for all: every layer and
    head saw the same batches; cut to the shortest to be safe)."""
    n = min(s.shape[0] for s in samples)
    return torch.stack([(s[:n].to(torch.float64) @ u).float() for s, u in zip(samples, starts)])
