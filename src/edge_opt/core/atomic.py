"""Small shared helper: write files atomically (temporary name in the same folder, then rename).

A crash leaves the previous complete file or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP_PREFIX",
    "FolderBusy",
    "FolderLock",
    "OutputJournal",
    "atomic_path",
    "note_written",
    "temp_names",
    "write_json",
    "write_text",
    "write_with",
]

_JOURNALS: list[OutputJournal] = []
_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP_PREFIX = ".edge_opt_tmp_"  # temporary folders of an output being built (left behind only by a kill)


def temp_names(path: Path) -> list[Path]:
    """Temporary files a killed ``atomic_path(path)`` may have left next to ``path``."""
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp*"))


class OutputJournal:
    """Write-ahead list of the files written atomically under ``folder`` while the journal is active.

    Each path is appended (and flushed to disk) to ``folder/name`` *before* its file is written,
    so after a kill the journal names every file that may exist, complete or not. Paths in
    ``exclude`` (relative, e.g. a per-host cache) are not recorded.
    """

    def __init__(self, folder: str | Path, name: str, exclude: tuple[str, ...] = ()) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / name
        self.exclude = set(exclude)
        self.files: list[str] = []

    def note(self, path: Path) -> None:
        """Record ``path`` when it lies under the journal's folder."""
        try:
            rel = path.resolve().relative_to(self.folder).as_posix()
        except ValueError:
            return
        if rel in self.exclude or rel in self.files or rel == self.path.name:
            return
        self.files.append(rel)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(rel + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def __enter__(self) -> OutputJournal:
        _JOURNALS.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _JOURNALS.remove(self)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for journal in _JOURNALS:
        journal.note(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the permissions of any new file
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def note_written(path: str | Path) -> None:
    """Tell the active output journals about a file another library wrote itself (e.g. LoadGen's logs)."""
    for journal in _JOURNALS:
        journal.note(Path(path))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Atomically write JSON (UTF-8, ``indent`` spaces; NaN written as null)."""
    return write_text(path, json.dumps(_clean(obj), indent=indent, ensure_ascii=False) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Atomically write with ``writer(tmp_path)`` (e.g. ``df.to_csv``, ``fig.savefig``)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def _clean(obj: Any) -> Any:
    """NaN/inf → None (strict JSON); numpy scalars → Python; tuples → lists; Paths → str."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        try:
            return _clean(obj.item())
        except (ValueError, TypeError):
            return str(obj)
    return obj


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock (the message names it: pid, host, start time, command)."""


class FolderLock:
    """An exclusive advisory lock on a folder (``.edge_opt.lock`` inside it, POSIX ``flock``).

    The kernel releases it when the holder ends, even by SIGKILL, so a lock file left by a killed
    run is stale and simply taken over. The holder writes who it is (pid, host, start time,
    command) into the file for the message of a refused run. ``wait=True`` blocks until free.
    """

    FILE = ".edge_opt.lock"

    def __init__(self, folder: str | Path, wait: bool = False, command: str = "") -> None:
        self.path = Path(folder) / self.FILE
        while True:
            self._fh = open(self.path, "a+", encoding="utf-8")  # held open for the lock's lifetime
            self._acquire(wait)
            if self._same_file():  # not unlinked by the previous holder between our open and flock
                break
            self._fh.close()
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(
            f"pid {os.getpid()} on host {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}" + (f" ({command[:200]})" if command else "")
        )
        self._fh.flush()

    def _acquire(self, wait: bool) -> None:
        import fcntl

        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip()[:400] or "another process"
            self._fh.close()
            raise FolderBusy(holder) from None

    def _same_file(self) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Give the lock up and remove the lock file (a refused run leaves its folder as it found it)."""
        if self._fh.closed:
            return
        self.path.unlink(missing_ok=True)
        self._fh.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
