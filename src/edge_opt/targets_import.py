"""``edge-opt import-bench``: a vendor tool's report read into a finished study as a row of a named target,
then the study's tables and report rebuilt (nothing re-run)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .config import ConfigError
from .pipeline import rebuild_report
from .results import ConfigPoint
from .store import StudyStore
from .sweep import load_stored_study
from .targets import VENDOR_KIND, vendor_row
from .vendor_logs import VendorLogError, read_vendor_log

__all__ = ["import_vendor_log", "parse_point"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_point(text: str) -> ConfigPoint:
    """``backend=…,precision=…,pruning_level=…[,calibration=…]`` → a config point (ConfigError naming the key)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("backend", "precision", "pruning_level", "calibration"):
            raise ConfigError([f"--point: {part.strip()[:40]!r} is not one of backend=, precision=, pruning_level=, "
                               "calibration="])
        fields[key.strip()] = value.strip()
    missing = [k for k in ("backend", "precision") if k not in fields]
    if missing:
        raise ConfigError([f"--point must give {missing}; got {text[:80]!r}"])
    try:
        level = float(fields.get("pruning_level", "0"))
    except ValueError:
        raise ConfigError([f"--point pruning_level must be a number; got {fields['pruning_level'][:20]!r}"]) from None
    return ConfigPoint(level, fields["precision"], fields["backend"], fields.get("calibration", ""))


def import_vendor_log(study_dir: str | Path, file: str | Path, target: str, point_text: str) -> dict[str, Any]:
    """Store the report's measurement as a row of ``target`` for the point and rebuild the study's outputs."""
    if not _NAME.match(target) or target == "host":
        raise ConfigError([f"--target must be a name of letters, digits, . _ - (not 'host'); got {target[:40]!r}"])
    point = parse_point(point_text)
    study = load_stored_study(study_dir)
    host = next((r for r in study.results if r.point == point and r.ok and r.metrics is not None), None)
    if host is None:
        have = sorted({f"backend={r.point.backend},precision={r.point.precision},pruning_level={r.point.pruning_level:g}"
                       for r in study.results if r.ok})[:6]
        raise ConfigError([f"--point {point_text[:80]!r} is not a measured point of the study; measured: {have}"])
    try:
        measurement = read_vendor_log(file)
    except VendorLogError as exc:
        raise ConfigError([str(exc)]) from None
    row = vendor_row(study.cfg, host, measurement, target)

    def store_row() -> None:  # under the folder's lock: a running study refuses the import, nothing written
        with StudyStore(Path(study_dir) / "study.sqlite") as store:
            store.put(row["key"], row, kind=VENDOR_KIND)

    rebuild_report(study_dir, before=store_row)
    return row
