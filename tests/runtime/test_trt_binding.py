"""The TensorRT backend's binding logic (resq_export/runtime/trt_backend.py) against a stand-in plan
and execution context (trt_standin.py: the calls TensorRT offers, executed by ONNX Runtime on the
buffers at the bound addresses): the same greedy tokens as the ONNX Runtime backend, the profile
chosen by shape, the cache allocated once and aliased, the plan's limits as clear errors."""

import numpy as np
import pytest

from resq_export.engine.profiles import EngineLimits
from resq_export.errors import ConfigError
from resq_export.runtime.device import HostMemory
from resq_export.runtime.loop import Generator
from resq_export.runtime.ort_backend import OrtBackend
from resq_export.runtime.text import load_tokenizer
from resq_export.runtime.trt_backend import TensorRTBackend
from resq_export.validate.ort_runner import OrtDecoder
from trt_standin import StandInEngine

# a plan of 2 sequences, 8 tokens a prefill call, 64 cache rows (as `resq-export engine --max-batch 2
# --max-sequence 8 --max-context 64` would build it)
LIMITS = EngineLimits(max_batch=2, max_sequence=8, max_context=64, opt_sequence=4, opt_context=32)
PROMPT = "Once upon a time the history of the function"


@pytest.fixture(scope="module")
def tokenizer(onnx_dir):
    return load_tokenizer(onnx_dir)


def _trt(onnx_dir, profiles=("prefill", "decode")):
    engine = StandInEngine(onnx_dir, LIMITS, profiles)
    return TensorRTBackend(engine, HostMemory()), engine


def test_greedy_tokens_through_the_plan_equal_onnx_runtime(onnx_dir, tokenizer):
    backend, engine = _trt(onnx_dir)
    trt = Generator(tokenizer, lambda: backend, capacity=backend.capacity, capacity_what=backend.capacity_what)
    ort = Generator(tokenizer, lambda: OrtBackend(OrtDecoder(onnx_dir)))
    assert len(tokenizer(PROMPT)["input_ids"]) > LIMITS.max_sequence  # the prompt takes several prefill calls
    want = list(ort.token_ids(PROMPT, max_new_tokens=20))
    assert list(trt.token_ids(PROMPT, max_new_tokens=20)) == want
    # prefill calls in the prefill profile (index 0), one-token calls in the decode profile (index 1),
    # the profile set only when it changes
    executed = [c for c in engine.calls if c[0] == "execute"]
    assert {(p, s[1]) for _, p, s in executed} == {(0, 8), (0, len(tokenizer(PROMPT)["input_ids"]) % 8), (1, 1)}
    switches = [c[1] for c in engine.calls if c[0] == "profile"]
    assert switches == [0, 1]


def test_the_cache_is_allocated_once_at_the_plan_capacity_and_aliased(onnx_dir):
    backend, _ = _trt(onnx_dir)
    assert (backend.capacity, backend.max_batch, backend.max_step) == (64, 2, 8)
    first = {name: buf.ptr for name, buf in backend.buffers.items()}
    for past in backend.past:
        assert backend.buffers[past.replace("past.", "present.", 1)] is backend.buffers[past]
        h, last = backend.engine.get_tensor_shape(past)[1], backend.engine.get_tensor_shape(past)[3]
        assert backend.buffers[past].nbytes == 2 * h * 64 * last * backend.dtypes[past].itemsize
    backend.reset(1, 30)
    backend.step(np.arange(5)[None], 0)
    backend.reset(2, 64)
    assert {name: buf.ptr for name, buf in backend.buffers.items()} == first


def test_a_batch_decodes_as_its_sequences_do_alone(onnx_dir, tokenizer):
    """Two sequences in one batch (the bench's decode path): each one's logits equal ONNX Runtime's
    for it alone."""
    backend, _ = _trt(onnx_dir)
    ids = np.array([tokenizer("The function of the")["input_ids"][:4], tokenizer("Once upon a time")["input_ids"][:4]])
    backend.reset(2, 10)
    backend.step(ids, 0)
    batched = backend.step(np.array([[5], [9]]), 4)
    for row, nxt in ((0, 5), (1, 9)):
        alone = OrtBackend(OrtDecoder(onnx_dir))
        alone.reset(1, 10)
        alone.step(ids[row:row + 1], 0)
        np.testing.assert_allclose(batched[row], alone.step(np.array([[nxt]]), 4)[0], rtol=1e-5, atol=1e-5)


def test_the_plan_limits_are_clear_errors(onnx_dir, tokenizer):
    backend, _ = _trt(onnx_dir)
    with pytest.raises(ConfigError, match="a batch of 3 sequences exceeds the plan's --max-batch of 2"):
        backend.reset(3, 10)
    with pytest.raises(ConfigError, match="65 tokens exceed the plan's --max-context of 64 tokens"):
        backend.reset(1, 65)
    trt = Generator(tokenizer, lambda: backend, capacity=backend.capacity, capacity_what=backend.capacity_what)
    with pytest.raises(ConfigError, match="that exceeds the plan's --max-context of 64 tokens"):
        list(trt.stream(PROMPT, max_new_tokens=60))


def test_one_profile_serves_both_kinds_of_call(onnx_dir, tokenizer):
    """A plan with the prefill profile alone (it takes one token too) decodes the same tokens."""
    backend, engine = _trt(onnx_dir, profiles=("prefill",))
    trt = Generator(tokenizer, lambda: backend)
    ort = Generator(tokenizer, lambda: OrtBackend(OrtDecoder(onnx_dir)))
    assert list(trt.token_ids(PROMPT, max_new_tokens=6)) == list(ort.token_ids(PROMPT, max_new_tokens=6))
    assert [c[1] for c in engine.calls if c[0] == "profile"] == [0]
