"""`resq-export bench`: prefill throughput and decode latency of a backend on real text (the packaged
evaluation text, tokenised), and the memory it held. Each figure is the median of `repeats` runs.

- prefill: tokens/s of a prompt of N tokens into an empty cache (one call where the backend takes N
  tokens at once, else chunks of its most);
- decode: ms per step at batch B after a 128-token prompt (shorter where the context is), each step one token for each of the B
  sequences (tokens/s = B / step time);
- memory: TensorRT: device memory in use (total - free, as the driver reports it; other processes on
  the GPU count too); ONNX Runtime: the process's peak RSS."""

from __future__ import annotations

import logging
import resource
import statistics
import time

import numpy as np

from ..calib.data import default_eval_path
from ..errors import ConfigError
from ..models.context import context_length
from .loop import Generator

log = logging.getLogger(__name__)

PREFILL_LENGTHS = (128, 512, 2048)
BATCHES = (1, 8)
DECODE_CONTEXT = 128


def _text_ids(tokenizer, n: int) -> np.ndarray:
    """The first n tokens of the packaged evaluation text (repeated if it is shorter), tokenised a
    paragraph at a time: the whole text at once is longer than a small model's context, which the
    tokenizer warns about."""
    ids: list[int] = []
    paragraphs = default_eval_path().read_text(encoding="utf-8").split("\n\n")
    while len(ids) < n:
        for paragraph in paragraphs:
            ids += tokenizer(paragraph + "\n\n", add_special_tokens=False)["input_ids"]
            if len(ids) >= n:
                break
    return np.array(ids[:n], dtype=np.int64)


def _fill(backend, ids: np.ndarray) -> None:
    """ids [batch, n] into an empty cache, in calls of as many tokens as the backend takes. Each call
    returns host logits, so a timing of it includes the device's work."""
    chunk = min(ids.shape[1], backend.max_step or ids.shape[1])
    for start in range(0, ids.shape[1], chunk):
        backend.step(ids[:, start:start + chunk], start)


def _median_s(fn, repeats: int, setup=lambda: None) -> float:
    """The median wall time of fn() over `repeats` runs, each after an untimed setup()."""
    times = []
    for _ in range(repeats):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plan_runs(generator: Generator, prefill: tuple[int, ...], batches: tuple[int, ...], decode_steps: int,
              explicit: tuple[bool, bool] = (False, False)) -> tuple[list[int], list[int], list[str]]:
    """The prefill lengths and batches that fit the model (and the plan, known from its manifest
    before it is opened), and a reason for each left out; where the user named the prefill lengths
    (explicit[0]) or the batches (explicit[1]), one of those that does not fit is refused instead."""
    bounds = [(n, what) for n, what in ((context_length(generator.tokenizer), "the model's context"),
                                        (generator.capacity, generator.capacity_what)) if n is not None]
    rows, what = min(bounds) if bounds else (None, "")
    skipped, keep_p, keep_b = [], [], []
    for n in prefill:
        if rows is not None and n > rows:
            if explicit[0]:
                raise ConfigError(f"prefill {n}: beyond {what} of {rows} tokens")
            skipped.append(f"prefill {n}: beyond {what} of {rows} tokens")
        else:
            keep_p.append(n)
    for b in batches:
        if generator.max_batch is not None and b > generator.max_batch:
            if explicit[1]:
                raise ConfigError(f"decode at batch {b}: beyond {generator.batch_what} of {generator.max_batch}")
            skipped.append(f"decode at batch {b}: beyond {generator.batch_what} of {generator.max_batch}")
        elif rows is not None and decode_steps >= rows:
            skipped.append(f"decode at batch {b}: {decode_steps} steps leave no room for a prompt in {what} of {rows}")
        else:
            keep_b.append(b)
    return keep_p, keep_b, skipped


def run_bench(generator: Generator, *, prefill: tuple[int, ...] = PREFILL_LENGTHS, batches: tuple[int, ...] = BATCHES,
              decode_steps: int = 32, repeats: int = 3, explicit: tuple[bool, bool] = (False, False)) -> dict:
    keep_p, keep_b, skipped = plan_runs(generator, prefill, batches, decode_steps, explicit)
    backend = generator.open()
    memory = getattr(backend, "memory", None)
    result: dict = {"backend": backend.name, "repeats": repeats, "prefill": [], "decode": [], "skipped": skipped}
    for n in keep_p:
        ids = _text_ids(generator.tokenizer, n)[None]
        seconds = _median_s(lambda: _fill(backend, ids), repeats, setup=lambda: backend.reset(1, n))
        result["prefill"].append({"tokens": n, "seconds": round(seconds, 5), "tokens_per_s": round(n / seconds, 1)})
    rows = min(n for n in (context_length(generator.tokenizer), generator.capacity, 1 << 62) if n is not None)
    context = min(DECODE_CONTEXT, rows - decode_steps)
    for b in keep_b:
        ids = np.repeat(_text_ids(generator.tokenizer, context + decode_steps)[None], b, 0)
        steps = []
        for _ in range(repeats):
            backend.reset(b, context + decode_steps)
            _fill(backend, ids[:, :context])
            for i in range(decode_steps):
                t0 = time.perf_counter()
                backend.step(ids[:, context + i:context + i + 1], context + i)
                steps.append(time.perf_counter() - t0)
        step = statistics.median(steps)
        result["decode"].append({"batch": b, "context": context, "ms_per_step": round(step * 1e3, 3),
                                 "tokens_per_s": round(b / step, 1)})
    if memory is not None and memory.used_bytes() is not None:
        result["memory"] = {"kind": "device in use (total - free)", "mib": round(memory.used_bytes() / 2**20, 1)}
    else:
        result["memory"] = {"kind": "peak RSS of the process",
                            "mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return result
