"""Evaluation results kept beside an artifact (evaluations.json), for `resq-export report`.

A side file, not listed in the manifest: appending a result must not change the checksummed
artifact, and the report reads whatever has been recorded. Written atomically (read, append,
write to a temporary name, rename); every entry carries "tool": "resq-export", so that a file of
this name that the user put there is recognised as theirs and left alone.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

from .errors import ArtifactError
from .fileio import atomic_write_text, read_json
from .manifests import EVALUATIONS_JSON, check_schema
from .outputs import EVALUATIONS_FILE, TOOL, is_our_evaluations

log = logging.getLogger(__name__)


def read_evaluations(art_dir: Path) -> list[dict]:
    """The recorded results; none when there is no evaluations.json of ours (a file of that name
    that resq-export did not write is left alone and said so)."""
    path = Path(art_dir) / EVALUATIONS_FILE
    if not path.exists():
        return []
    if not is_our_evaluations(path):
        log.warning("%s was not written by resq-export: its content is not read as evaluations", path)
        return []
    return check_schema(read_json(path, ArtifactError), EVALUATIONS_JSON, path,
                        "move it away (it only records earlier `resq-export eval` results)")


def record_evaluation(art_dir: Path, result: dict) -> None:
    """Append `result`; a read-only artifact folder only costs the record (logged), not the evaluation,
    and so does a file of that name that resq-export did not write (never replaced)."""
    path = Path(art_dir) / EVALUATIONS_FILE
    if path.exists() and not is_our_evaluations(path):
        log.warning("not recording the evaluation: %s exists and was not written by resq-export (move it away "
                    "to record evaluations there)", path)
        return
    entries = read_evaluations(art_dir)
    entries.append({"tool": TOOL, **result,
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")})
    try:
        atomic_write_text(path, json.dumps(entries, indent=1))
    except OSError as e:
        log.warning("could not record the evaluation in %s: %s", art_dir, e)
