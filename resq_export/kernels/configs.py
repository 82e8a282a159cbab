"""The compiled configurations of every Triton kernel: the one list that the ahead-of-time build
(plugins/tools, run by CMake) compiles to cubins for each GPU architecture and that the plugins'
C++ loader looks kernels up in by name. The kernel modules say which configurations they need;
nothing here imports Triton until `all_configs()` is called.

Compile every configuration with `enable_fp_fusion=False`: the float32 epilogues are specified
operation by operation (docs/ops.md), and a fused multiply-add would change their bits.

Names (what the launcher looks up; launch.py is the policy in Python):
- act_quant_a{A_BITS_LOW}_a{A_BITS_HIGH}[_f16|_bf16]: the activation quantiser (x float32, or as named).
- mixed_gemm_{decode|small|prefill}_w{W_BITS_LOW}_a{A_BITS_LOW}_a{A_BITS_HIGH}: the GEMM; decode
  (M <= 4) is the split one (then splitk_reduce), small (M <= 16) and prefill the fused ones. w4: the
  linear's weights; w8: LQER's projection x A (A as an all-8-bit weight). A fused w4 tile comes with
  y float32 and, suffixed _f16 / _bf16, float16 / bfloat16 (the float32 result rounded once).
- splitk_reduce[_f16|_bf16] (y's dtype), lqer_quant.
- fwht_b{B}: Walsh-Hadamard blocks of B = 2..16384 channels; hadamard_mix_a{A_PAD}: the left factor
  of order a <= A_PAD (A_PAD = 2..1024, the next power of two >= a; only when a > 1).
- ResQKVCacheAttention (kv_launch.py): kv_rotate (U_C), kv_append_b{BITS_LOW}{BITS_HIGH},
  kv_decode_g{GP}_d{BLOCK_D}_r{BLOCK_R}_b{BITS_LOW}{BITS_HIGH}_al{ALIGN}[_f16|_bf16] (Q float32, or as
  named), kv_combine; the prefill kernel's own (kv_launch.prefill_configs).
"""

from __future__ import annotations

from .kernel_config import ARCHS, KernelConfig, _config, _signature  # noqa: F401  (the one list's types)


def all_configs() -> list[KernelConfig]:
    """Every configuration the plugins may launch."""
    from ..reference import GPU_CHUNK_GROUPS
    from . import launch
    from .act_quant import act_quant_kernel
    from .hadamard import fwht_kernel, hadamard_mix_kernel
    from .lqer import lqer_quant_kernel
    from .mixed_gemm import mixed_gemm_kernel, splitk_reduce_kernel

    f32, i32, i8, u8 = "*fp32", "*i32", "*i8", "*u8"
    act = dict(q_low=u8, q_high=u8, sx=f32, zx=i32)
    lq = dict(qa=i8, sa=f32, lqer_b=i8, lqer_b_scale=f32, bias=f32)
    gemm = dict(q_low=u8, q_high=u8, sx=f32, zx=i32, w_low=i8, w_high=i8, wscale=f32, wsum=i32, partial=f32, **lq)
    pitches = ("gp_low", "gp_high", "act_low_pitch", "act_high_pitch")  # multiples of 32 (groups padded to 64)
    w_pitches = pitches + ("w_low_pitch", "w_high_pitch")
    # x / y in float32, and float16 / bfloat16 where they are the linear's input / output
    dtypes = {"": "*fp32", "_f16": "*fp16", "_bf16": "*bf16"}
    out = []
    for al in (4, 8):
        for ah in (4, 8):
            for sfx, x in dtypes.items():
                out.append(_config(f"act_quant_a{al}_a{ah}{sfx}", act_quant_kernel, dict(act, x=x), launch.ACT_TILE,
                                   pitches, A_BITS_LOW=al, A_BITS_HIGH=ah))
            for wl in (4, 8):
                for tile, (consts, _w, _s) in launch.GEMM_TILES.items():
                    # y is the linear's output only in a fused tile of its weights (w4); xa is float32
                    ys = dtypes if wl == 4 and not consts["SPLIT"] else {"": f32}
                    for sfx, y in ys.items():
                        out.append(_config(f"mixed_gemm_{tile}_w{wl}_a{al}_a{ah}{sfx}", mixed_gemm_kernel,
                                           dict(gemm, y=y), launch.GEMM_TILES[tile], w_pitches, A_BITS_LOW=al,
                                           W_BITS_LOW=wl, A_BITS_HIGH=ah, CHUNK=GPU_CHUNK_GROUPS))
    for sfx, y in dtypes.items():
        out.append(_config(f"splitk_reduce{sfx}", splitk_reduce_kernel, dict(partial=f32, y=y, **lq),
                           launch.REDUCE_TILE))
    out.append(_config("lqer_quant", lqer_quant_kernel, dict(xa=f32, qa=i8, sa=f32), launch.LQER_TILE))
    for log_b in range(1, launch.MAX_B_LOG + 1):
        out.append(_config(f"fwht_b{1 << log_b}", fwht_kernel, dict(x=f32, y=f32, norm="fp32"),
                           launch.fwht_tile(1 << log_b)))
    a_pad = 2
    while a_pad <= launch.MAX_LEFT:
        out.append(_config(f"hadamard_mix_a{a_pad}", hadamard_mix_kernel, dict(y=f32, left=f32),
                           launch.mix_tile(a_pad)))
        a_pad *= 2
    return out + kv_configs()


