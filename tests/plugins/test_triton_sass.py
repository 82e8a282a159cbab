"""Compiled-code checks of every embedded Triton cubin, per arch, from its SASS and resource usage
(triton_sass.py): no register spills, shared memory within the arch's opt-in limit, tensor-core
instructions where the kernel has a tl.dot, wgmma in the sm_90a prefill tiles, no FP64 on an RTX
target. Each rule is also shown to fail on a cubin planted to break it (triton_probe_kernel.bad_configs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import triton_sass as S
from resq_export.native import triton as T

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def _checked(lib: Path) -> list[tuple[str, str, list[str]]]:
    """(name, arch, problems) of every row of a library; uses_dot and BLOCK_M from its build manifest."""
    manifest = json.loads((lib.parent / "triton" / "triton_kernels.json").read_text())
    built = {(k["name"], k["arch"]): k for k in manifest["kernels"]}
    out = []
    for row in T.kernels(lib):
        meta = built[(row.name, row.arch)]
        out.append((row.name, row.arch, S.problems(row.cubin, row.arch, row.shared, meta["uses_dot"],
                                                   meta["constexprs"].get("BLOCK_M"))))
    return out


def test_probe_cubins_pass_every_check(probe_triton):
    checked = _checked(probe_triton)
    assert len(checked) == 15
    assert [c for c in checked if c[2]] == []
    # the rules did apply: tensor cores on every GEMM cubin, wgmma in the 64-row tile on sm_90a only
    sass = {(r.name, r.arch): S.disassemble(r.cubin)[0] for r in T.kernels(probe_triton)}
    assert all(S.TENSOR_CORE.search(s) for (name, _), s in sass.items() if name.startswith("probe_gemm"))
    assert S.WGMMA.search(sass[("probe_gemm_m64", "90a")]) and not S.WGMMA.search(sass[("probe_gemm_m16", "90a")])
    assert "IMMA.16832.S8.S8" in sass[("probe_gemm_m64", "89")] and "IMMA.16832.S8.S8" in sass[("probe_gemm_m64", "120")]


def test_project_cubins_pass_every_check(project_triton):
    checked = _checked(project_triton)
    if not checked:
        pytest.skip("resq_export.kernels declares no configuration yet")
    assert [c for c in checked if c[2]] == []


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
    meta, cubin = planted["bad_spill"]  # no divisibility hints: byte loads, 2 KiB of stack on sm_80
    assert any("STACK" in p or "LDL/STL" in p for p in S.problems(cubin, "80", meta["shared"], True, 64))
    meta, cubin = planted["bad_fp64"]
    assert S.problems(cubin, "89", meta["shared"], False, None) == ["FP64 instructions DADD, DMUL"]  # no DFMA: fusion is off
    meta, cubin = planted["bad_smem"]  # 256x256x128 in 5 stages on sm_86
    assert any(p.endswith("bytes of shared memory, sm_86 allows 101376") for p in S.problems(cubin, "86", meta["shared"],
                                                                                             True, 256))
    rows = {(r.name, r.arch): r for r in T.kernels(probe_triton)}
    scale = rows[("probe_scale", "89")].cubin  # no tl.dot: a "GEMM" without tensor cores
    assert S.problems(scale, "89", 0, True, None) == ["no IMMA/HMMA/IGMMA instruction"]
    decode = rows[("probe_gemm_m16", "90a")].cubin  # mma.sync: a "prefill tile" without wgmma
    assert S.problems(decode, "90a", 5120, True, 64) == ["no wgmma (IGMMA) instruction"]
