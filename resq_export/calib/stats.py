"""Streaming accumulators (add_batch / finalize) and the observer that collects ResQ's statistics."""

from __future__ import annotations

import torch

from ..algo.finite import check_finite


class SecondMoment:
    """Uncentred second moment sum(x^T x) / count over the last axis, accumulated in float64."""

    def __init__(self, dim: int):
        self.sum = torch.zeros(dim, dim, dtype=torch.float64)
        self.count = 0

    def add_batch(self, x: torch.Tensor, column_block: int = 1024) -> None:
        # Column blocks: no dim x dim temporary (1.6 GB at dim 14336); each element's sum is the
        # same as that of the whole product (tested), and the sum stays exactly symmetric.
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        for c in range(0, x.shape[1], column_block):
            self.sum[:, c:c + column_block] += x.T @ x[:, c:c + column_block]
        self.count += x.shape[0]

    def finalize(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)


class AbsMeanMax:
    """LQER's activation scale: per channel mean |x| over each batch's tokens, max over batches."""

    def __init__(self, dim: int):
        self.value = torch.zeros(dim, dtype=torch.float64)

    def add_batch(self, x: torch.Tensor) -> None:
        mean = x.reshape(-1, x.shape[-1]).abs().to(torch.float64).mean(0)
        self.value = torch.maximum(self.value, mean)

    def finalize(self) -> torch.Tensor:
        return self.value


class BasisStatistics:
    """Observer for one float pass: Σ_A over the q/up inputs of every layer, Σ_B per layer and KV
    head over v_proj outputs, Σ_C per layer over keys after RoPE (all KV heads pooled)."""

    def __init__(self, hidden: int, num_layers: int, num_kv_heads: int, head_dim: int):
        self.residual = SecondMoment(hidden)
        self.values_ = [[SecondMoment(head_dim) for _ in range(num_kv_heads)] for _ in range(num_layers)]
        self.keys_ = [SecondMoment(head_dim) for _ in range(num_layers)]

    def linear_input(self, layer: int, role: str, x: torch.Tensor) -> None:
        check_finite(x, f"layer {layer} {role} input")
        if role in ("attn_qkv", "mlp_gate_up"):
            self.residual.add_batch(x)

    def values(self, layer: int, v: torch.Tensor) -> None:  # [B, n_kv, S, hd]
        check_finite(v, f"layer {layer} values")
        for h, acc in enumerate(self.values_[layer]):
            acc.add_batch(v[:, h])

    def keys(self, layer: int, k: torch.Tensor) -> None:
        check_finite(k, f"layer {layer} keys")
        self.keys_[layer].add_batch(k)

    # --- checkpointing (resume after an interruption) --------------------------------------------
    def _accumulators(self) -> dict[str, SecondMoment]:
        out = {"residual": self.residual}
        for i, (heads, keys) in enumerate(zip(self.values_, self.keys_)):
            out.update({f"values.{i}.{h}": acc for h, acc in enumerate(heads)})
            out[f"keys.{i}"] = keys
        return out

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """(sums, counts): everything needed to continue accumulating exactly where this left off."""
        accs = self._accumulators()
        return {k: a.sum for k, a in accs.items()}, {k: a.count for k, a in accs.items()}

    def load_state(self, sums: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
        for k, acc in self._accumulators().items():
            acc.sum = sums[k].to(torch.float64).clone()
            acc.count = int(counts[k])
