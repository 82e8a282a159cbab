"""The KV attention plugin's real enqueue on the CPU. KVCacheAttentionPlugin is a thin adapter over the
op's TensorRT-free layer in libresq_triton.so (plugins/kv_attention/kv_attention_op.cpp: the
attributes, which inputs are listed (U_C or not), the tensors' check, the workspace, the copy of
past into present where they are two buffers, the launches). CI drives that layer through ctypes
(resq_op_check / resq_op_enqueue) with the recording launcher, no TensorRT headers needed; where
headers are, the same cases also go through the plugin's creator (plugin_enqueue_harness.cpp). The
recorded launches (U_C, append, then the prefill kernel or flash-decoding and its combine) are
executed by Triton's interpreter on host buffers, the present outputs aliased to the past inputs: a
tiny model's layer-0 attention as its TensorRT flavour was exported (with and without U_C) and a
layout it lacks, a prefill then three decode steps each through the same cache, against the
reference executor: the cache bit for bit, Y within the tolerance of the path taken
(kv_cases.op_atol). tools/op_enqueue_check.py (the runner here) runs the same cases on a GPU.

RESQ_KV_ENQUEUE_CASES=<file> keeps the case file there (for tools/gpu_session.sh to carry)."""

import os
import re
from pathlib import Path

import pytest
import torch
from kv_enqueue_cases import DECODE_STEPS, OP, PREFILL, kv_cases
from plugin_enqueue_cases import write_cases
from test_plugin_enqueue import _check, harness  # noqa: F401  (the harness fixture)

from resq_export.native.triton import OpLibrary, OpRefused


@pytest.fixture(scope="module")
def kv_case_file(artifacts, tmp_path_factory):
    keep = os.environ.get("RESQ_KV_ENQUEUE_CASES")
    path = Path(keep) if keep else tmp_path_factory.mktemp("kv_enqueue") / "kv_enqueue_cases.pt"
    return write_cases(kv_cases(artifacts), path)


def _assert_cases(report: dict) -> None:
    cases = report["cases"]
    assert [(c["case"], c.get("refused")) for c in cases if c.get("refused")] == []
    steps = [(c["case"], s) for c in cases for s in c["steps"]]
    # the cache bit for bit (and an unaliased step's past untouched), Y within its tolerance
    assert [(name, s["lengths"], s["cache_differ"]) for name, s in steps if s["cache_differ"]] == []
    assert [(name, s["lengths"], s["y_err"], s["atol"]) for name, s in steps if not s["y_err"] <= s["atol"]] == []
    # a prefill kernel step also the kernel's own arithmetic (kv_rounding's rule; op_atol is a worst case)
    kernel = [(name, s["kernel_err"], s["kernel_share"], s["kernel_ok"]) for name, s in steps if "kernel_err" in s]
    assert len(kernel) == 3 and [k for k in kernel if not k[3]] == []
    # the C++ launch code launches what kv_launch's policy names, U_C only with eleven inputs
    assert [(name, s["seq"], s["launches"]) for name, s in steps if s["launches"] != s["policy"]] == []
    by_case = {c["case"]: c["steps"] for c in cases}
    assert len(cases) == 4 and [len(s) for s in by_case.values()] == [1 + DECODE_STEPS] * 2 + [1, 1 + DECODE_STEPS]
    (rotated,) = [s for name, s in by_case.items() if name.endswith(" with U_C")]
    (plain,) = [s for name, s in by_case.items() if "without U_C" in name]
    assert all(s["launches"][:2] == ["kv_rotate"] * 2 for s in rotated)
    assert all("kv_rotate" not in s["launches"] for s in plain)
    # past_length 0 and capacity - S met; an unaliased step (present its own buffer) among them
    assert [0, 3] in [s["lengths"] for s in rotated] and not rotated[-1]["aliased"]
    assert plain[-1]["lengths"][0] == 19 + PREFILL + DECODE_STEPS - 1
    # the prefill steps on the tensor-core prefill kernel (D 16 in a 64-channel window, r 2 in 16), a 4-bit
    # high part's on flash-decoding; every decode step on flash-decoding and its combine
    prefill = {name: s[0]["launches"][-1] for name, s in by_case.items()}
    assert sorted(prefill.values()) == ["kv_combine"] + ["kv_prefill_d64_r16_k4_h8"] * 3
    assert all(s["launches"][-1] == "kv_combine" for _, s in steps if s["seq"] == 1)


def test_kv_attention_op_layer_enqueue_replayed_by_the_interpreter(project_triton, kv_case_file, tmp_path):
    """CI's route: resq_op_check / resq_op_enqueue of libresq_triton.so, no TensorRT headers."""
    report = _check(project_triton, kv_case_file, tmp_path)
    assert report["route"] == "resq_op_enqueue" and report["failed"] == 0
    _assert_cases(report)


def test_kv_attention_plugin_enqueue_through_its_creator(project_triton, harness, kv_case_file, tmp_path):  # noqa: F811
    """Where TensorRT headers are: the same cases through libresq_plugins.so's creator, configurePlugin,
    getWorkspaceSize, onShapeChange and enqueue (the adapter over the layer above)."""
    lib, why_not = harness
    if lib is None:
        pytest.skip(why_not)
    report = _check(project_triton, kv_case_file, tmp_path, "--harness", str(lib))
    assert report["route"] == "plugin creator (harness)" and report["failed"] == 0
    _assert_cases(report)


