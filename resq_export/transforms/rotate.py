"""Weight surgery on a float Decoder, each step exactly output-preserving without quantisation.

Linear weight W is [out, in] and y = x W^T: a basis U on the input side is W <- W U (the runtime
feeds x U), on the output side W <- U^T W. Arithmetic in float64, stored back in float32.
"""

from __future__ import annotations

import torch

from ..algo.hadamard import apply_down_hadamard
from ..decoder import FloatLinear, Layer
from ..models.config import ModelConfig


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


F64_BLOCK_ELEMENTS = 1 << 22  # a float64 block of 32 MB: whole-matrix float64 copies of an 8B MLP are 1 GB each


def _by_rows(w: torch.Tensor, fn) -> torch.Tensor:
    """fn (row-wise float64 arithmetic) applied to blocks of rows of w, each rounded to float32:
    the same arithmetic per row as on the whole matrix (tested), in a fraction of the memory."""
    out = torch.empty(w.shape, dtype=torch.float32)
    step = max(1, F64_BLOCK_ELEMENTS // max(w.shape[1], 1))
    for a in range(0, w.shape[0], step):
        out[a:a + step] = fn(_f64(w[a:a + step]))
    return out


def _by_columns(w: torch.Tensor, fn) -> torch.Tensor:
    """As _by_rows, for column-wise arithmetic (a product from the left)."""
    return _by_rows(w.T, lambda block: fn(block.T).T).T.contiguous()


# Each transform exists per layer (the quantiser streams one layer at a time) and, as a loop over
# the layers, for a whole Decoder (tests of exactness).

def fold_layer_norms(layer: Layer) -> None:
    attn_norm, mlp_norm = _f64(layer.attn_norm), _f64(layer.mlp_norm)
    layer.qkv.weight = _by_rows(layer.qkv.weight, lambda w: w * attn_norm)
    layer.gate_up.weight = _by_rows(layer.gate_up.weight, lambda w: w * mlp_norm)
    layer.attn_norm = layer.mlp_norm = None


def fold_head_norm(head_rows: torch.Tensor, final_norm: torch.Tensor) -> torch.Tensor:
    """lm_head rows [n, hidden] with the final RMSNorm weight folded into their input columns."""
    return (_f64(head_rows) * _f64(final_norm)).float()


def tied_head_factor(factor: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A tied head's factor after U on the residual stream: embed @ factor @ U = (embed @ U) @ (U^T factor U)."""
    return (u.T @ _f64(factor) @ u).float()


def rotate_rows(rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Rows of a weight, the embedding or the (input side of the) head in the basis u."""
    return _by_rows(rows, lambda w: w @ u)


def _input_side(lin: FloatLinear, u: torch.Tensor) -> None:
    lin.weight = rotate_rows(lin.weight, u)


def _output_side(lin: FloatLinear, u: torch.Tensor) -> None:
    lin.weight = _by_columns(lin.weight, lambda w: u.T @ w)
    if lin.bias is not None:
        lin.bias = (_f64(lin.bias) @ u).float()


def rotate_layer_residual(layer: Layer, u: torch.Tensor) -> None:
    _input_side(layer.qkv, u)
    _input_side(layer.gate_up, u)
    _output_side(layer.o, u)
    _output_side(layer.down, u)


def rotate_layer_values(cfg: ModelConfig, layer: Layer, u: torch.Tensor) -> None:
    hd, nq = cfg.head_dim, cfg.num_heads * cfg.head_dim
    w, b = layer.qkv.weight.clone(), layer.qkv.bias  # only the value rows change, each head's once
    for h in range(cfg.num_kv_heads):
        rows = slice(nq + cfg.num_kv_heads * hd + h * hd, nq + cfg.num_kv_heads * hd + (h + 1) * hd)
        w[rows] = (u[h].T @ _f64(w[rows])).float()
        if b is not None:
            b = b.clone()
            b[rows] = (_f64(b[rows]) @ u[h]).float()
    layer.qkv.weight, layer.qkv.bias = w, b
    wo = _f64(layer.o.weight)
    for j in range(cfg.num_heads):
        cols = slice(j * hd, (j + 1) * hd)
        wo[:, cols] = wo[:, cols] @ u[j // cfg.kv_group]
    layer.o.weight = wo.float()


def set_layer_down_rotation(layer: Layer, left: torch.Tensor) -> None:
    layer.down.weight = _by_rows(layer.down.weight, lambda w: apply_down_hadamard(w, left))
    layer.down_rotation = left.float()


def o_input_permutation(num_heads: int, head_dim: int, high_per_head: int) -> torch.Tensor:
    """[low parts of all heads | high parts of all heads]: the 8-bit channels of each head (its last
    high_per_head) gathered at the end of the o_proj input."""
    low = [j * head_dim + c for j in range(num_heads) for c in range(head_dim - high_per_head)]
    high = [j * head_dim + c for j in range(num_heads) for c in range(head_dim - high_per_head, head_dim)]
    return torch.tensor(low + high, dtype=torch.long)


def permute_layer_o(layer: Layer, perm: torch.Tensor) -> None:
    layer.o.weight = layer.o.weight[:, perm].contiguous()
    layer.o_input_perm = perm
