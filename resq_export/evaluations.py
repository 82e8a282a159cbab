"""Evaluation results kept beside an artifact (evaluations.json), for `resq-export report`.

A side file, not listed in the manifest: appending a result must not change the checksummed
artifact, and the report reads whatever has been recorded. Written atomically (read, append,
write to a temporary name, rename).
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

from .errors import ArtifactError
from .manifests import EVALUATIONS_JSON, check_schema
from .fileio import atomic_write_text, read_json

log = logging.getLogger(__name__)

EVALUATIONS_FILE = "evaluations.json"


def read_evaluations(art_dir: Path) -> list[dict]:
    path = Path(art_dir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    return check_schema(read_json(path, ArtifactError), EVALUATIONS_JSON, path,
                        "move it away (it only records earlier `resq-export eval` results)")


def record_evaluation(art_dir: Path, result: dict) -> None:
    """Append `result`; a read-only artifact folder only costs the record (logged), not the evaluation."""
    entries = read_evaluations(art_dir)
    entries.append({**result, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
    try:
        atomic_write_text(Path(art_dir) / EVALUATIONS_FILE, json.dumps(entries, indent=1))
    except OSError as e:
        log.warning("could not record the evaluation in %s: %s", art_dir, e)
