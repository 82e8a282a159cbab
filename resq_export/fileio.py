"""File helpers: atomic writes (output appears whole under its final name, or not at all), the
removal of what killed writes left, a lock on an output, hashing, JSON reading with a clear error."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# `.NAME.tmp-PID-XXXXXXXX` / `.NAME.old-PID-XXXXXXXX`: what mkstemp/mkdtemp make for _temp_prefix
# (8 characters of [a-z0-9_]); nothing else in a folder is taken for a temporary of ours.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[a-z0-9_]{8}$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    """Remove a temporary file or folder of a dead process (a link itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary siblings `.NAME.tmp-PID-*` / `.NAME.old-PID-*` that a killed write to
    `target` left behind (their process is gone; older ones carry no pid). Returns what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for kind in ("tmp", "old"):
        for path in target.parent.glob(f".{glob_escape(target.name)}.{kind}-*"):
            pid = path.name[len(target.name) + len(kind) + 3:].split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue  # another run is writing it now
            _remove(path)
            removed.append(path)
    return removed


def sweep_stale_temporaries(folder: Path) -> list[Path]:
    """Remove every temporary of a dead process in `folder` (not below it), whatever target it was
    for: a killed write leaves its `.NAME.tmp-PID-*` beside a target the user may never write again,
    so each command sweeps the folders it writes into. Returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # not there, or not ours to list: nothing to sweep
        return removed
    for path in entries:
        match = _TEMPORARY.match(path.name)
        if match is None or _alive(int(match["pid"])):
            continue
        _remove(path)
        removed.append(path)
    if removed:
        log.info("removed %d temporaries of killed runs in %s", len(removed), folder)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _temp_prefix(target: Path, kind: str = "tmp") -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_directory(target: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it takes `target`'s name (replacing an old one).
    Leftovers of an earlier killed write to the same target are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    sweep_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should look like any new folder
    try:
        yield tmp
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} exists")
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target, "old"), dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield the path of an empty temporary sibling for this process or another to fill; on success
    it takes `path`'s name with the usual permissions, on any error it is removed. Leftovers of an
    earlier killed write to the same path are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    sweep_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should look like any new file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator:
    """Yield a file open on a temporary sibling (atomic_path); on success it is synced and takes
    `path`'s name, on any error it is removed."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


class OutputBusy(Exception):
    """Another live process holds the lock; its recorded "pid command" line is the message."""


def lock_path(target: Path) -> Path:
    return Path(target).with_name(f".{Path(target).name}.lock")


class OutputLock:
    """An exclusive lock on an output (and its work folder), taken before anything is checked or
    written: `fcntl.flock` on the hidden file `.NAME.lock` beside it. The kernel releases it when the
    process ends in any way, so a SIGKILL leaves at most an unlocked file that the next run takes
    over; a lock file is removed only by the process holding it (never one of a live run)."""

    def __init__(self, target: Path):
        self.path = lock_path(target)
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                os.close(fd)
                raise OutputBusy(holder or "a process that has not yet written its pid") from None
            # The holder before us may have removed the file after we opened it: a lock on a
            # removed file guards nothing, so take the lock again on the file now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {_command_line()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # still ours: removed before the lock is let go, so nobody holds a lock on it
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _command_line() -> str:
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    line = " ".join(args).replace("\n", " ")
    return line if len(line) <= 300 else line[:297] + "..."


def sha256_file(path: Path, digest=None) -> str:
    """sha256 of a file's bytes (or feed them into `digest` and return its hex so far)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


HASH_NOTE_BYTES = 1 << 30  # hashing more than this takes long enough (~3 s/GiB here) to say so


def note_hashing(what: object, paths: list[Path]) -> None:
    """A line on screen before hashing a large model, so minutes of silence are not taken for a hang."""
    size = sum(Path(p).stat().st_size for p in paths if Path(p).is_file())
    if size > HASH_NOTE_BYTES:
        logging.getLogger("resq_export").warning("checking the sha256 of %s (%.1f GiB) ...", what, size / 2**30)


def read_json(path: Path, error: type[Exception]):
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is corrupt (not valid JSON: {e})") from None
