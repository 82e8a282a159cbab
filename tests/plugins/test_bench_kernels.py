"""tools/bench_kernels.py's CPU side (it times on a GPU only): the shapes it runs, its arguments, the
dated record it writes from the medians (here from made-up timings), its refusals without a library."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "tools" / "bench_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llama3_8b_shapes_and_token_counts(bench):
    """K x N of Llama-3-8B's 4096x4096, gate/up and down projections, M = 1, 16, 128, 2048; the op's K
    parts add up to K (ResQ: 1/8 of the channels at 8 bits; down_proj all 4-bit in groups of 64)."""
    assert [(name, p.k, n) for name, n, p in bench.GEMMS] == [
        ("4096x4096", 4096, 4096), ("4096x14336", 4096, 14336), ("14336x4096", 14336, 4096)]
    assert bench.MS == [1, 16, 128, 2048] and bench.parse_args([]).m == bench.MS
    qkv, down = bench.GEMMS[0][2], bench.GEMMS[2][2]
    assert (qkv.k_low, qkv.low_groups, qkv.high_groups) == (3584, 28, 4)
    assert (down.k_low, down.low_groups, down.high_groups) == (14336, 224, 0)
    # the rotation beyond the L2: 4x a 50 MiB L2 over 4096x4096's 10 MiB of codes, scales and sums -> 20 copies
    assert bench.input_sets(bench.weight_bytes(4096, qkv), 50 * 2**20) == 20
    assert bench.input_sets(10**12, 50 * 2**20) == 2


def test_record_from_fake_timings(bench):
    """Every shape and M in the table with the ratios computed from the medians given."""
    rows = [bench.gemm_row(name, m, p.k, n, p, fp16_ms=2.0, gemm_ms=0.5, linear_ms=0.55, sets=[3, 22],
                           timing=["graph", "graph"])
            for name, n, p in bench.GEMMS for m in bench.MS]
    meta = {"device": "NVIDIA H100 80GB HBM3", "sm": "90", "date": "2026-12-05 09:40 UTC", "torch": "2.11",
            "cuda": "13.0", "library": "build/plugins/libresq_triton.so", "versions": "triton 3.9.0; ptxas 13.0",
            "command": "python tools/bench_kernels.py", "copy_gbps": 2900.0, "reps": 100}
    text = bench.markdown(rows, meta)
    assert text.startswith("# resq kernels against FP16, 2026-12-05 09:40 UTC\n")
    table = [line for line in text.splitlines() if line.startswith("| 4096x") or line.startswith("| 14336x")]
    assert [(c.split("|")[1].strip(), int(c.split("|")[2])) for c in table] == [
        (name, m) for name, _, _ in bench.GEMMS for m in bench.MS]
    assert all("| 2.0000 | 0.5000 | 4.00 | 0.5500 | 3.64 | +10 % |" in line for line in table), table[0]
    assert "decode attention" not in text  # no attention rows given: no empty table


def test_refuses_without_the_library(bench, tmp_path, capsys):
    assert bench.main(["--lib", str(tmp_path / "none.so")]) == 1
    assert capsys.readouterr().out.startswith(f"error: {tmp_path / 'none.so'} is missing")
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--m", "0"])
    assert exc.value.code == 2


def test_decode_attention_shapes_bytes_and_record(bench):
    """Llama-3-8B's heads at batch 1 and 16, contexts 4k, 16k, 32k; the bytes one decode step reads (a
    cached row of 56 + 16 code bytes, two float32 scales and two zero points, for K and for V; FP16: 2
    bytes per value); one table row per (batch, context) with the ratio of the medians given."""
    assert bench.BATCHES == [1, 16] and bench.CONTEXTS == [4096, 16384, 32768]
    assert bench.kv_bytes(1, 4096) == (2 * 8 * 4096 * 82, 2 * 8 * 4096 * 128 * 2)
    rows = [{"kind": "decode_attention", "batch": b, "context": c, "fp16_sdpa_ms": 0.04, "resq_ms": 0.01,
             "resq_f32q_ms": 0.0125, "resq_append_ms": 0.003, "speedup": 4.0, "fp16_gbps": 3000.0,
             "resq_gbps": 2500.0, "sets": [2, 3], "timing": ["graph", "graph"]}
            for b in bench.BATCHES for c in bench.CONTEXTS]
    meta = {"device": "NVIDIA H200", "sm": "90", "date": "2026-12-05 12:00 UTC", "torch": "2.11", "cuda": "13.0",
            "library": "libresq_triton.so", "versions": "triton 3.9.0", "command": "python tools/bench_kernels.py",
            "copy_gbps": 4000.0, "reps": 100}
    table = [line for line in bench.markdown(rows, meta).splitlines() if line.startswith("| 1 |")
             or line.startswith("| 16 |")]
    assert [(int(r.split("|")[1]), int(r.split("|")[2])) for r in table] == [
        (b, c) for b in bench.BATCHES for c in bench.CONTEXTS]
    assert all("| 0.0400 | 0.0100 | 4.00 | 3000 / 2500 | 0.0125 | 0.0030 | graph / graph |" in r for r in table), table[0]


def test_prefill_attention_shapes_bytes_and_record(bench):
    """Prefill at Llama-3-8B's heads, batch 1, S = 2k and 8k against FP16 flash attention: the compulsory
    bytes of one launch (docs/benchmarks-gpu.md's table: ours q and y in float32 plus the S cached K/V rows,
    69.8 MB at 2k; FP16 q, k, v, o: 41.9 MB) and one table row per S with the ratio of the medians given."""
    assert bench.PREFILLS == [2048, 8192]
    assert bench.prefill_bytes(2048) == (2 * 32 * 2048 * 128 * 4 + 2 * 8 * 2048 * 82, 2 * 40 * 2048 * 128 * 2)
    assert [round(b / 1e6, 1) for b in bench.prefill_bytes(8192)] == [279.2, 167.8]
    rows = [{"kind": "prefill_attention", "batch": 1, "seq": s, "fp16_flash_ms": 0.05, "resq_ms": 0.075,
             "resq_f32q_ms": 0.08, "resq_append_ms": 0.01, "ratio": 1.5, "baseline": "flash, enable_gqa",
             "configs": ["kv_prefill_d128_r16_k4_h8_f16", "kv_prefill_d128_r16_k4_h8"], "sets": [2, 3],
             "timing": ["graph", "graph"]} for s in bench.PREFILLS]
    meta = {"device": "NVIDIA H100 80GB HBM3", "sm": "90", "date": "2026-12-05 15:00 UTC", "torch": "2.11",
            "cuda": "13.0", "library": "libresq_triton.so", "versions": "triton 3.9.0",
            "command": "python tools/bench_kernels.py", "copy_gbps": 2900.0, "reps": 100}
    text = bench.markdown(rows, meta)
    table = [line for line in text.splitlines() if line.startswith("| 1 | 2048 |") or line.startswith("| 1 | 8192 |")]
    assert len(table) == 2 and "| prefill attention, batch | S | FP16 flash ms |" in text
    assert all("| 0.0500 | 0.0750 | 1.50 | 0.0800 | 0.0100 | flash, enable_gqa | graph / graph |" in r
               for r in table), table[0]
    # the configurations the rows time are compiled (a float16 q as SDPA's, a float32 q as the plugin's)
    import torch

    from resq_export.kernels.kv_launch import KVAttrs, prefill_name

    a = KVAttrs(*bench.KV_HEADS)
    assert [prefill_name(a, s, dt) for s in bench.PREFILLS for dt in (torch.float16, torch.float32)] == [
        "kv_prefill_d128_r16_k4_h8_f16", "kv_prefill_d128_r16_k4_h8"] * 2


def test_attention_only_and_no_attention_exclude_each_other(bench):
    assert bench.parse_args(["--attention-only"]).attention_only
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--attention-only", "--no-attention"])
    assert exc.value.code == 2


def test_prefill_limits_are_the_ones_docs_give(bench, capsys):
    """`bench_kernels.py --limits` (no GPU) prints the prefill launch's counts and limit times; the two
    tables of docs/benchmarks-gpu.md ("Limits of one prefill launch") are that output verbatim. The
    pairs: ours computes 68.2 M (query head, key) pairs at 2k (the causal triangle's 67.1 M plus the
    diagonal tiles), 576 MMA FLOPs each."""
    work = bench.prefill_work(2048)
    assert work["resq_pairs"] == 8 * 128 * 32 * (64 * 65 // 2) and work["fp16_pairs"] == 32 * 2048 * 2049 // 2
    assert work["resq_flop"] == 576 * work["resq_pairs"]
    assert bench.main(["--limits"]) == 0
    printed = capsys.readouterr().out
    assert printed == bench.prefill_limits_markdown()
    doc = (ROOT / "docs" / "benchmarks-gpu.md").read_text()
    for table in printed.strip().split("\n\n"):
        assert table in doc, table.splitlines()[0]


def test_every_table_row_has_its_headers_columns(bench):
    """A record of all three kinds: each table (GEMM, decode, prefill) is a header, a separator and
    rows with the header's number of cells, one blank line apart (a table whose lines disagree does
    not render)."""
    meta = {"device": "NVIDIA H100 80GB HBM3", "sm": "90", "date": "2026-12-05 15:00 UTC", "torch": "2.11",
            "cuda": "13.0", "library": "libresq_triton.so", "versions": "triton 3.9.0",
            "command": "python tools/bench_kernels.py", "copy_gbps": 2900.0, "reps": 100}
    name, n, parts = bench.GEMMS[0]
    rows = [bench.gemm_row(name, 16, parts.k, n, parts, fp16_ms=2.0, gemm_ms=0.5, linear_ms=0.55, sets=[3, 22],
                           timing=["graph", "graph"]),
            {"kind": "decode_attention", "batch": 1, "context": 4096, "fp16_sdpa_ms": 0.04, "resq_ms": 0.01,
             "resq_f32q_ms": 0.0125, "resq_append_ms": 0.003, "speedup": 4.0, "fp16_gbps": 3000.0,
             "resq_gbps": 2500.0, "sets": [2, 3], "timing": ["graph", "graph"]},
            {"kind": "prefill_attention", "batch": 1, "seq": 2048, "fp16_flash_ms": 0.05, "resq_ms": 0.075,
             "resq_f32q_ms": 0.08, "resq_append_ms": 0.01, "ratio": 1.5, "baseline": "flash", "sets": [2, 3],
             "timing": ["graph", "eager"]}]
    tables = [block.splitlines() for block in bench.markdown(rows, meta).split("\n\n") if block.startswith("| ")]
    assert [t[0].split("|")[1].strip() for t in tables] == [
        "GEMM K x N", "decode attention, batch", "prefill attention, batch"]
    for table in tables:
        header, separator, *body = table
        cells = header.count("|")
        assert separator == "|" + "---|" * (cells - 1), table
        assert len(body) == 1 and body[0].count("|") == cells, table
