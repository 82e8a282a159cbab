"""The generation loop, once for every backend: tokenise (with the chat template if asked), check the
lengths, prefill the prompt in chunks, decode token by token with greedy or top-p sampling, stop at
the end-of-sequence token, and stream the text as it becomes whole characters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import ConfigError
from ..models.context import context_length
from .backend import Backend
from .sampling import check_sampling, next_token
from .text import prompt_ids, stop_tokens

log = logging.getLogger(__name__)

# Prompt tokens per prefill call: the graph serves any past length, so a long prompt goes through the
# KV cache in chunks and memory follows the chunk (attention scores, activations), not the prompt.
PREFILL_CHUNK = 512


def prefill(backend: Backend, ids: list[int], rows: int, chunk: int = PREFILL_CHUNK) -> np.ndarray:
    """The logits [V] after the whole prompt, sent chunk by chunk into a fresh cache of `rows` rows
    (the prompt and the tokens to come); the backend's own bound on one call cuts the chunks too."""
    chunk = min(chunk, backend.max_step or chunk)
    backend.reset(1, rows)
    logits = None
    for start in range(0, len(ids), chunk):
        logits = backend.step(np.array([ids[start:start + chunk]], dtype=np.int64), start)
    return logits[0]


class Generator:
    """A model ready to generate: `stream` yields text pieces, `generate` returns the whole text.
    The backend is opened at the first call (or by `open()`): a prompt that cannot fit is refused
    before any runtime is loaded."""

    def __init__(self, tokenizer, open_backend: Callable[[], Backend], *, capacity: int | None = None,
                 capacity_what: str = "", max_batch: int | None = None, batch_what: str = "",
                 chunk: int = PREFILL_CHUNK):
        self.tokenizer = tokenizer
        self._open_backend = open_backend
        self._backend: Backend | None = None
        # the backend's bounds, known before it opens (a plan's from its manifest)
        self.capacity, self.capacity_what = capacity, capacity_what
        self.max_batch, self.batch_what = max_batch, batch_what
        self.chunk = chunk

    def open(self) -> Backend:
        if self._backend is None:
            self._backend = self._open_backend()
        return self._backend

    def _check_lengths(self, n: int, max_new_tokens: int) -> None:
        bounds = [(context_length(self.tokenizer), "the model's context")]
        if self.capacity is not None:
            bounds.append((self.capacity, self.capacity_what))
        for limit, what in sorted((b for b in bounds if b[0] is not None), key=lambda b: b[0]):  # the tightest
            if n + max_new_tokens > limit:
                raise ConfigError(f"the prompt has {n} tokens; with --max-new-tokens {max_new_tokens} that exceeds "
                                  f"{what} of {limit} tokens: shorten the prompt or lower --max-new-tokens")

    def token_ids(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                  seed: int = 0, chat: bool = False) -> Iterator[int]:
        """The generated token ids, one at a time (the end-of-sequence token not included)."""
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens {max_new_tokens}: at least 1 is needed")
        check_sampling(temperature, top_p)
        ids = prompt_ids(self.tokenizer, prompt, chat)
        if not ids:
            raise ConfigError("the prompt tokenises to nothing")
        self._check_lengths(len(ids), max_new_tokens)
        backend = self.open()
        rng = np.random.default_rng(seed)
        eos = stop_tokens(self.tokenizer)
        logits = prefill(backend, ids, len(ids) + max_new_tokens, self.chunk)
        for i in range(max_new_tokens):
            token = next_token(logits, temperature, top_p, rng)
            if token in eos:
                return
            yield token
            if i + 1 < max_new_tokens:  # the last token's logits would go unused
                logits = backend.step(np.array([[token]], dtype=np.int64), len(ids) + i)[0]

    def stream(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
               seed: int = 0, chat: bool = False) -> Iterator[str]:
        """Yield the decoded text piece by piece; greedy when temperature is 0. A prompt that, with
        the tokens to generate, exceeds the model's context (or the plan's) is refused before any work."""
        generated: list[int] = []
        shown = ""
        for token in self.token_ids(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    seed=seed, chat=chat):
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                yield text[len(shown):]
                shown = text
        rest = self.tokenizer.decode(generated, skip_special_tokens=True)[len(shown):]
        if rest:
            yield rest

    def generate(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0, chat: bool = False) -> str:
        return "".join(self.stream(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                   seed=seed, chat=chat))
