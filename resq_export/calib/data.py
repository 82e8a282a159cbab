"""Text corpora for calibration and perplexity evaluation.

The package ships two disjoint English corpora (see ``resq_export/data/README.md``)
so that quantisation works offline with no download; users may pass their own
plain-text or JSON-lines files instead.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Sequence
from importlib import resources

import torch

from ..errors import DataError

logger = logging.getLogger(__name__)

_CALIB_FILE = "calib_en.txt"
_EVAL_FILE = "eval_en.txt"
_JSONL_SUFFIXES = frozenset({".jsonl"})
# Separates documents so a window that straddles two of them still looks like prose.
_DOC_SEPARATOR = "\n\n"


def _packaged(name: str) -> pathlib.Path:
    resource = resources.files("resq_export") / "data" / name
    # Zip imports yield a non-filesystem Traversable; callers need a real path.
    if not isinstance(resource, pathlib.Path):
        raise DataError(
            f"packaged data file {name!r} is not on the file system ({resource!r}); "
            "install resq-export as a regular (unzipped) package"
        )
    if not resource.is_file():
        raise DataError(f"packaged data file is missing: {resource} (broken installation?)")
    return resource


def default_calibration_path() -> pathlib.Path:
    """The packaged English calibration corpus (CPython reference prose)."""
    return _packaged(_CALIB_FILE)


def default_eval_path() -> pathlib.Path:
    """The packaged English evaluation text; it shares no topic with the calibration corpus."""
    return _packaged(_EVAL_FILE)


def _read_utf8(path: pathlib.Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .txt or .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    try:
        # utf-8-sig: editors on Windows often prepend a BOM, which is not text.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 (bad byte at offset {exc.start}); re-encode the file as UTF-8"
        ) from exc


def _jsonl_documents(path: pathlib.Path, content: str) -> list[str]:
    docs: list[str] = []
    # split("\n"), not splitlines(): JSON strings may legally contain raw U+2028 etc.
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from exc
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(
                f"{path}, line {lineno}: expected a JSON object with a string \"text\" field"
            )
        if text.strip():
            docs.append(text)
    return docs


def read_texts(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Read documents from plain-text files (one document each) and .jsonl files (one per line)."""
    if isinstance(paths, (str, os.PathLike)):
        # A bare string would otherwise be iterated character by character.
        paths = [paths]
    if not paths:
        raise DataError("no text files given")
    docs: list[str] = []
    for entry in paths:
        path = pathlib.Path(os.fspath(entry))
        content = _read_utf8(path)
        if path.suffix.lower() in _JSONL_SUFFIXES:
            found = _jsonl_documents(path, content)
        else:
            found = [content] if content.strip() else []
        if not found:
            raise DataError(f"{path}: contains no text")
        logger.debug("read %d document(s), %d characters from %s",
                     len(found), sum(map(len, found)), path)
        docs.extend(found)
    return docs


def tokenize_corpus(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Tokenise all documents as one stream (1-D ``torch.long``), without special tokens.

    One call over the joined text keeps token boundaries identical to how the
    model sees running prose, and works with any Hugging Face tokenizer.
    """
    if isinstance(texts, str):
        texts = [texts]
    text = _DOC_SEPARATOR.join(texts)
    # verbose=False: a corpus is longer than the model's context on purpose (it is cut into windows)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    tokens = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if tokens.numel() == 0:
        raise DataError(
            f"the text ({len(texts)} document(s), {len(text)} characters) produced no tokens"
        )
    logger.debug("tokenised %d characters into %d tokens", len(text), tokens.numel())
    return tokens


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_tokens(tokens: torch.Tensor) -> torch.Tensor:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise DataError(f"expected a 1-D tensor of token ids, got {shape}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise DataError(f"token ids must be integers, got dtype {tokens.dtype}")
    return tokens.to(torch.long)


def calibration_windows(tokens: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``nsamples`` random, non-overlapping windows of ``seqlen`` tokens: ``[nsamples, seqlen]``.

    Windows are aligned to multiples of ``seqlen`` so they can never overlap
    (overlap would silently duplicate calibration data); which slots are used
    depends only on ``seed``, and they are returned in corpus order.
    """
    tokens = _check_tokens(tokens)
    nsamples = _check_int("nsamples", nsamples, 1)
    seqlen = _check_int("seqlen", seqlen, 2)
    available = tokens.numel()
    needed = nsamples * seqlen
    if available < needed:
        raise DataError(
            f"calibration data has {available} tokens but {nsamples} samples x {seqlen} tokens "
            f"= {needed} tokens are needed; use a smaller --nsamples or --seqlen, "
            "or add more text with --calib-data"
        )
    n_slots = available // seqlen
    # A private CPU generator: reproducible and leaves the global RNG untouched.
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    slots = torch.randperm(n_slots, generator=generator)[:nsamples].sort().values
    index = slots.unsqueeze(1) * seqlen + torch.arange(seqlen)
    logger.debug("calibration: %d windows of %d tokens from %d slots", nsamples, seqlen, n_slots)
    return tokens[index]


def eval_windows(tokens: torch.Tensor, seqlen: int, max_tokens: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping ``seqlen`` windows from the start, tail dropped: ``[n, seqlen]``.

    This is the perplexity protocol of the GPTQ/ResQ papers; ``max_tokens``
    caps the evaluated prefix to ``floor(max_tokens / seqlen)`` windows.
    """
    tokens = _check_tokens(tokens)
    seqlen = _check_int("seqlen", seqlen, 2)
    n_windows = tokens.numel() // seqlen
    if max_tokens is not None:
        max_tokens = _check_int("max_tokens", max_tokens, 1)
        n_windows = min(n_windows, max_tokens // seqlen)
    if n_windows == 0:
        limit = "" if max_tokens is None else f" (limited to max_tokens={max_tokens})"
        raise DataError(
            f"evaluation text has {tokens.numel()} tokens{limit}, fewer than one window of "
            f"seqlen={seqlen} tokens; use a smaller --seqlen or a longer text"
        )
    return tokens[: n_windows * seqlen].reshape(n_windows, seqlen).clone()


def evaluation_windows(tokenizer, text_files: Sequence[str | os.PathLike[str]], seqlen: int,
                       max_tokens: int | None) -> torch.Tensor:
    """The perplexity windows of `text_files` (the packaged evaluation text when none are given)."""
    texts = read_texts(list(text_files) or [default_eval_path()])
    return eval_windows(tokenize_corpus(tokenizer, texts), seqlen, max_tokens)
