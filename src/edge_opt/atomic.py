"""Small shared helper: write files atomically (temporary name in the same folder, then rename).

A crash leaves the previous complete file or none, never a truncated one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["FolderBusy", "FolderLock", "atomic_path", "write_json", "write_text", "write_with"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    """Another process holds the folder's lock."""


class FolderLock:
    """An exclusive, non-blocking advisory lock on a folder (``.edge_opt.lock`` inside it, POSIX ``flock``);
    released on ``release()`` or when the process ends, even by SIGKILL (a stale file is then free to take)."""

    def __init__(self, folder: str | Path) -> None:
        import fcntl

        self.path = Path(folder) / ".edge_opt.lock"
        self._fh = open(self.path, "a+", encoding="utf-8")  # held open for the lock's lifetime
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise FolderBusy(holder) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}")
        self._fh.flush()

    def release(self) -> None:
        """Give the lock up and remove the lock file (a refused run leaves its folder as it found it)."""
        self.path.unlink(missing_ok=True)
        self._fh.close()