def kv_configs() -> list[KernelConfig]:
    """ResQKVCacheAttention's configurations: every layout kv_launch.decode_tile accepts (head_dim <= 256,
    at most 32 high channels, 4/8 bits), row loads widened (ALIGN 4) from BLOCK_D 64 on; Q float16 /
    bfloat16 for Llama-3-style heads (the benchmarks; the plugin passes float32)."""
    from . import kv_launch as K
    from .kv_append import kv_append_kernel, kv_rotate_kernel
    from .kv_decode import kv_combine_kernel, kv_decode_kernel

    f32, u8 = "*fp32", "*u8"
    cache = dict(k_codes=u8, k_scales=f32, k_zeros=u8, v_codes=u8, v_scales=f32, v_zeros=u8)
    out = [_config("kv_rotate", kv_rotate_kernel, dict(x=f32, u=f32, y=f32), K.ROTATE_TILE),
           _config("kv_combine", kv_combine_kernel, dict(part_ml=f32, part_acc=f32, y=f32), K.COMBINE_TILE)]
    bit_pairs = [(lo, hi) for lo in (4, 8) for hi in (4, 8)]
    for lo, hi in bit_pairs:
        out.append(_config(f"kv_append_b{lo}{hi}", kv_append_kernel, dict(k_new=f32, v_new=f32, past_length="*i32",
                                                                          **cache), K.APPEND_TILE,
                           BITS_LOW=lo, BITS_HIGH=hi))
    decode = dict(past_length="*i32", part_ml=f32, part_acc=f32, qk_scale="fp32", **cache)
    for block_d in K.KV_HEAD_BLOCKS:
        for block_r in K.KV_HIGH_BLOCKS:
            if block_r > block_d:
                continue
            pairs = bit_pairs if block_r else [(4, 8), (8, 8)]  # no high part: its bits are irrelevant (8)
            for lo, hi in pairs:
                for align in (1, 4) if block_d >= K.KV_WIDE_MIN_D else (1,):
                    block_t, warps = K.decode_shape(block_d, block_r, (lo, hi))
                    tile = ({}, warps, K.DECODE_STAGES)
                    consts = dict(GP=K.KV_MIN_GP, BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_R=block_r, BITS_LOW=lo,
                                  BITS_HIGH=hi, ALIGN=align)
                    name = f"kv_decode_g{consts['GP']}_d{block_d}_r{block_r}_b{lo}{hi}_al{align}"
                    q_types = {"": f32}
                    if (block_d, lo, hi, align) == (128, 4, 8, 4) and block_r in (0, 16):
                        q_types.update({"_f16": "*fp16", "_bf16": "*bf16"})
                    for sfx, q in q_types.items():
                        out.append(_config(name + sfx, kv_decode_kernel, dict(decode, q=q), tile, **consts))
    return out + K.prefill_configs()
