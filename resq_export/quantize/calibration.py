"""Calibration, the quantiser's first stage: token windows from the calibration text, the
positions they run at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..calib.data import (
    calibration_windows,
    default_calibration_path,
    read_texts,
    tokenize_corpus,
)
from ..config import QuantConfig
from ..decoder import Decoder

CALIB_BATCH = 8  # windows per forward pass


@dataclass
class CalibrationSet:
    tokens: torch.Tensor  # [n, seqlen]

    def batches(self) -> list[torch.Tensor]:
        return list(self.tokens.split(CALIB_BATCH))


def load_calibration(tokenizer, quant: QuantConfig, calib_data: Sequence[str] | None) -> CalibrationSet:
    texts = read_texts(list(calib_data) if calib_data else [default_calibration_path()])
    tokens = tokenize_corpus(tokenizer, texts)
    return CalibrationSet(calibration_windows(tokens, quant.nsamples, quant.seqlen, quant.seed))


def calibration_ropes(runner: Decoder, calib: CalibrationSet) -> list:
    return [runner.rope(torch.arange(b.shape[1])[None].expand(b.shape[0], -1)) for b in calib.batches()]
