"""The AOT configuration list (configs.py): complete, well-formed, and covering every launch the
kernels' launch policy makes for the layouts the exporter writes."""

import re
import subprocess
import sys

import pytest
from kernel_cases import LAYOUTS
from helpers import layout

from resq_export.kernels import launch
from resq_export.kernels.configs import all_configs

TYPES = {"*i8", "*u8", "*i32", "*fp32", "*fp16", "*bf16", "i32", "fp32", "constexpr"}


@pytest.fixture(scope="module")
def configs():
    return {c.name: c for c in all_configs()}


def test_names_signatures_and_constexprs(configs):
    assert len(configs) == len(all_configs())
    for name, c in configs.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        assert list(c.signature) == list(c.fn.arg_names), name  # every argument, in order
        assert set(c.signature.values()) <= TYPES, name
        const = [a for a, t in c.signature.items() if t == "constexpr"]
        assert sorted(const) == sorted(c.constexprs), name
        assert set(c.divisible16) <= {a for a, t in c.signature.items() if t != "constexpr"}, name
        assert all(a in c.divisible16 for a, t in c.signature.items() if t.startswith("*")), name
        doc = getattr(c.fn, "fn", c.fn).__doc__
        assert doc and "Grid:" in doc, f"{name}: the docstring must give the grid"


@pytest.mark.parametrize("m", [1, launch.SPLIT_MAX_M + 1, launch.DECODE_MAX_M + 1, 2048])
def test_every_launch_has_a_configuration(configs, m):
    widths = [layout([(4, w, 4, 4), (1, w, 8, 8)]) for w in range(32, 129, 8)]  # --group-size 32..128
    dtypes = list(launch.DTYPE_SUFFIX)
    for lay in widths + [c[1] for c in LAYOUTS]:
        for rank in (0, 4):
            for x_dtype, y_dtype in zip(dtypes, dtypes[1:] + dtypes[:1]):
                for name in launch.linear_kernels(lay.op_parts(), m, rank, x_dtype, y_dtype):
                    assert name in configs, (lay, name)


@pytest.mark.parametrize("n", [96, 576, 1536, 2048, 8192, 11008, 14336, 18944, 28672])
def test_every_hadamard_size_has_a_configuration(configs, n):
    from resq_export.algo.hadamard import hadamard_left_factor

    a = hadamard_left_factor(n)[0].shape[0]
    assert all(name in configs for name in launch.hadamard_kernels(n, a))


def test_configs_module_imports_no_triton():
    code = "import sys, resq_export.kernels.configs; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_docs_quote_the_gpu_semantics_of_ops_json():
    """ops.json is the one source of the GPU float semantics; docs/ops.md quotes them word for word."""
    from pathlib import Path

    from resq_export.export.spec import load_spec

    ops_md = (Path(__file__).resolve().parents[2] / "docs" / "ops.md").read_text()
    texts = [s["gpu_semantics"] for s in load_spec()["ops"].values() if "gpu_semantics" in s]
    assert len(texts) == 3
    for text in texts:
        assert text in ops_md


@pytest.mark.parametrize("d", list(range(16, 257, 8)) + [30, 80, 96, 112])
def test_every_kv_layout_has_configurations(configs, d):
    """Every head_dim the kernels take, at the exporter's high-channel shares (int(D * fraction)), every
    bit pair, GQA 1-16, with and without U_C: each launch names a compiled configuration."""
    from resq_export.kernels.kv_launch import KVAttrs, kv_kernels

    for r in sorted({int(d * f) for f in (0.0, 0.0625, 0.125)}):
        for lo, hi in ((4, 8), (8, 8), (4, 4), (8, 4)):
            if (lo == 4 and (d - r) % 2) or (hi == 4 and r % 2):
                continue  # 4-bit parts have even widths (ops.json)
            for group in (1, 4, 7, 16):
                for rotation in (False, True):
                    for name in kv_kernels(KVAttrs(2 * group, 2, d, r, lo, hi), 1, rotation):
                        assert name in configs, (d, r, lo, hi, name)
