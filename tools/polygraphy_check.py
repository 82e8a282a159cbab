"""The ONNX Runtime vs reference comparison through Polygraphy (see docs/onnx.md).

As a Polygraphy data loader (`--data-loader-script tools/polygraphy_check.py`) it feeds
`$RESQ_ONNX/model.onnx` with a fixed prompt and an empty KV cache. As a script it writes the
reference executor's logits for the same feed as Polygraphy run results (`--load-outputs`):

    RESQ_ONNX=out/onnx .venv/bin/python tools/polygraphy_check.py reference.json
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

PROMPT_LEN = 64


def _feed() -> dict:
    from resq_export.validate.ort_runner import OrtDecoder

    session = OrtDecoder(Path(os.environ["RESQ_ONNX"]))
    vocab = session.session.get_outputs()[0].shape[2]
    ids = np.random.default_rng(0).integers(0, vocab, (1, PROMPT_LEN)).astype(np.int64)
    cache = session.new_cache(1, PROMPT_LEN)
    return {"input_ids": ids, "position_ids": np.arange(PROMPT_LEN, dtype=np.int64)[None],
            **cache.feeds(PROMPT_LEN)}, session


def load_data():
    yield _feed()[0]


def write_reference(path: str) -> None:
    import torch
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult

    from resq_export.artifact import load_artifact

    feed, session = _feed()
    reference, _, _ = load_artifact(Path(session.meta["source_artifact"]["path"]))
    with torch.inference_mode():
        logits = reference(torch.from_numpy(feed["input_ids"])).numpy()
    results = RunResults()
    results.append(("reference-executor", [IterationResult({"logits": logits}, runner_name="reference-executor")]))
    results.save(path)


if __name__ == "__main__":
    write_reference(sys.argv[1])
