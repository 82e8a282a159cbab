"""The KV attention plugin's real enqueue on the CPU (kv_enqueue_check.py): created through its creator
with a tiny model's fields, configured, enqueued on host buffers with the present outputs aliased to
the past inputs, its recorded launches executed by Triton's interpreter; a prefill and three decode
steps through the same cache equal the reference executor (cache bit for bit, Y within tolerance: the
prefill kernel's bound for the prefill step, flash-decoding's for the decode steps, kv_cases.op_atol)."""

import json
import os
import subprocess
import sys

import pytest

from test_plugin_enqueue import HERE, ROOT, harness  # noqa: F401  (the harness fixture)


def test_kv_attention_enqueue_replayed_by_the_interpreter_equals_the_reference(harness, project_triton):  # noqa: F811
    lib, why = harness
    if lib is None:  # the attention has no TensorRT-free op layer yet: only the creator route drives it
        pytest.skip(why)
    native = project_triton.parent
    path = os.pathsep.join([str(ROOT), str(HERE), str(ROOT / "tests" / "kernels")])
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    run = subprocess.run([sys.executable, str(HERE / "kv_enqueue_check.py"), str(native), str(lib)], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    steps = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(steps) == 8
    assert [(s["case"], s["lengths"], s["cache_differ"]) for s in steps if s["cache_differ"]] == []
    assert [(s["case"], s["lengths"], s["y_err"]) for s in steps if not s["y_err"] <= s["atol"]] == []
    # the C++ launch code launches what kv_launch's policy names, U_C only with eleven inputs
    assert [(s["case"], s["seq"], s["launches"]) for s in steps if s["launches"] != s["policy"]] == []
    assert steps[0]["launches"][0] == "kv_rotate" and "kv_rotate" not in steps[4]["launches"]
    # the prefill step (S = 7) on the tensor-core prefill kernel (D 16 in a 64-channel window, r 2 in
    # 16), the decode steps on flash-decoding and its combine
    assert [s["launches"][-1] for s in steps if s["seq"] > 1] == ["kv_prefill_d64_r16_k4_h8"] * 2
    assert all(s["launches"][-1] == "kv_combine" for s in steps if s["seq"] == 1)
