"""The output folder's ownership: which files a study wrote, and its derived outputs as one generation.

A study folder is marked by its store (``study.sqlite``). Everything else the study writes falls
in three groups:

* caches it can rebuild (checkpoints, ONNX exports, per-variant metadata, sensitivity results,
  the per-host machine calibration) — kept across runs, dropped by ``--fresh``;
* the **derived outputs** (tables, plots, ``summary.json``, ``report.html``, the exported
  model …) — one *generation*: ``begin_generation`` removes the previous one before anything
  new is written, an ``OutputJournal`` lists every file as it is written, and
  ``commit_generation`` records them with their SHA-256 and the study's config hash in
  ``generation.json``, written last. A folder whose ``generation.json`` is missing (a run
  killed while writing) or whose files no longer match it holds no valid generation:
  ``edge-opt report`` removes what the journal lists and rebuilds from the store.
* nothing else: ``remove_study`` (``--fresh``) deletes only the files of these groups.

Which files in the cache folders the study wrote is recorded, not guessed from their names: a run opens
the folder's cache ledger (``.cache_files.json``) under the folder lock, noting what the cache folders
hold, and closes it when it ends, recording every file that appeared in between as the study's. A run
killed before it closed the ledger leaves the note behind and the next run (or ``--fresh``) settles it
the same way. ``--fresh`` deletes the recorded files and leaves any other file in a cache folder (say a
hand-optimised ``onnx/model.onnx``) in place, returning their names for a warning.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import atomic

__all__ = [
    "HASH_KEY",
    "CACHE_DIRS",
    "CACHE_FILES",
    "CACHE_LEDGER",
    "GENERATION_FILE",
    "JOURNAL_FILE",
    "LEGACY_OUTPUTS",
    "STORE_FILES",
    "Generation",
    "begin_generation",
    "changed_files",
    "clear_outputs",
    "close_cache_ledger",
    "commit_generation",
    "config_hash",
    "foreign_entries",
    "open_cache_ledger",
    "read_generation",
    "remove_study",
    "reusable_files",
    "stamp_outputs",
    "verify_generation",
]

GENERATION_FILE = "generation.json"
JOURNAL_FILE = ".generation.partial"
STORE_FILES = (
    "study.sqlite",
    "study.sqlite-wal",
    "study.sqlite-shm",
    "search.sqlite",
)  # search.sqlite: Optuna's trials
CACHE_DIRS = ("checkpoints", "onnx", "variants", "sensitivity")
CACHE_FILES = ("machine_calibration.json",)
CACHE_LEDGER = ".cache_files.json"  # the cache files the study wrote, and an open run's starting listing
# What releases before generations wrote (removed only from a folder that holds a study and no generation record).
LEGACY_OUTPUTS = (
    "sweep_results.csv",
    "pareto_frontier_latency.csv",
    "pareto_frontier_energy.csv",
    "summary.json",
    "reproducibility.json",
    "report.html",
    "precision_tradeoffs.csv",
    "deployment.csv",
    "hardware_summary.csv",
    "layerwise_breakdown.csv",
    "roofline_points.csv",
    "sensitivity.csv",
    "mixed_precision.csv",
    "accuracy_vs_latency.png",
    "accuracy_vs_memory.png",
    "accuracy_vs_energy.png",
    "roofline.png",
    "layerwise_macs.png",
    "layerwise_activation_memory.png",
    "sensitivity.png",
    "model/model.onnx",
    "model/manifest.json",
    "model/validation_inputs.npy",
    "model/validation_labels.npy",
)
_IGNORED_KEYS = ("output_dir", "config_dir")  # where a study lives is not what it is


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (16 hex digits) of a config mapping, without the keys that only say where it lives."""
    body = {k: v for k, v in config.items() if k not in _IGNORED_KEYS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Generation:
    """The record of one complete set of derived outputs (``generation.json``)."""

    config_hash: str
    files: dict[str, str] = field(default_factory=dict)  # relative path → SHA-256
    created: str = ""
    interrupted: bool = False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_generation(out: str | Path) -> Generation | None:
    """The folder's generation record, or None (none written, or unreadable)."""
    try:
        doc = json.loads((Path(out) / GENERATION_FILE).read_text(encoding="utf-8"))
        return Generation(
            str(doc["config_hash"]),
            {str(k): str(v) for k, v in doc["files"].items()},
            str(doc.get("created", "")),
            bool(doc.get("interrupted", False)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def changed_files(out: str | Path, gen: Generation) -> list[str]:
    """The files of ``gen`` that are missing or no longer match their recorded SHA-256."""
    return [
        rel
        for rel, digest in gen.files.items()
        if not (Path(out) / rel).is_file() or _sha256(Path(out) / rel) != digest
    ]


def verify_generation(out: str | Path) -> tuple[Generation | None, list[str]]:
    """The generation record and what no longer matches it (missing or changed files; empty when intact)."""
    gen = read_generation(out)
    if gen is None:
        return None, [f"no {GENERATION_FILE}"]
    problems = [f"{rel} is missing or changed since it was written" for rel in changed_files(out, gen)]
    if (Path(out) / JOURNAL_FILE).exists():
        problems.append("a later run was stopped while writing its outputs")
    return gen, problems


def _journal_files(out: Path) -> list[str]:
    try:
        return [line.strip() for line in (out / JOURNAL_FILE).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return []


def _remove(out: Path, rel: str) -> None:
    path = (out / rel).resolve()
    if out.resolve() not in path.parents:  # a record never sends a deletion outside the folder
        return
    path.unlink(missing_ok=True)
    for tmp in atomic.temp_names(path):  # what a kill left while writing it
        tmp.unlink(missing_ok=True)
    for tmp_dir in path.parent.glob(atomic.TEMP_PREFIX + "*"):
        shutil.rmtree(tmp_dir, ignore_errors=True)
    for parent in path.parents:  # folders the outputs lived in, once empty
        if parent == out.resolve():
            break
        try:
            parent.rmdir()
        except OSError:
            break


def clear_outputs(out: str | Path, keep: Iterable[str] = ()) -> list[str]:
    """Remove the derived outputs (the generation record first), except ``keep``; returns what was removed.

    The files are those of the generation record and of an unfinished run's journal; a study folder
    with neither (an earlier release) loses the names that release wrote.
    """
    out = Path(out)
    gen = read_generation(out)
    journal = _journal_files(out)
    names = list(gen.files) if gen is not None else []
    names += journal
    if gen is None and not journal:
        names += list(LEGACY_OUTPUTS)
    (out / GENERATION_FILE).unlink(missing_ok=True)  # from here on the folder holds no valid generation
    kept = set(keep)
    removed = []
    for rel in dict.fromkeys(names):
        if rel not in kept:
            _remove(out, rel)
            removed.append(rel)
    (out / JOURNAL_FILE).unlink(missing_ok=True)
    return removed


def reusable_files(
    out: str | Path, new_hash: str, prefixes: tuple[str, ...], required: tuple[str, ...] = ()
) -> list[str] | None:
    """Files under ``prefixes`` of the folder's generation that a new generation of ``new_hash`` may keep.

    None unless the generation is of the same config, no run was stopped while writing, and the files
    under ``prefixes`` and those in ``required`` are unchanged (other files may be missing: they are rebuilt).
    """
    gen = read_generation(out)
    if gen is None or gen.config_hash != new_hash or (Path(out) / JOURNAL_FILE).exists():
        return None
    if any(rel.startswith(prefixes) or rel in required for rel in changed_files(out, gen)):
        return None
    return [rel for rel in gen.files if rel.startswith(prefixes)]


def begin_generation(
    out: str | Path, new_hash: str, keep: Iterable[str] | None = None, exclude: tuple[str, ...] = CACHE_FILES
) -> tuple[atomic.OutputJournal, list[str]]:
    """Remove the previous generation and start the journal of the next one.

    ``keep`` (default: the exported model and LoadGen's logs, ``model/`` and ``deployment/``, when reusable
    for ``new_hash``) survives and
    becomes part of the new generation.

    Returns:
        (the journal to write under, the kept files)
    """
    out = Path(out)
    kept = list(keep) if keep is not None else (reusable_files(out, new_hash, ("model/", "deployment/")) or [])
    clear_outputs(out, keep=kept)
    journal = atomic.OutputJournal(out, JOURNAL_FILE, exclude=exclude)
    for rel in kept:
        journal.note(out / rel)
    return journal, kept


HASH_KEY = "config_hash"


def stamp_outputs(out: str | Path, files: Iterable[str], new_hash: str) -> list[str]:
    """Write the config hash into every derived file that can hold it: a ``config_hash`` column in each CSV, a
    ``config_hash`` key in each JSON object, a ``config_hash`` text chunk in each PNG (HTML pages carry a
    ``<meta>``). Values are kept as written (CSV cells are copied as text). Returns the files stamped."""
    out = Path(out)
    stamped = []
    for rel in files:
        path = out / rel
        if path.is_file() and _stamp(path, new_hash):
            stamped.append(rel)
    return stamped


def _stamp(path: Path, new_hash: str) -> bool:
    if path.suffix == ".csv":
        return _stamp_csv(path, new_hash)
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(doc, dict) or doc.get(HASH_KEY) == new_hash:
            return isinstance(doc, dict)
        atomic.write_text(path, json.dumps({**doc, HASH_KEY: new_hash}, indent=2, ensure_ascii=False) + "\n")
        return True
    if path.suffix == ".png":
        return _stamp_png(path, new_hash)
    return False


def _stamp_csv(path: Path, new_hash: str) -> bool:
    """Set the ``config_hash`` column of a CSV (added, or its cells replaced); every other cell is copied as
    text (the csv module, no type inference)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows or not rows[0]:
        return False
    header = rows[0]
    col = header.index(HASH_KEY) if HASH_KEY in header else len(header)
    for i, row in enumerate(rows):
        value = HASH_KEY if i == 0 else new_hash
        if col < len(row):
            row[col] = value
        else:
            row.extend([""] * (col - len(row)) + [value])

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)

    atomic.write_with(path, write)
    return True


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _stamp_png(path: Path, new_hash: str) -> bool:
    """Put a ``config_hash`` tEXt chunk right after the PNG's header chunk (replacing an earlier one); the
    image data is copied byte for byte, not decoded and re-encoded."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return False
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if not (kind == b"tEXt" and body.split(b"\0", 1)[0] == HASH_KEY.encode()):
            chunks.append(data[pos : pos + 12 + length])
        pos += 12 + length
    if not chunks or chunks[0][4:8] != b"IHDR":
        return False
    body = HASH_KEY.encode() + b"\0" + new_hash.encode("latin-1")
    text = len(body).to_bytes(4, "big") + b"tEXt" + body + zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
    atomic.write_with(path, lambda t: t.write_bytes(_PNG_SIGNATURE + chunks[0] + text + b"".join(chunks[1:])))
    return True


def commit_generation(
    out: str | Path, new_hash: str, journal: atomic.OutputJournal, interrupted: bool = False
) -> Generation:
    """Record the files the journal lists (with their SHA-256) as the folder's generation; end the journal."""
    out = Path(out)
    files = {rel: _sha256(out / rel) for rel in journal.files if (out / rel).is_file()}
    gen = Generation(new_hash, files, time.strftime("%Y-%m-%dT%H:%M:%S%z"), interrupted)
    atomic.write_json(
        out / GENERATION_FILE,
        {"config_hash": gen.config_hash, "created": gen.created, "interrupted": gen.interrupted, "files": gen.files},
    )
    (out / JOURNAL_FILE).unlink(missing_ok=True)
    return gen


def _cache_listing(out: Path) -> set[str]:
    """Every file below the cache folders (relative POSIX paths; symbolic links count as files, never followed)."""
    found: set[str] = set()
    for sub in CACHE_DIRS:
        if (out / sub).is_symlink():  # a linked cache folder is the user's: listed as one entry, never entered
            found.add(sub)
            continue
        for root, dirs, files in os.walk(out / sub):
            here = Path(root)
            found.update((here / name).relative_to(out).as_posix() for name in files)
            found.update((here / d).relative_to(out).as_posix() for d in dirs if (here / d).is_symlink())
    return found


def _read_ledger(out: Path) -> dict[str, Any]:
    try:
        doc = json.loads((out / CACHE_LEDGER).read_text())
    except (OSError, ValueError):
        return {"files": [], "open": None}
    if not isinstance(doc, dict):
        return {"files": [], "open": None}
    raw = doc.get("files")
    files: list[Any] = raw if isinstance(raw, list) else []
    before = doc.get("open")
    return {"files": [f for f in files if isinstance(f, str)], "open": before if isinstance(before, list) else None}


def _settled(out: Path, doc: dict[str, Any]) -> set[str]:
    """The files the study wrote: the recorded ones plus what appeared since an open (or killed) run began."""
    ours = set(doc["files"])
    if doc["open"] is not None:
        ours |= _cache_listing(out) - set(doc["open"])
    return ours


def open_cache_ledger(out: str | Path) -> None:
    """Note what the cache folders hold as a run begins (call under the folder lock)."""
    out = Path(out)
    doc = _read_ledger(out)
    ours = _settled(out, doc)
    now = _cache_listing(out)
    atomic.write_json(out / CACHE_LEDGER, {"files": sorted(ours & now), "open": sorted(now)})


def close_cache_ledger(out: str | Path) -> None:
    """Record the cache files that appeared during the run as the study's (call before releasing the lock)."""
    out = Path(out)
    doc = _read_ledger(out)
    ours = _settled(out, doc) & _cache_listing(out)
    atomic.write_json(out / CACHE_LEDGER, {"files": sorted(ours), "open": None})


def _prune_empty(folder: Path) -> None:
    """Remove empty folders below and including ``folder`` (never following a symbolic link)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for root, dirs, _ in os.walk(folder, topdown=False):
        for d in dirs:
            path = Path(root) / d
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()  # only succeeds when empty
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_study(out: str | Path) -> list[str]:
    """``--fresh``: delete everything the study wrote in ``out`` (store, caches, derived outputs), nothing else.

    Returns:
        The files in the cache folders that the study did not record writing (left in place, for a warning).
    """
    out = Path(out)
    ours = _settled(out, _read_ledger(out))
    clear_outputs(out)
    for name in (*STORE_FILES, *CACHE_FILES):
        (out / name).unlink(missing_ok=True)
    for rel in sorted(ours):
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()
    for sub in CACHE_DIRS:
        _prune_empty(out / sub)
    kept = sorted(_cache_listing(out))
    (out / CACHE_LEDGER).unlink(missing_ok=True)
    return kept


def foreign_entries(out: str | Path, limit: int = 3) -> list[str]:
    """Names in ``out`` that no edge_opt study put there (hidden files and nested study folders are fine)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = []
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and any((Path(entry.path) / m).exists() for m in ("study.sqlite", "summary_multi_seed.json")):
            continue
        found.append(entry.name)
        if len(found) >= limit:
            break
    return found
