"""Evaluation results kept beside an artifact (evaluations.json), for `resq-export report`.

A side file, not listed in the manifest: appending a result must not change the checksummed
artifact, and the report reads whatever has been recorded. Written atomically (read, append,
write to a temporary name, rename).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .errors import ArtifactError
from .fileio import atomic_write_text, read_json

EVALUATIONS_FILE = "evaluations.json"


def read_evaluations(art_dir: Path) -> list[dict]:
    path = Path(art_dir) / EVALUATIONS_FILE
    return read_json(path, ArtifactError) if path.is_file() else []


def record_evaluation(art_dir: Path, result: dict) -> None:
    entries = read_evaluations(art_dir)
    entries.append({**result, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
    atomic_write_text(Path(art_dir) / EVALUATIONS_FILE, json.dumps(entries, indent=1))
