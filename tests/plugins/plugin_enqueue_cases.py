"""The cases of the plugins' enqueue check (tools/op_enqueue_check.py), written to one file that the
check reads here under Triton's interpreter and on a GPU machine, where neither the tiny models nor
transformers are needed:
- layer 0's ResQMixedLinearPrepared and ResQHadamard nodes of tiny models' TensorRT flavour (q/k/v
  bias and GQA with LQER; 8-bit-activation LQER; all-8-bit W8A8), with the INT attributes and the
  initializers the export wrote, on activations of one token per GEMM tile (split decode, small,
  prefill), each with what the reference executor gives (QuantLinear.gpu_reference,
  hadamard_gpu_reference);
- random layouts the tiny models lack: a group width that is not a multiple of 64 (SmolLM2's 72),
  several runs of groups, a Hadamard of 128-channel blocks.
A case: {"case", "op", "fields", "inputs" (the node's tensors in its order, X first), "expected",
"policy" (the configurations launch.py launches for it)}."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import activations, exported_nodes, layout, random_linear

from resq_export.algo.hadamard import hadamard_left_factor
from resq_export.kernels.launch import DECODE_MAX_M, SPLIT_MAX_M, Prepared, hadamard_kernels, linear_kernels
from resq_export.layout import OpParts
from resq_export.reference import hadamard_gpu_reference

TINY = ("resq_lqer", "lqer", "w8a8")  # artifacts of tests/conftest.py
TOKENS = (1, SPLIT_MAX_M + 1, DECODE_MAX_M + 5)  # the split decode, small and prefill tiles: 1, 5, 21
PART_FIELDS = ("k_low", "low_groups", "high_groups", "a_bits_low", "a_bits_high")  # OpParts after k
RANDOM_LINEARS = [  # (label, layout, N, LQER rank)
    ("random_g72_bias_lqer", layout([(7, 72, 4, 4), (1, 72, 8, 8)]), 64, 4),  # SmolLM2's qkv groups
    ("random_g64_3runs", layout([(19, 64, 4, 4)]), 40, 0),  # 19 groups: 3 runs of 8
    ("random_g72_gate_up_f25", layout([(6, 72, 4, 4), (2, 72, 8, 8)]), 48, 0),  # --gate-up-high-fraction 0.25
]
RANDOM_HADAMARD = (1536, 2)  # (K, rows): 12 blocks of 128 channels


def _linear_case(label: str, fields: dict, weights: list[torch.Tensor], parts, rank: int, gpu_reference, m: int):
    x = activations(m, parts.k, seed=m).reshape(1, m, -1).contiguous()
    return {"case": f"{label} M={m}", "op": "ResQMixedLinearPrepared", "fields": dict(fields),
            "inputs": [x, *weights], "expected": gpu_reference(x.reshape(m, -1)).reshape(1, m, -1).contiguous(),
            "policy": linear_kernels(parts, m, rank)}


def _hadamard_case(label: str, left: torch.Tensor, k: int, rows: int, reference_left: torch.Tensor | None = None):
    """reference_left: the reference executor's own factor, where the node's is the export's copy"""
    x = torch.randn(1, rows, k, generator=torch.Generator().manual_seed(k + rows))
    ref = left if reference_left is None else reference_left
    return {"case": f"{label} rows={rows}", "op": "ResQHadamard", "fields": {}, "inputs": [x, left],
            "expected": hadamard_gpu_reference(x.reshape(rows, k), ref).reshape(1, rows, k),
            "policy": hadamard_kernels(k, left.shape[0])}


def tiny_model_cases(artifacts: dict[str, Path], names=TINY, tokens=TOKENS) -> list[dict]:
    cases = []
    for name in names:
        for node in exported_nodes(artifacts[name], layers=(0,)):
            label = f"{name}{node.name.removeprefix('/model/layers.0').rsplit('/', 1)[0]}"
            weights = [torch.from_numpy(a.copy()).contiguous() for a in node.inputs.values()]
            if node.op == "ResQHadamard":
                cases += [_hadamard_case(label, weights[0], node.in_features, m, node.reference) for m in tokens]
            else:
                # the shape as the plugin reads it from the attributes (an absent part's a_bits, which the
                # export writes as it likes, names the kernel configuration)
                parts = OpParts(node.in_features, *(node.attrs[a] for a in PART_FIELDS))
                cases += [_linear_case(label, node.attrs, weights, parts, node.attrs.get("lqer_rank", 0),
                                       node.reference.gpu_reference, m) for m in tokens]
    return cases


def random_cases(tokens=TOKENS) -> list[dict]:
    cases = []
    for label, lay, n, rank in RANDOM_LINEARS:
        lin = random_linear(lay, n, rank=rank, bias=True, seed=5)
        parts, prep = lay.op_parts(), Prepared.from_linear(lin)
        fields = {**{f: getattr(parts, f) for f in PART_FIELDS}, "lqer_rank": rank}
        weights = [w for w, present in ((prep.w_low, parts.low_groups), (prep.w_high, parts.high_groups)) if present]
        weights += [prep.wscale, prep.wsum, prep.bias, *(prep.lqer or ())]
        cases += [_linear_case(label, fields, [w.contiguous() for w in weights], parts, rank, lin.gpu_reference, m)
                  for m in tokens]
    k, rows = RANDOM_HADAMARD
    left, _ = hadamard_left_factor(k)
    cases.append(_hadamard_case("random_hadamard", left.float().contiguous(), k, rows))
    return cases


def write_cases(cases: list[dict], path: Path) -> Path:
    """torch.save of plain dicts, lists, strings, ints and tensors: torch.load(weights_only=True) reads it"""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(cases, path)
    return Path(path)
