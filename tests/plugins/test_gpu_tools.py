"""The GPU session's tools on a machine without a GPU (their CPU side): tools/triton_gpu_check.py and
tools/bench_kernels.py say what they lack in one error line and exit 1, before any work; the record
mode of triton_gpu_check (the interpreter) is tests/plugins/test_triton_aot.py's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def _run(tool: str, *argv: str, interpret: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(TOOLS / tool), *argv], env=env, capture_output=True, text=True)


def _one_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1 and run.stdout.count("\n") == 1 and not run.stderr, (run.stdout, run.stderr[-2000:])
    return run.stdout


def test_triton_gpu_check_refuses_bad_arguments_in_one_line(tmp_path):
    said = _one_line(_run("triton_gpu_check.py", "--lib", str(tmp_path / "libnone.so")))
    assert said.startswith(f"error: {tmp_path / 'libnone.so'} is missing: build it with cmake (target resq_triton)")
    said = _one_line(_run("triton_gpu_check.py", "--mode", "record", "--lib", str(TOOLS / "triton_gpu_check.py")))
    assert said == "error: --mode record needs TRITON_INTERPRET=1 in the environment\n"
    run = _run("triton_gpu_check.py", "--mode", "gpu")
    assert run.returncode == 2 and "invalid choice: 'gpu'" in run.stderr  # argparse's usage line


def test_triton_gpu_check_without_a_gpu_says_so_in_one_line(project_triton):
    """--mode cuda where no GPU is: the library loads, the loader's prepare fails, one line says why (the
    GPU session's first step as far as it runs here), before any kernel (KV cases included) is tried."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tools/gpu_session.sh runs this mode for real")
    said = _one_line(_run("triton_gpu_check.py", "--mode", "cuda", "--lib", str(project_triton)))
    assert re.fullmatch(r"error: loading the cubins on device 0: status [34]: cudaGetDevice: cuda\w+: .+\n", said), said


def test_bench_kernels_without_a_gpu_says_so_in_one_line(project_triton):
    """The benchmark (GEMMs, decode and prefill attention) refuses in one line where torch sees no GPU."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tools/gpu_session.sh runs the benchmark for real")
    said = _one_line(_run("bench_kernels.py", "--lib", str(project_triton), "--attention-only"))
    assert said == "error: no CUDA device: this benchmark needs a GPU\n"


def test_op_enqueue_check_names_the_missing_one_of_several_case_files(tmp_path):
    """gpu_session.sh step 2 passes the linears' and the KV attention's case files: a missing one is named."""
    present = tmp_path / "enqueue_cases.pt"
    present.write_bytes(b"")
    said = _one_line(_run("op_enqueue_check.py", "--lib", str(TOOLS / "op_enqueue_check.py"), "--cases", str(present),
                          str(tmp_path / "kv_enqueue_cases.pt")))
    assert said.startswith(f"error: --cases {tmp_path / 'kv_enqueue_cases.pt'} is missing: write it")
    assert "RESQ_KV_ENQUEUE_CASES=<file> pytest tests/plugins/test_kv_enqueue.py" in said
