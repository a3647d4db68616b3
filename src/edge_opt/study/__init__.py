"""Study stage: config points and their keys, the sweep that builds and measures them, executors, the SQLite
store behind resume, the Optuna search, budgets, selection and Pareto frontiers.
"""

from __future__ import annotations

from .executors import RayExecutor
from .pareto import pareto_frontier
from .runner import (
    BASELINE_POINT,
    Executor,
    LocalExecutor,
    StudyInterrupted,
    Sweep,
    baseline_point,
    check_metric,
    folder_digest,
    model_factory,
    parent_key,
    point_key,
    stable_hash,
    stored_results,
    sweep_points,
    train_baseline,
)
from .search import SearchOutcome, history_rows, hypervolume_2d, judge_with, load_search, run_search, search_space
from .selection import (
    BASELINE_COLUMNS,
    MANIFEST_COLUMNS,
    RAW_SAMPLE_COLUMNS,
    REPORT_COLUMNS,
    TEXT_COLUMNS,
    Assessment,
    Selection,
    assess_results,
    metric_higher_is_better,
    recommend,
    scores_metric,
    select_recommendation,
    study_warnings,
    to_frame,
)
from .store import VENDOR_KIND, StoreFormatError, StudyStore
from .sweep import StoredStudy, load_stored_study, run_sweep
from .vendor import VendorRow, stored_vendor_rows

__all__ = [
    "Assessment",
    "BASELINE_COLUMNS",
    "BASELINE_POINT",
    "Executor",
    "LocalExecutor",
    "MANIFEST_COLUMNS",
    "RAW_SAMPLE_COLUMNS",
    "REPORT_COLUMNS",
    "RayExecutor",
    "SearchOutcome",
    "Selection",
    "StoreFormatError",
    "StoredStudy",
    "StudyInterrupted",
    "StudyStore",
    "Sweep",
    "TEXT_COLUMNS",
    "VENDOR_KIND",
    "VendorRow",
    "assess_results",
    "metric_higher_is_better",
    "baseline_point",
    "check_metric",
    "folder_digest",
    "history_rows",
    "hypervolume_2d",
    "judge_with",
    "load_search",
    "load_stored_study",
    "model_factory",
    "parent_key",
    "pareto_frontier",
    "point_key",
    "recommend",
    "run_search",
    "run_sweep",
    "search_space",
    "scores_metric",
    "select_recommendation",
    "stable_hash",
    "stored_results",
    "stored_vendor_rows",
    "study_warnings",
    "sweep_points",
    "to_frame",
    "train_baseline",
]
