"""The resumable state of one `quantize` run: a work folder `<out>.partial/` beside the output.

It holds a small state record (state.json) and one file per finished step (pass-1 statistics, bases,
embedding, head, each quantised layer), every file written atomically (temporary name, fsync,
rename) BEFORE state.json says the step is done. A killed or failed run (full disk) therefore leaves
only finished files behind; the same command continues after the last finished step. The folder
never looks like an artifact (no manifest.json, another name); the artifact itself is assembled and
renamed into place only when every layer is done, and then the work folder is removed.

The state records a hash of everything that determines the result (settings, source model bytes,
calibration tokens, schema and tool version): a rerun with anything different is refused, naming
what differs, not mixed in (--overwrite discards it instead). It also records the sha256 of every
file when its step is committed, so a resume finds a file damaged or lost since (a disk, a copy, a
hand) and recomputes it rather than trusting it (the pipeline decides from where).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .errors import ResumeError
from .fileio import atomic_write_text, read_json, sha256_file
from .manifests import STATE_JSON, check_schema
from .tensorfile import save_tensors

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
# Every name a run writes into its work folder (besides the temporaries of its atomic writes).
_OWN = re.compile(r"^(README|state\.json|(pass[12]-(stats|acts)-\d{5}|bases|embed|head|shared|layer-\d{5})"
                  r"\.safetensors|\..+\.tmp-.+)$")


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def work_dir_for(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


class WorkDir:
    def __init__(self, root: Path, state: dict):
        self.root = root
        self.state = state
        self._written: dict[str, str] = {}  # hashes of files written since the last commit

    @classmethod
    def open(cls, out_dir: Path, fingerprint: dict, discard_other: bool = False) -> WorkDir:
        """The work folder of this run: resumed when it holds an interrupted run of the same
        fingerprint, else new. One of another fingerprint is refused, naming what differs, unless
        discard_other (--overwrite), which deletes it first."""
        root = work_dir_for(out_dir)
        digest = fingerprint_hash(fingerprint)
        state_path = root / STATE_FILE
        if state_path.is_file():
            state = check_schema(read_json(state_path, ResumeError), STATE_JSON, state_path,
                                 f"delete {root} to start over", ResumeError)
            if state.get("fingerprint") == digest:
                return cls._resume(root, state)
            old = state.get("fingerprint_data")
            what = differences(old if isinstance(old, dict) else {}, fingerprint)
            if not discard_other:
                raise ResumeError(
                    f"{root} holds an interrupted run with different {what}; rerun that run's exact command to "
                    f"resume it, or pass --overwrite to discard it and start over")
            _check_own(root)
            log.warning("discarding the interrupted run in %s (different %s; --overwrite)", root, what)
            shutil.rmtree(root)
        elif root.exists():  # killed before its first record: nothing in it can be trusted
            _check_own(root)
            shutil.rmtree(root)
        root.mkdir(parents=True)
        (root / "README").write_text(
            "Work folder of an unfinished `resq-export quantize` run (NOT an artifact).\n"
            "Rerun the same command to continue it; delete this folder to start over.\n")
        work = cls(root, {"fingerprint": digest, "fingerprint_data": fingerprint, "pass1_done": 0,
                          "bases_done": False, "globals_done": False, "pass2_done": 0, "layers": {}, "files": {}})
        work.commit()
        return work

    @classmethod
    def _resume(cls, root: Path, state: dict) -> WorkDir:
        _check_own(root)
        for tmp in root.rglob(".*.tmp-*"):  # leftovers of writes that a kill cut short (the output is locked)
            with contextlib.suppress(OSError):
                tmp.unlink()
        done = {k: v for k, v in state.items() if k.endswith("_done")}
        log.warning("resuming the interrupted run kept in %s (%s)", root,
                    ", ".join(f"{k.removesuffix('_done')}: {v}" for k, v in done.items()))
        work = cls(root, state)
        work.commit(resumed=True)
        return work

    def path(self, name: str) -> Path:
        return self.root / name

    def commit(self, **changes: Any) -> None:
        """Record finished steps (after their files are in place), with the hashes of those files."""
        self.state.update(changes)
        self.state.setdefault("files", {}).update(self._written)
        self._written = {}
        atomic_write_text(self.root / STATE_FILE, json.dumps(self.state, indent=1))

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        save_tensors(self.root / name, tensors, metadata)
        self.written(name)

    def written(self, name: str) -> None:
        """Note the hash of a file just written in place; the next commit records it."""
        self._written[name] = sha256_file(self.root / name)

    def load(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.root / name))

    def drop(self, name: str) -> None:
        self.state.get("files", {}).pop(name, None)
        self._written.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def damage(self, name: str) -> str | None:
        """Why a finished step's file cannot be trusted (missing, or not the bytes recorded when it
        was written), or None. A file recorded without a hash (a run begun by an older version) is
        trusted as before."""
        path = self.root / name
        if not path.is_file():
            return "is missing"
        want = self.state.get("files", {}).get(name)
        if want is not None and sha256_file(path) != want:
            return "is damaged (its sha256 is not the one recorded when it was written)"
        return None

    def layer_record(self, i: int) -> dict:
        return self.state["layers"].setdefault(str(i), {})

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _check_own(root: Path) -> None:
    """Refuse a work folder holding anything a run does not write there: it is never emptied."""
    foreign = sorted(p.name for p in root.iterdir() if not _OWN.match(p.name) or p.is_dir())
    if foreign:
        raise ResumeError(f"{root} is not only the work folder of a resq-export run (it holds "
                          f"{', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}): move "
                          f"{'that' if len(foreign) == 1 else 'those'} away (quantize keeps its progress there)")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text[:12] + "..." if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def differences(old: dict, new: dict) -> str:
    """What differs between two fingerprints, e.g. "settings (seed: 0 there, 1 now)" or
    "calibration_tokens (3f2a... there, 91bc... now)"; settings are compared one by one."""
    parts = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            inner = [f"{k}: {_short(a.get(k))} there, {_short(b.get(k))} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k)]
            parts.append(f"{key} ({'; '.join(inner)})")
        else:
            parts.append(f"{key} ({_short(a)} there, {_short(b)} now)")
    return " and ".join(parts) or "fingerprint"
