"""The sweep's public face: ``run_sweep`` (grid → table) and a stored study read back as records.

The machinery lives in its stage modules: config points, keys and the ``Sweep`` in
``edge_opt.study.runner`` (measure), budgets and the recommendation in ``edge_opt.study.selection``
(analyse), the table in ``edge_opt.report.files.to_frame`` (report). Their names are re-exported
here for code that imports them from ``edge_opt.study.sweep`` (formerly ``edge_opt.sweep``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ..config import ConfigError, StudyConfig, VariantSettings, config_from_dict
from ..inputs import DataBundle
from ..measure import ConfigPoint, VariantResult
from .runner import (
    BASELINE_POINT,
    MEASURE_VERSION,
    StudyInterrupted,
    Sweep,
    baseline_fingerprint,
    parent_key,
    point_key,
    stable_hash,
    stored_results,
    sweep_points,
)
from .search import SearchOutcome, load_search
from .selection import assess_results, best_effort, recommend, to_frame
from .store import StudyStore
from .vendor import VendorRow, stored_vendor_rows

__all__ = [
    "BASELINE_POINT",
    "MEASURE_VERSION",
    "ConfigPoint",
    "StoredStudy",
    "StudyInterrupted",
    "Sweep",
    "VariantResult",
    "assess_results",
    "baseline_fingerprint",
    "best_effort",
    "load_stored_study",
    "parent_key",
    "point_key",
    "recommend",
    "run_sweep",
    "stable_hash",
    "stored_results",
    "sweep_points",
]


def run_sweep(
    model: nn.Module,
    data: DataBundle,
    cfg: StudyConfig,
    workdir: str | Path = "outputs",
    store: StudyStore | None = None,
    baseline: VariantResult | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Run the study grid for a trained model and return one row per variant (budgets applied).

    Args:
        model: trained float baseline.
        data: the ``DataBundle``.
        cfg: study config (pruning_levels × precisions × backends, budgets, measurement settings).
        workdir: folder for checkpoints, ONNX files and per-variant metadata.
        store: optional study store for resume.
        baseline: the baseline's result (speed-ups, accuracy drop); default: the grid's unpruned fp32
            torch point when present.
        **kwargs: passed to ``Sweep`` (model_factory, on_event, should_stop, ort_op_types_to_quantize).
    Returns:
        DataFrame with pruning_level, precision, backend, accepted, error, active_budget_mb, every
        PerfMetrics field, violation flags, speed-ups and the slower-than-fp32 flag.
    """
    results = Sweep(model, data, cfg, workdir, store, **kwargs).run()
    if baseline is None:
        baseline = next((r for r in results if r.point == BASELINE_POINT), None)
    return to_frame(assess_results(results, cfg, baseline))


@dataclass(frozen=True)
class StoredStudy:
    """A finished study read back from its folder."""

    cfg: StudyConfig
    results: tuple[VariantResult, ...]
    baseline: VariantResult | None
    search: SearchOutcome | None = None  # the search's trials when the config searched instead of gridding
    vendor_rows: tuple[VendorRow, ...] = ()  # rows imported from vendor benchmark reports


def load_stored_study(folder: str | Path) -> StoredStudy:
    """The config of the folder's last run (kept in its store), the stored results of its grid and its baseline.

    A store of an earlier release that kept no config is read with ``reproducibility.json``'s.

    Raises:
        ConfigError: the folder holds no study, a store of another program or release, or no config.
    """
    out = Path(folder)
    db = out / "study.sqlite"
    if not db.is_file():
        raise ConfigError([f"{str(out)!r} holds no study (no study.sqlite)."])
    problem = StudyStore.probe(db)
    if problem is not None:
        raise ConfigError([str(problem)])
    with StudyStore(db) as store:
        cfg = _study_config(out, store.get_meta("config"))
        search = load_search(cfg, out)
        points = search.points if search is not None else sweep_points(cfg.part(VariantSettings))
        try:
            results, baseline = stored_results(store, cfg, points, untimed=search is not None)
        except ValueError as exc:  # ResultFormatError: documents of another release
            raise ConfigError([f"{str(db)!r}: {exc}; run again with --fresh."]) from None
        vendor = tuple(stored_vendor_rows(store))
    return StoredStudy(cfg, tuple(results), baseline, search, vendor)


def _study_config(out: Path, stored: Any) -> StudyConfig:
    if stored is None:
        try:
            stored = json.loads((out / "reproducibility.json").read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                [
                    f"{str(out)!r}: cannot tell which config the study used (its store keeps none and "
                    f"reproducibility.json has none: {type(exc).__name__}: {exc})."
                ]
            ) from None
    if isinstance(stored, dict) and (
        stored.get("max_metric_drop") is not None or stored.get("metric", "top1") != "top1"
    ):
        # a full dump keeps the default max_accuracy_drop beside the metric's budget, which the config refuses
        stored = {k: v for k, v in stored.items() if k != "max_accuracy_drop"}
    try:
        return config_from_dict(stored)
    except ConfigError as exc:
        raise ConfigError(
            [f"{str(out)!r}: the study's recorded config is not valid: {e}" for e in exc.errors]
        ) from None
