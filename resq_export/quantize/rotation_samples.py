"""Pass 1's observer for `--rotation learned`: ResQ's second moments plus a fixed subset of the
activation rows themselves, which the learned rotations are fitted to (algo/learned_rotation.py).

The rows are kept in the float frame of pass 1 (before any basis): the residual stream's inputs to
attn_qkv and mlp_gate_up of every layer (for U_A), the values per layer and KV head (U_B) and the
keys after RoPE per layer (U_C). A fixed stride over each batch's tokens picks them, so the choice
depends only on the calibration windows, and they checkpoint with the statistics (a resumed run
learns from the same rows)."""

from __future__ import annotations

import torch

from ..calib.stats import BasisStatistics

ROWS_PER_CALL = 128  # rows from each observed batch (8 windows): 61k residual rows on SmolLM2 (141 MB)


def _pick(x: torch.Tensor, rows: int) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    stride = max(1, flat.shape[0] // rows)
    return flat[stride // 2::stride][:rows].to(torch.float32).clone()


class RotationSamples(BasisStatistics):
    def __init__(self, hidden: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 rows_per_call: int = ROWS_PER_CALL):
        super().__init__(hidden, num_layers, num_kv_heads, head_dim)
        self.rows = rows_per_call
        self.residual_rows: list[torch.Tensor] = []
        self.value_rows = [[[] for _ in range(num_kv_heads)] for _ in range(num_layers)]
        self.key_rows: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def linear_input(self, layer: int, role: str, x: torch.Tensor) -> None:
        super().linear_input(layer, role, x)
        if role in ("attn_qkv", "mlp_gate_up"):
            self.residual_rows.append(_pick(x, self.rows))

    def values(self, layer: int, v: torch.Tensor) -> None:
        super().values(layer, v)
        for h in range(v.shape[1]):
            self.value_rows[layer][h].append(_pick(v[:, h], self.rows))

    def keys(self, layer: int, k: torch.Tensor) -> None:
        super().keys(layer, k)
        self.key_rows[layer].append(_pick(k, self.rows))

    # --- what compute_bases reads ---------------------------------------------------------------
    def residual_samples(self) -> torch.Tensor:
        return _cat(self.residual_rows)

    def value_samples(self, layer: int, head: int) -> torch.Tensor:
        return _cat(self.value_rows[layer][head])

    def key_samples(self, layer: int) -> torch.Tensor:
        return _cat(self.key_rows[layer])

    # --- checkpointing: the rows travel with the sums -------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        sums, counts = super().state()
        rows = {"rows.residual": self.residual_samples()}
        for i, heads in enumerate(self.value_rows):
            rows.update({f"rows.values.{i}.{h}": _cat(r) for h, r in enumerate(heads)})
            rows[f"rows.keys.{i}"] = self.key_samples(i)
        return {**sums, **rows}, counts

    def load_state(self, sums: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
        super().load_state(sums, counts)
        self.residual_rows = _kept(sums["rows.residual"])
        for i, heads in enumerate(self.value_rows):
            for h in range(len(heads)):
                heads[h] = _kept(sums[f"rows.values.{i}.{h}"])
            self.key_rows[i] = _kept(sums[f"rows.keys.{i}"])


def _cat(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(rows) if rows else torch.zeros(0, 0)


def _kept(rows: torch.Tensor) -> list[torch.Tensor]:
    return [rows.clone()] if rows.numel() else []  # layers not reached yet have none
