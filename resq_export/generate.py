"""Token streaming from an exported ONNX folder with ONNX Runtime and its (quantised) KV cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import ArtifactError, ConfigError
from .models.loader import context_length
from .validate.ort_runner import OrtDecoder


def load_tokenizer(onnx_dir: Path):
    from transformers import AutoTokenizer

    folder = Path(onnx_dir) / "tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        raise ArtifactError(f"{folder} is missing or incomplete: re-export the ONNX folder "
                            "(resq-export export --artifact ART --out ONNX_DIR)")
    return AutoTokenizer.from_pretrained(str(folder))


def prompt_ids(tokenizer, prompt: str, chat: bool) -> list[int]:
    if chat and not getattr(tokenizer, "chat_template", None):  # ignoring --chat would answer another question
        raise ConfigError("--chat: this model's tokenizer has no chat template (no \"chat_template\" in the ONNX "
                          "folder's tokenizer/tokenizer_config.json); leave out --chat to send the prompt as plain text")
    if chat:
        # rendered to text, then tokenised: apply_chat_template's tokenising return type differs across
        # transformers versions (a list, or a BatchEncoding)
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


# Prompt tokens per prefill call: the graph serves any past length, so a long prompt goes through the
# KV cache in chunks and memory follows the chunk (attention scores, activations), not the prompt.
PREFILL_CHUNK = 512


def prefill(session: OrtDecoder, ids: list[int], capacity: int, chunk: int = PREFILL_CHUNK):
    """(logits of the last chunk, cache) after the whole prompt, chunk by chunk, into a cache of
    `capacity` rows (the prompt and the tokens to come)."""
    logits, cache = None, session.new_cache(1, capacity)
    for start in range(0, len(ids), chunk):
        logits, cache = session.forward(np.array([ids[start:start + chunk]]), cache)
    return logits, cache


def stream(session: OrtDecoder, tokenizer, prompt: str, max_new_tokens: int, temperature: float, seed: int,
           chat: bool = False) -> Iterator[str]:
    """Yield the decoded text piece by piece; greedy when temperature is 0. A prompt that, with the
    tokens to generate, exceeds the model's context is refused before any work."""
    ids = prompt_ids(tokenizer, prompt, chat)
    if not ids:
        raise ConfigError("the prompt tokenises to nothing")
    limit = context_length(tokenizer)
    if limit is not None and len(ids) + max_new_tokens > limit:
        raise ConfigError(f"the prompt has {len(ids)} tokens; with --max-new-tokens {max_new_tokens} that exceeds the "
                          f"model's context of {limit} tokens: shorten the prompt or lower --max-new-tokens")
    rng = np.random.default_rng(seed)
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    logits, cache = prefill(session, ids, len(ids) + max_new_tokens)
    generated: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        last = logits[0, -1].astype(np.float64)
        if temperature > 0:
            p = np.exp((last - last.max()) / temperature)
            token = int(rng.choice(len(p), p=p / p.sum()))
        else:
            token = int(last.argmax())
        if token in eos:
            break
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown):]
            shown = text
        logits, cache = session.forward(np.array([[token]]), cache)
    rest = tokenizer.decode(generated, skip_special_tokens=True)[len(shown):]
    if rest:
        yield rest
