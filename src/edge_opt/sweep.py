"""The sweep's public face: ``run_sweep`` (grid → table) and a stored study read back as records.

The machinery lives in its stage modules: config points, keys and the ``Sweep`` in
``edge_opt.runner`` (measure), budgets and the recommendation in ``edge_opt.selection``
(analyse), the table in ``edge_opt.reporting.to_frame`` (report). Their names are re-exported
here for the seeds' ``edge_opt.sweep`` imports.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from .config import ConfigError, StudyConfig, config_from_dict
from .data import DataBundle
from .results import ConfigPoint, VariantResult
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
from .selection import assess_results, best_effort, recommend, to_frame
from .store import StoreFormatError, StudyStore

__all__ = [
    "BASELINE_POINT", "MEASURE_VERSION", "ConfigPoint", "StoredStudy", "StudyInterrupted", "Sweep", "VariantResult",
    "assess_results", "baseline_fingerprint", "best_effort", "load_stored_study", "parent_key", "point_key",
    "recommend", "run_sweep", "stable_hash", "stored_results", "sweep_points",
]


def run_sweep(model: nn.Module, data: DataBundle, cfg: StudyConfig, workdir: str | Path = "outputs",
              store: StudyStore | None = None, baseline: VariantResult | None = None, **kwargs: Any) -> pd.DataFrame:
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


def load_stored_study(folder: str | Path) -> StoredStudy:
    """The config (from ``reproducibility.json``), the stored results of its grid and its baseline.

    Raises:
        ConfigError: the folder holds no study (missing files) or a store of another release.
    """
    out = Path(folder)
    try:
        repro = json.loads((out / "reproducibility.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{str(out)!r} holds no finished study (reproducibility.json): {exc}"]) from None
    if not (out / "study.sqlite").is_file():
        raise ConfigError([f"{str(out)!r} holds no study store (study.sqlite)."])
    cfg = config_from_dict(repro["config"])
    try:
        with StudyStore(out / "study.sqlite") as store:
            results, baseline = stored_results(store, cfg, sweep_points(cfg))
    except StoreFormatError as exc:
        raise ConfigError([str(exc)]) from None
    return StoredStudy(cfg, tuple(results), baseline)
