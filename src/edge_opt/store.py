"""Study store: finished config points in SQLite (WAL, one transaction per point), for resume.

The store knows rows and keys, nothing about how they were measured; it sits
below the stages that fill it.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    row_json TEXT NOT NULL,
    record_json TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "StudyStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def get(self, key: str) -> Optional[dict[str, Any]]:
        """The stored row for ``key``, or None."""
        cur = self._conn.execute("SELECT row_json FROM points WHERE key = ?", (key,))
        hit = cur.fetchone()
        return loads(hit[0]) if hit else None

    def get_record(self, key: str) -> Optional[dict[str, Any]]:
        cur = self._conn.execute("SELECT record_json FROM points WHERE key = ?", (key,))
        hit = cur.fetchone()
        return loads(hit[0]) if hit and hit[0] else None

    def put(self, key: str, row: dict[str, Any], record: Optional[dict[str, Any]] = None, kind: str = "variant") -> None:
        """Commit one finished point in its own transaction."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT OR REPLACE INTO points (key, kind, row_json, record_json, created) VALUES (?, ?, ?, ?, ?)",
                (key, kind, dumps(row), dumps(record) if record is not None else None, time.time()),
            )

    def keys(self, kind: Optional[str] = None) -> list[str]:
        q = "SELECT key FROM points" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        return [r[0] for r in self._conn.execute(q, (kind,) if kind else ())]

    def rows(self, kind: Optional[str] = None) -> Iterator[dict[str, Any]]:
        q = "SELECT row_json FROM points" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        for (text,) in self._conn.execute(q, (kind,) if kind else ()):
            yield loads(text)

    def count(self, kind: Optional[str] = None) -> int:
        q = "SELECT COUNT(*) FROM points" + (" WHERE kind = ?" if kind else "")
        return int(self._conn.execute(q, (kind,) if kind else ()).fetchone()[0])

    def set_meta(self, name: str, value: Any) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, dumps(value)))

    def get_meta(self, name: str, default: Any = None) -> Any:
        hit = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return loads(hit[0]) if hit else default
