#!/usr/bin/env python3
"""Regenerate the packaged English text corpora from CPython's ``pydoc_data.topics``.

Writes ``resq_export/data/calib_en.txt`` (calibration) and
``resq_export/data/eval_en.txt`` (held-out perplexity text).  The source ships
with every CPython 3.11 install, so the corpora can be rebuilt offline.  The
text is reproduced under the PSF License Agreement, version 2 (see
``resq_export/data/README.md``).

The split is deterministic and leak-free:

1. Topics are taken in sorted name order and cleaned (trailing whitespace
   stripped from every line, runs of blank lines collapsed to one).
2. Redundant topics are dropped: pydoc repeats whole sections under several
   names (e.g. ``if`` and ``for`` are excerpts of ``compound``).  A topic is
   redundant when at least ``REDUNDANT_FRACTION`` of its paragraph characters
   occur verbatim in one single longer topic.
3. Remaining topics that still share any paragraph of at least
   ``MIN_SHARED_CHARS`` characters are grouped (connected components), so
   shared text can never straddle the split.
4. Groups are ordered by their first topic name; group number ``i`` goes to
   the evaluation file when ``i % 3 == EVAL_REMAINDER``, otherwise to the
   calibration file.

Usage::

    python tools/make_corpus.py            # rewrite the two files
    python tools/make_corpus.py --check    # exit 1 if they are out of date

This script is a maintenance tool; the ``resq_export`` package never imports it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

REDUNDANT_FRACTION = 0.9
MIN_SHARED_CHARS = 30
# Remainder 1 (not 0) because it puts ~1/3 of the characters in the eval file;
# remainder 0 would leave only ~15% there, remainder 2 would take ~52%.
EVAL_REMAINDER = 1

DATA_DIR = Path(__file__).resolve().parent.parent / "resq_export" / "data"
CALIB_NAME = "calib_en.txt"
EVAL_NAME = "eval_en.txt"

_BLANK_RUN = re.compile(r"\n{3,}")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")


class Split(NamedTuple):
    calib: list[str]  # topic names, sorted
    eval: list[str]
    dropped: dict[str, str]  # redundant topic -> topic that contains it
    texts: dict[str, str]  # cleaned text of every kept topic

    def render(self, names: list[str]) -> str:
        # One blank line between documents, single trailing newline.
        return "\n\n".join(self.texts[n] for n in names) + "\n"


def clean(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


def paragraphs(text: str) -> list[str]:
    """Whitespace-normalised paragraphs, so re-indented copies still compare equal."""
    out = []
    for block in _PARAGRAPH_SPLIT.split(text):
        norm = " ".join(block.split())
        if norm:
            out.append(norm)
    return out


def split_topics(topics: Mapping[str, str]) -> Split:
    names = sorted(topics)
    texts = {n: clean(topics[n]) for n in names}
    paras = {n: paragraphs(texts[n]) for n in names}
    size = {n: sum(map(len, paras[n])) for n in names}
    para_sets = {n: set(paras[n]) for n in names}

    dropped: dict[str, str] = {}
    for name in names:
        if size[name] == 0:
            dropped[name] = ""
            continue
        # Only a strictly "larger" topic may absorb another, so two identical
        # topics cannot drop each other.
        bigger = sorted(
            (o for o in names if o != name and (size[o], o) > (size[name], name)),
            key=lambda o: (-size[o], o),
        )
        for other in bigger:
            covered = sum(len(p) for p in paras[name] if p in para_sets[other])
            if covered >= REDUNDANT_FRACTION * size[name]:
                dropped[name] = other
                break
    kept = [n for n in names if n not in dropped]

    parent = {n: n for n in kept}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    first_owner: dict[str, str] = {}
    for name in kept:
        for p in paras[name]:
            if len(p) < MIN_SHARED_CHARS:
                continue
            owner = first_owner.setdefault(p, name)
            a, b = root(owner), root(name)
            if a != b:
                parent[max(a, b)] = min(a, b)

    groups: dict[str, list[str]] = {}
    for name in kept:
        groups.setdefault(root(name), []).append(name)
    ordered = sorted(groups.values(), key=lambda g: g[0])

    calib: list[str] = []
    evaluation: list[str] = []
    for i, group in enumerate(ordered):
        (evaluation if i % 3 == EVAL_REMAINDER else calib).extend(group)
    return Split(
        calib=sorted(calib),
        eval=sorted(evaluation),
        dropped=dropped,
        texts={n: texts[n] for n in kept},
    )


def shared_paragraphs(a: str, b: str, min_chars: int = MIN_SHARED_CHARS) -> set[str]:
    long_a = {p for p in paragraphs(a) if len(p) >= min_chars}
    return long_a & {p for p in paragraphs(b) if len(p) >= min_chars}


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        # mkstemp creates 0600; package data must be world-readable once installed.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)

    import pydoc_data.topics

    split = split_topics(pydoc_data.topics.topics)
    calib_text = split.render(split.calib)
    eval_text = split.render(split.eval)
    leaked = shared_paragraphs(calib_text, eval_text)
    if leaked:  # guaranteed empty by construction; fail loudly if that ever breaks
        print(f"error: {len(leaked)} paragraphs shared between files", file=sys.stderr)
        return 1

    outputs = {args.out_dir / CALIB_NAME: calib_text, args.out_dir / EVAL_NAME: eval_text}
    if args.check:
        stale = [p for p, t in outputs.items() if not p.is_file() or p.read_text("utf-8") != t]
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        return 1 if stale else 0

    for path, text in outputs.items():
        atomic_write(path, text)

    print(f"source: {pydoc_data.topics.__file__} (Python {sys.version.split()[0]})")
    print(f"topics: {len(split.texts) + len(split.dropped)} total, "
          f"{len(split.dropped)} redundant dropped")
    for name, owner in sorted(split.dropped.items()):
        print(f"  dropped {name} (contained in {owner})")
    for path, names, text in (
        (args.out_dir / CALIB_NAME, split.calib, calib_text),
        (args.out_dir / EVAL_NAME, split.eval, eval_text),
    ):
        print(f"{path.name}: {len(names)} topics, {len(text)} characters, "
              f"{len(text.encode('utf-8'))} bytes")
        print("  " + " ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
