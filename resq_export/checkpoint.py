"""The resumable state of one `quantize` run: a work folder `<out>.partial/` beside the output.

It holds a small state record (state.json) and one file per finished step (pass-1 statistics, bases,
embedding, head, each quantised layer), every file written atomically (temporary name, fsync,
rename) BEFORE state.json says the step is done. A killed or failed run (full disk) therefore leaves
only finished files behind; the same command continues after the last finished step. The folder
never looks like an artifact (no manifest.json, another name); the artifact itself is assembled and
renamed into place only when every layer is done, and then the work folder is removed.

The state records a hash of everything that determines the result (settings, source model bytes,
calibration tokens, schema and tool version): a rerun with anything different is refused, not mixed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from .errors import ResumeError
from .fileio import atomic_write_text, read_json
from .tensorfile import save_tensors

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def work_dir_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


class WorkDir:
    def __init__(self, root: Path, state: dict):
        self.root = root
        self.state = state

    @classmethod
    def open(cls, out_dir: Path, fingerprint: dict) -> WorkDir:
        root = work_dir_for(out_dir)
        digest = fingerprint_hash(fingerprint)
        state_path = root / STATE_FILE
        if state_path.is_file():
            state = read_json(state_path, ResumeError)
            if state.get("fingerprint") != digest:
                old = state.get("fingerprint_data", {})
                differs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                raise ResumeError(
                    f"{root} holds an interrupted run with different {', '.join(differs) or 'fingerprint'}; "
                    f"rerun that run's exact command to resume it, or delete {root} to start over")
            for tmp in root.rglob(".*.tmp-*"):  # leftovers of writes that a kill cut short
                with contextlib.suppress(OSError):
                    tmp.unlink()
            done = {k: v for k, v in state.items() if k.endswith("_done")}
            log.warning("resuming the interrupted run kept in %s (%s)", root,
                        ", ".join(f"{k.removesuffix('_done')}: {v}" for k, v in done.items()))
            work = cls(root, state)
            work.commit(resumed=True)
            return work
        if root.exists():  # killed before its first record: nothing in it can be trusted
            foreign = [p.name for p in root.iterdir() if p.name != "README" and ".tmp-" not in p.name]
            if foreign:
                raise ResumeError(f"{root} exists but is not the work folder of a resq-export run (it holds "
                                  f"{', '.join(sorted(foreign)[:3])}): move it away (quantize keeps its progress there)")
            shutil.rmtree(root)
        root.mkdir(parents=True)
        (root / "README").write_text(
            "Work folder of an unfinished `resq-export quantize` run (NOT an artifact).\n"
            "Rerun the same command to continue it; delete this folder to start over.\n")
        work = cls(root, {"fingerprint": digest, "fingerprint_data": fingerprint, "pass1_done": 0,
                          "bases_done": False, "globals_done": False, "pass2_done": 0, "layers": {}})
        work.commit()
        return work

    def path(self, name: str) -> Path:
        return self.root / name

    def commit(self, **changes: Any) -> None:
        """Record finished steps (after their files are in place)."""
        self.state.update(changes)
        atomic_write_text(self.root / STATE_FILE, json.dumps(self.state, indent=1))

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        save_tensors(self.root / name, tensors, metadata)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.root / name))

    def drop(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def layer_record(self, i: int) -> dict:
        return self.state["layers"].setdefault(str(i), {})

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
