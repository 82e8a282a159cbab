"""Compiled-code checks of every embedded Triton cubin, per arch, from its SASS and resource usage
(triton_sass.py): no register spills, shared memory within the arch's opt-in limit, tensor-core
instructions where the kernel has a tl.dot, wgmma in the sm_90a prefill tiles, no FP64 on an RTX
target. Each rule is also shown to fail on a cubin planted to break it (triton_probe_kernel.bad_configs)."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import triton_sass as S
from resq_export.native import triton as T

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _checked(lib: Path) -> list[tuple[str, str, list[str]]]:
    """(name, arch, problems) of every row of a library, its metadata from the build's manifest
    beside it; the embedded bytes are the cubins the manifest describes."""
    manifest = json.loads((lib.parent / "triton" / "triton_kernels.json").read_text())
    built = {(k["name"], k["arch"]): k for k in manifest["kernels"]}
    rows = T.kernels(lib)
    assert all(built[(r.name, r.arch)]["sha256"] == r.sha256 for r in rows)
    with ThreadPoolExecutor(2) as pool:  # one cuobjdump per cubin, 0.1-0.4 s each
        found = pool.map(lambda r: S.problems(r.cubin, built[(r.name, r.arch)]), rows)
    return [(r.name, r.arch, p) for r, p in zip(rows, found)]


def test_probe_cubins_pass_every_check(probe_triton):
    checked = _checked(probe_triton)
    assert len(checked) == 15
    assert [c for c in checked if c[2]] == []
    # the rules did apply: tensor cores on every GEMM cubin, wgmma in the 64-row tile on sm_90a only
    sass = {(r.name, r.arch): S.sass(r.cubin) for r in T.kernels(probe_triton)}
    assert all(S.TENSOR_CORE.search(s) for (name, _), s in sass.items() if name.startswith("probe_gemm"))
    assert S.WGMMA.search(sass[("probe_gemm_m64", "90a")]) and not S.WGMMA.search(sass[("probe_gemm_m16", "90a")])
    assert "IMMA.16832.S8.S8" in sass[("probe_gemm_m64", "89")] and "IMMA.16832.S8.S8" in sass[("probe_gemm_m64", "120")]


@pytest.fixture(scope="module")
def project_checked(project_triton):
    checked = _checked(project_triton)
    if not checked:
        pytest.skip("resq_export.kernels declares no configuration yet")
    return checked


def test_project_cubins_pass_every_check(project_checked):
    """Every cubin of resq_export.kernels: no spills (49 of 230 spilled before the kernels declared
    their aligned pitches, the last, hadamard_mix_a256 on sm_90a, went with k28's 6b53168), shared
    memory within the opt-in limit, tensor cores in every GEMM, wgmma in the sm_90a prefill tiles,
    no FP64 on the RTX targets."""
    assert [c for c in project_checked if c[2]] == []


def test_prefill_attention_cubins_use_tensor_cores(project_triton):
    """The prefill attention's cubins (kv_launch.prefill_configs, every arch) are embedded, and their
    tl.dot runs on the fp16 tensor cores: mma.sync (HMMA) before Hopper and on sm_120, wgmma (HGMMA)
    on sm_90a, whose 128- and 64-row tiles it serves (the generic rules above take any MMA)."""
    from resq_export.kernels.configs import ARCHS
    from resq_export.kernels.kv_launch import prefill_configs

    rows = {(r.name, r.arch): r for r in T.kernels(project_triton) if r.name.startswith("kv_prefill")}
    assert set(rows) == {(c.name, arch) for c in prefill_configs() for arch in ARCHS}
    assert [(name, arch, p) for (name, arch), row in rows.items() if (p := S.no_fp16_mma(S.sass(row.cubin), arch))] == []


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Cubins made to break one rule each (compiled as the build compiles, not embedded)."""
    out = tmp_path_factory.mktemp("planted")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    run = subprocess.run([sys.executable, str(ROOT / "plugins/tools/compile_triton.py"), str(out),
                          "--configs", "triton_probe_kernel:bad_configs"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    kernels = json.loads((out / "triton_kernels.json").read_text())["kernels"]
    return {k["name"]: (k, (out / k["cubin"]).read_bytes()) for k in kernels}


def test_each_rule_fails_on_its_planted_cubin(planted, probe_triton):
    meta, cubin = planted["bad_spill"]  # no divisibility hints: byte loads, kilobytes of spills on sm_80
    assert [p for p in S.problems(cubin, meta) if "spill" in p] == [
        f"{meta['spill_stores']} bytes spill stores, {meta['spill_loads']} bytes spill loads"]
    assert meta["spill_stores"] > 1000
    meta, cubin = planted["bad_fp64"]
    assert S.problems(cubin, meta) == ["FP64 instructions DADD, DMUL"]  # no DFMA: fusion is off
    meta, cubin = planted["bad_smem"]  # 256x256x128 in 5 stages on sm_86
    assert f"{meta['shared']} bytes of shared memory, sm_86 allows 101376" in S.problems(cubin, meta)
    manifest = json.loads((probe_triton.parent / "triton" / "triton_kernels.json").read_text())
    built = {(k["name"], k["arch"]): k for k in manifest["kernels"]}
    rows = {(r.name, r.arch): r for r in T.kernels(probe_triton)}
    # the float scaler claimed to use tl.dot: a "GEMM" without tensor cores
    as_gemm = dict(built[("probe_scale", "89")], uses_dot=True)
    assert S.problems(rows[("probe_scale", "89")].cubin, as_gemm) == ["no IMMA/HMMA/IGMMA instruction"]
    # the decode tile (mma.sync) claimed to have 64 rows: a "prefill tile" without wgmma
    as_prefill = dict(built[("probe_gemm_m16", "90a")], constexprs={"BLOCK_M": 64})
    assert S.problems(rows[("probe_gemm_m16", "90a")].cubin, as_prefill) == ["no wgmma (IGMMA/HGMMA) instruction"]


_NODOT = '''

@triton.jit
def _nodot(a, b):
    """planted: the product as a broadcast multiply and sum on the CUDA cores, no tl.dot"""
    return tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], 1)


def configs():
    from resq_export.kernels.kernel_config import _config

    types = dict(k_codes="*u8", k_scales="*fp32", k_zeros="*u8", v_codes="*u8", v_scales="*fp32", v_zeros="*u8",
                 past_length="*i32", out="*fp32", qk_scale="fp32", q="*fp32")
    return [_config("kv_prefill_d64_r16_k4_h8", kv_prefill_kernel, types, (dict(BLOCK_M=16, BLOCK_N=16), 4, 1),
                    D_PAD=64, H_PAD=16, KV_BITS=4, HIGH_BITS=8)]
'''


def test_prefill_tensor_core_rule_fails_on_a_prefill_without_tl_dot(project_triton, tmp_path):
    """Negative control of test_prefill_attention_cubins_use_tensor_cores: kv_prefill.py's kernel with every
    tl.dot replaced by a broadcast multiply-and-sum (the same arithmetic on the CUDA cores), compiled as the
    build compiles (one small tile, sm_89 and sm_90a: ~4 s), fails the rule (no HMMA / HGMMA) where the
    embedded cubin of the same name passes it."""
    source = (ROOT / "resq_export" / "kernels" / "kv_prefill.py").read_text().split("# ---- launch policy")[0]
    for call, planted in (("tl.dot(q_lo2, k, dot)", "(dot + _nodot(q_lo2, k))"),
                          ("tl.dot(pw, v, acc * factor[:, None])", "(acc * factor[:, None] + _nodot(pw, v))")):
        assert call in source
        source = source.replace(call, planted)
    source = source.replace("tl.dot(", "_nodot(") + _NODOT
    (tmp_path / "nodot_prefill.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path)])
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "plugins/tools/compile_triton.py"), str(out), "--configs",
                          "nodot_prefill:configs", "--archs", "89,90a"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    built = json.loads((out / "triton_kernels.json").read_text())["kernels"]
    planted = {k["arch"]: (out / k["cubin"]).read_bytes() for k in built}
    assert {arch: S.no_fp16_mma(S.sass(cubin), arch) for arch, cubin in planted.items()} == {
        "89": ["no HMMA instruction"], "90a": ["no HGMMA instruction"]}
    embedded = {r.arch: r.cubin for r in T.kernels(project_triton) if r.name == "kv_prefill_d64_r16_k4_h8"}
    assert all(S.no_fp16_mma(S.sass(embedded[arch]), arch) == [] for arch in planted)
