"""Pass 1's result: ResQ's bases (PCA of the calibration activations, rotations inside each subspace)
or QuaRot's random ones, and their surgery into one float layer (exact without quantisation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..algo.hadamard import hadamard_left_factor, sylvester
from ..algo.rotation import block_rotations, haar_orthogonal, pca_basis, subspace_rotations
from .learned import PCA_ROTATIONS, learn_subspace_rotations
from ..calib.stats import BasisStatistics
from ..config import QuantConfig
from ..decoder import Decoder, KVCache, Layer
from ..layout import high_channels, residual_blocks
from ..models.config import ModelConfig
from ..transforms import rotate


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


def _variance_share(eigvals: torch.Tensor, n_high: int) -> float:
    return float(eigvals[-n_high:].sum() / eigvals.sum()) if n_high else 0.0


def compute_bases(cfg: ModelConfig, quant: QuantConfig, stats: BasisStatistics | None) -> Bases:
    """U_A, U_B, U_C (PCA + subspace rotations, or random), U_D and the o_proj permutation."""
    bases = Bases()
    gen = torch.Generator().manual_seed(quant.seed)
    r_res, r_head = high_channels(cfg.hidden_size, quant), high_channels(cfg.head_dim, quant)
    if quant.rotation in PCA_ROTATIONS:
        eig_a, u_a = pca_basis(stats.residual.finalize())
        # PCA (ascending) x diag(R_low, R_mid, R_high): attn_qkv's 8-bit part is the high block,
        # mlp_gate_up's the mid and high blocks (R_mid empty unless --gate-up-high-fraction is larger)
        blocks = residual_blocks(cfg.hidden_size, quant)
        bases.u_a = u_a @ block_rotations(blocks, gen)
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
        if blocks[1]:  # mlp_gate_up's own 8-bit share (the default's report stays as it was)
            r_gate = blocks[1] + blocks[2]
            bases.report["variance_in_high_subspace"]["U_A_gate_up"] = _variance_share(eig_a, r_gate)
            bases.spectra["high_channels"]["U_A_gate_up"] = r_gate
        if quant.rotation == "learned":
            bases.report["learned_rotation"] = learn_subspace_rotations(cfg, quant, bases, stats)
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
