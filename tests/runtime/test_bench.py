"""`resq-export bench`: the figures it reports, and the sizes it skips or refuses, on ONNX Runtime and
on the TensorRT backend over the stand-in plan (trt_standin.py)."""

import json

import pytest

from resq_export.engine.profiles import EngineLimits
from resq_export.errors import ConfigError
from resq_export.runtime.bench import run_bench
from resq_export.runtime.device import HostMemory
from resq_export.runtime.loop import Generator
from resq_export.runtime.text import load_tokenizer
from resq_export.runtime.trt_backend import TensorRTBackend
from tiny_models import run_cli
from trt_standin import StandInEngine


def test_bench_onnx_reports_what_fits_the_model(onnx_dir):
    result = run_cli("bench", "--onnx", onnx_dir, "--repeats", "1", "--decode-steps", "2", "--json")
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.output)
    assert run["backend"] == "onnxruntime" and run["model"] == str(onnx_dir)
    assert [r["tokens"] for r in run["prefill"]] == [128] and run["prefill"][0]["tokens_per_s"] > 0
    assert [r["batch"] for r in run["decode"]] == [1, 8] and all(r["ms_per_step"] > 0 for r in run["decode"])
    assert run["skipped"] == ["prefill 512: beyond the model's context of 256 tokens",
                              "prefill 2048: beyond the model's context of 256 tokens"]
    assert run["memory"]["kind"] == "peak RSS of the process" and run["memory"]["mib"] > 0


def test_bench_through_the_plan_backend(onnx_dir):
    limits = EngineLimits(max_batch=2, max_sequence=8, max_context=64, opt_sequence=4, opt_context=32)
    backend = TensorRTBackend(StandInEngine(onnx_dir, limits), HostMemory())
    model = Generator(load_tokenizer(onnx_dir), lambda: backend, capacity=64, capacity_what="the plan's --max-context",
                      max_batch=2, batch_what="the plan's --max-batch")
    run = run_bench(model, prefill=(20, 128), batches=(1, 2, 8), decode_steps=4, repeats=1)
    assert run["backend"] == "tensorrt" and [r["tokens"] for r in run["prefill"]] == [20]
    # decode after 60 prompt tokens (the plan's 64 rows less the 4 steps), sent 8 at a time
    assert [(r["batch"], r["context"]) for r in run["decode"]] == [(1, 60), (2, 60)]
    assert run["skipped"] == ["prefill 128: beyond the plan's --max-context of 64 tokens",
                              "decode at batch 8: beyond the plan's --max-batch of 2"]
    with pytest.raises(ConfigError, match="decode at batch 8: beyond the plan's --max-batch of 2"):
        run_bench(model, prefill=(20,), batches=(8,), repeats=1, explicit=(False, True))