def _node(capacity=12, batch=2, seq=3, rotation=True, fields=None):
    """A well-formed node of the tiny models' attention layout: its fields, inputs and outputs."""
    fields = fields or dict(num_heads=4, num_kv_heads=2, head_dim=16, high_channels=2, kv_bits=4, high_bits=8)
    h, hkv, d = fields["num_heads"], fields["num_kv_heads"], fields["head_dim"]
    row, groups = (d - fields["high_channels"]) * fields["kv_bits"] // 8 + fields["high_channels"] * fields[
        "high_bits"] // 8, 2 if fields["high_channels"] else 1
    caches = [torch.zeros(batch, hkv, capacity, n, dtype=dt) for _ in "kv"
              for n, dt in ((row, torch.uint8), (groups, torch.float32), (groups, torch.uint8))]
    inputs = [torch.zeros(batch, h, seq, d), torch.zeros(batch, hkv, seq, d), torch.zeros(batch, hkv, seq, d), *caches,
              torch.zeros(batch, dtype=torch.int32)] + ([torch.eye(d)] if rotation else [])
    return fields, inputs, [torch.zeros(batch, seq, h * d), *caches]


BAD_KV_NODES = {  # what the layer (the creator, configurePlugin) refuses, and its words
    "missing attribute": (lambda f, i, o: f.pop("head_dim"), r"missing attribute head_dim"),
    "contract": (lambda f, i, o: f.update(kv_bits=6), r"attributes outside the op contract .*kv_bits 6"),
    "gpu group": (lambda f, i, o: f.update(num_heads=64, num_kv_heads=2),
                  r"<= 16 query heads per KV head \(ops.json \"gpu\"\)"),
    "ten inputs": (lambda f, i, o: i.pop(), None),  # a node without U_C: accepted
    "nine inputs": (lambda f, i, o: i.__delitem__(slice(9, None)),
                    r"got 9 inputs, the op takes 10 \(without key_rotation\) or 11"),
    "cache row": (lambda f, i, o: i.__setitem__(3, torch.zeros(2, 2, 12, 16, dtype=torch.uint8)),
                  r"cache input 3 is \[2, 2, 12, 16\], not \[B, 2, L, 9\] \(the stored row of op contract v3"),
    "capacity": (lambda f, i, o: i.__setitem__(7, torch.zeros(2, 2, 11, 2)),
                 r"cache input 7 is \[2, 2, 11, 2\], not \[B, 2, L, 2\]"),
    "U_C dims": (lambda f, i, o: i.__setitem__(10, torch.eye(8)), r"key_rotation is \[8, 8\], not \[16, 16\] \(U_C\)"),
    "Q heads": (lambda f, i, o: i.__setitem__(0, torch.zeros(2, 3, 3, 16)), r"Q is \[2, 3, 3, 16\], not \[B, 4, S, 16\]"),
    "past_length": (lambda f, i, o: i.__setitem__(9, torch.zeros(3, dtype=torch.int32)), r"past_length is \[3\], not \[B\]"),
    "dtype": (lambda f, i, o: i.__setitem__(9, torch.zeros(2)), r"input 9 is float32, the op takes int32"
                                                                 r"|supportsFormatCombination of tensor 9"),
    "present": (lambda f, i, o: o.__setitem__(2, torch.zeros(2, 2, 13, 2)), r"output 2 is \[2, 2, 13, 2\], not its past's"),
    "S beyond L": (lambda f, i, o: [i.__setitem__(n, torch.zeros(2, h, 13, 16)) for n, h in ((0, 4), (1, 2), (2, 2))],
                   r"13 new positions do not fit a cache of 12"),
}


@pytest.mark.parametrize("what", BAD_KV_NODES)
def test_kv_nodes_that_do_not_fit_are_refused_in_one_line(project_triton, harness, what):  # noqa: F811
    """The creator's and configurePlugin's checks (the layer's, and the plugin's where headers are): attributes
    outside the contract or the GPU kernels, tensors that do not fit them, refused with the reason, one line,
    when the engine is built; a node without U_C (ten inputs) is one of the op's two forms."""
    fields, inputs, outputs = _node()
    change, said = BAD_KV_NODES[what]
    change(fields, inputs, outputs)
    for lib in [OpLibrary(project_triton)] + ([OpLibrary(project_triton, harness[0])] if harness[0] else []):
        if said is None:
            assert lib.check(OP, fields, inputs, outputs) > 0, lib.route
            continue
        with pytest.raises(OpRefused, match=said) as refused:
            lib.check(OP, fields, inputs, outputs)
        assert "\n" not in str(refused.value), lib.route


def test_kv_enqueue_without_a_workspace_is_refused(project_triton):
    """enqueue checks what it is given: a workspace smaller than the check's is refused before any launch."""
    from resq_export.native import triton as T

    fields, inputs, outputs = _node()
    lib = OpLibrary(project_triton)
    need = lib.check(OP, fields, inputs, outputs)
    with T.recording(8, 9, path=project_triton) as records:
        with pytest.raises(OpRefused, match=re.escape(f"a workspace of 16 bytes, {need} needed")):
            lib.enqueue(OP, fields, inputs, outputs, torch.zeros(16, dtype=torch.uint8))
    assert records == []
