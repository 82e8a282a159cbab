"""Layouts the kernels are tested on: (name, layout, out features). Group widths 72 (SmolLM2), 112
(Qwen2.5-0.5B), 64 and per-head widths that are not multiples of 64 (padding); more than
GPU_CHUNK_GROUPS groups in a part (several runs); every activation/weight bit combination the plugin
launches; out features that are no multiple of any tile."""

from helpers import layout

LAYOUTS = [
    ("resq_g72", layout([(7, 72, 4, 4), (1, 72, 8, 8)]), 40),  # SmolLM2's qkv / gate_up with --group-size auto
    ("resq_g112", layout([(4, 112, 4, 4), (2, 112, 8, 8)]), 24),  # Qwen2.5-0.5B's g = 112
    ("down_g64_runs", layout([(19, 64, 4, 4)]), 72),  # 19 groups: runs of 8, 8, 3; no 8-bit part
    ("o_heads", layout([(4, 14, 4, 4), (4, 2, 8, 8)]), 17),  # per-head o_proj widths (padded 14 -> 64)
    ("many_high", layout([(2, 64, 4, 4), (10, 32, 8, 8)]), 9),  # two runs in the 8-bit part too
    ("w4a8", layout([(2, 96, 4, 8), (1, 32, 8, 8)]), 16),  # 8-bit activations on 4-bit weights
    ("w8a8", layout([(3, 64, 8, 8)]), 33),  # no 4-bit part at all
    ("w8a4", layout([(2, 128, 8, 4)]), 20),  # 8-bit weights, 4-bit activations
    ("wide_group", layout([(1, 448, 4, 4), (1, 64, 8, 8)]), 65),  # --group-size 0: one group per part
]
