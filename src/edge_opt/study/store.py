"""Study store: finished config points in SQLite (WAL, one transaction per point), for resume.

The store keeps one JSON document per key (a ``VariantResult.to_dict()``) and small named
values (``meta``); it knows nothing about how they were measured and sits below the stages
that fill it. A store written by an earlier release (format 1: flat rows in ``points``) is
refused with ``StoreFormatError`` telling to run with ``--fresh``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["STORE_FORMAT", "VENDOR_KIND", "StoreFormatError", "StudyStore", "dumps", "loads"]

STORE_FORMAT = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    doc_json TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreFormatError(ValueError):
    """The store file was written by another release of edge_opt (``ours``) or is not a study store."""

    def __init__(self, message: str, ours: bool = False) -> None:
        super().__init__(message)
        self.ours = ours


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def _restore(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """JSON with NaN/inf preserved losslessly."""
    return json.dumps(_jsonable(obj), allow_nan=False, sort_keys=True)


def loads(text: str) -> Any:
    """Inverse of ``dumps``."""
    return _restore(json.loads(text))


class StudyStore:
    """SQLite store of finished points in ``<output_dir>/study.sqlite``.

    Args:
        path: database file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        try:
            self._check_format()
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('store_format', ?)", (dumps(STORE_FORMAT),)
            )
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreFormatError(
                f"{str(self.path)!r} is not a study store ({exc}); remove it or give another output_dir."
            ) from None
        except StoreFormatError:
            self._conn.close()
            raise

    def _check_format(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        found = None
        if "meta" in tables:
            hit = self._conn.execute("SELECT value FROM meta WHERE name = 'store_format'").fetchone()
            found = loads(hit[0]) if hit else None
        if "points" in tables and found is None:
            found = 1  # the flat-row store of earlier releases
        if tables and found is None:
            raise StoreFormatError(
                f"{str(self.path)!r} is an SQLite database of another program (tables "
                f"{sorted(tables)[:5]}), not an edge_opt study store; give another output_dir."
            )
        if found is not None and found != STORE_FORMAT:
            raise StoreFormatError(
                f"The study store {str(self.path)!r} was written by another edge_opt release (store format "
                f"{found}; this release reads format {STORE_FORMAT}). Run again with --fresh to start the study "
                "over (its stored measurements are discarded).",
                ours=True,
            )

    @staticmethod
    def probe(path: str | Path) -> StoreFormatError | None:
        """Why ``path`` cannot be opened as this release's store (a read-only check; None when it can or is absent).

        ``ours`` on the error: a store of another edge_opt release (``--fresh`` may replace it).
        """
        path = Path(path)
        if not path.exists():
            return None
        if not path.is_file():
            return StoreFormatError(f"{str(path)!r} is not a file; give another output_dir.")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as exc:
            return StoreFormatError(f"{str(path)!r} cannot be opened ({exc}); give another output_dir.")
        try:
            probe = StudyStore.__new__(StudyStore)
            probe.path, probe._conn = path, conn
            probe._check_format()
        except StoreFormatError as exc:
            return exc
        except sqlite3.DatabaseError as exc:
            return StoreFormatError(
                f"{str(path)!r} is not a study store ({exc}); remove it or give another output_dir."
            )
        finally:
            conn.close()
        return None

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored document for ``key``, or None."""
        hit = self._conn.execute("SELECT doc_json FROM results WHERE key = ?", (key,)).fetchone()
        return loads(hit[0]) if hit else None

    def put(self, key: str, doc: dict[str, Any], kind: str = "variant") -> None:
        """Commit one finished point's document in its own transaction."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT OR REPLACE INTO results (key, kind, doc_json, created) VALUES (?, ?, ?, ?)",
                (key, kind, dumps(doc), time.time()),
            )

    def keys(self, kind: str | None = None) -> list[str]:
        """Stored keys in commit order."""
        q = "SELECT key FROM results" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        return [r[0] for r in self._conn.execute(q, (kind,) if kind else ())]

    def documents(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored documents in commit order."""
        q = "SELECT doc_json FROM results" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        for (text,) in self._conn.execute(q, (kind,) if kind else ()):
            yield loads(text)

    def count(self, kind: str | None = None) -> int:
        """How many documents are stored."""
        q = "SELECT COUNT(*) FROM results" + (" WHERE kind = ?" if kind else "")
        return int(self._conn.execute(q, (kind,) if kind else ()).fetchone()[0])

    def set_meta(self, name: str, value: Any) -> None:
        """Store a named value (replacing an earlier one)."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, dumps(value)))

    def get_meta(self, name: str, default: Any = None) -> Any:
        """A named value, or ``default``."""
        hit = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return loads(hit[0]) if hit else default


VENDOR_KIND = "vendor"  # store kind of rows imported from a vendor tool's report
