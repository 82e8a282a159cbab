"""The shared generation loop (resq_export/runtime/loop.py) over the ONNX Runtime backend: the text
`generate --onnx` printed before the loop moved, chunked prefill, the cache's capacity, sampling."""

import numpy as np
import pytest

from resq_export.errors import ConfigError
from resq_export.runtime import load
from resq_export.runtime.loop import prefill
from resq_export.runtime.ort_backend import OrtBackend
from resq_export.runtime.sampling import next_token
from resq_export.validate.ort_runner import OrtDecoder
from tiny_models import run_cli

# `resq-export generate --onnx ONNX --prompt P --max-new-tokens 16 [--temperature 0.8 --seed 3]` on the
# session's "resq" artifact (tiny Llama, tests/conftest.py), printed by main at 6b74fca, before the
# loop moved into resq_export/runtime/ (/tmp/r31/baseline.py, the same model built the same way)
BEFORE = {
    ("The function", 0.0): "\ufffd" * 16 + "\n",
    ("The function", 0.8): "G{ of C\ufffd\ufffd\\atterI\ufffd\u0004\ufffd\u007fst or\n",
    ("Once upon a time the history of", 0.0): " of ofpepepe\ufffdV\\\\\\\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\n",
    ("Once upon a time the history of", 0.8): "M\ufffduse\ufffdI\ufffd\u0007`\n  R\ufffd\u001a\ufffd\ufffd iur\n",
}


@pytest.fixture(scope="module")
def model(onnx_dir):
    return load(onnx_dir)


@pytest.mark.parametrize("prompt, temperature", list(BEFORE))
def test_generate_prints_what_it_printed_before_the_move(onnx_dir, prompt, temperature):
    args = ["--temperature", "0.8", "--seed", "3"] if temperature else []
    result = run_cli("generate", "--onnx", onnx_dir, "--prompt", prompt, "--max-new-tokens", "16", *args)
    assert result.exit_code == 0, result.output
    assert result.output == BEFORE[(prompt, temperature)]


def test_greedy_tokens_equal_recomputation_without_a_cache(model):
    """Each greedy token is the argmax of one forward pass over the whole text so far, in a fresh cache:
    the loop's prefill, cache reuse and past lengths change nothing."""
    prompt = "Once upon a time the history of"
    tokens = list(model.token_ids(prompt, max_new_tokens=10))
    decoder = model.open().decoder
    ids = model.tokenizer(prompt)["input_ids"]
    want = []
    for _ in range(10):
        seq = np.array([ids + want])
        logits, _ = decoder.forward(seq, decoder.new_cache(1, seq.shape[1]))
        want.append(int(logits[0, -1].argmax()))
    assert tokens == want


def test_chunked_prefill_equals_one_prefill(onnx_dir):
    """A prompt through the cache in chunks of 8 (the last one short) leaves the same last logits and
    the same cache bytes as one call over the whole prompt."""
    ids = np.random.default_rng(5).integers(0, 400, 37).tolist()
    one, chunked = OrtBackend(OrtDecoder(onnx_dir)), OrtBackend(OrtDecoder(onnx_dir))
    whole = prefill(one, ids, 40, chunk=64)
    parts = prefill(chunked, ids, 40, chunk=8)
    np.testing.assert_array_equal(parts, whole)
    assert one.cache.lengths.tolist() == chunked.cache.lengths.tolist() == [37]
    for name in one.cache.tensors:
        np.testing.assert_array_equal(chunked.cache.tensors[name], one.cache.tensors[name], err_msg=name)


def test_the_cache_capacity_is_a_clear_error(model):
    backend = model.open()
    backend.reset(1, 10)
    backend.step(np.arange(8)[None], 0)
    with pytest.raises(ConfigError, match="8 cached and 4 new tokens exceed the cache's capacity of 10"):
        backend.step(np.arange(4)[None], 8)
    with pytest.raises(ConfigError, match="exceeds the model's context of 256 tokens"):
        list(model.stream("word " * 200, max_new_tokens=100))


def test_sampling_is_seeded_and_top_p_keeps_the_nucleus(model):
    runs = [model.generate("The function", max_new_tokens=12, temperature=1.0, top_p=0.9, seed=s) for s in (7, 7, 8)]
    assert runs[0] == runs[1] != runs[2]
    # a nucleus of one token is greedy whatever the temperature
    assert model.generate("The function", max_new_tokens=12, temperature=5.0, top_p=1e-9, seed=1) == \
        model.generate("The function", max_new_tokens=12)
    # probabilities 0.4, 0.3, 0.2, 0.1: top_p 0.6 keeps the first two, and draws both
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    rng = np.random.default_rng(0)
    drawn = {next_token(logits, 1.0, 0.6, rng) for _ in range(200)}
    assert drawn == {1, 3}
    assert {next_token(logits, 1.0, 1.0, rng) for _ in range(400)} == {0, 1, 2, 3}
