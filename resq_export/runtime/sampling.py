"""The next token from one row of logits: greedy, or sampled at a temperature within the top-p
nucleus, from a seeded generator (the same seed, the same text)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def check_sampling(temperature: float, top_p: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature {temperature!r}: give a finite number >= 0 (0: greedy)")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ConfigError(f"top_p {top_p!r}: give a number in (0, 1] (1: the whole distribution)")


def next_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """logits [V] -> a token id. Greedy at temperature 0 (top_p then has nothing to choose from)."""
    last = logits.astype(np.float64)
    if temperature <= 0:
        return int(last.argmax())
    p = np.exp((last - last.max()) / temperature)
    if top_p < 1:
        # the smallest set of most likely tokens whose mass reaches top_p; ties kept in id order
        order = np.argsort(-p, kind="stable")
        mass = np.cumsum(p[order]) / p.sum()
        keep = order[:int(np.searchsorted(mass, top_p)) + 1]
        nucleus = np.zeros_like(p)
        nucleus[keep] = p[keep]
        p = nucleus
    return int(rng.choice(len(p), p=p / p.sum()))
