"""Report stage: the only place records become tables, plots, the summary, ``report.html``, comparisons,
experiment tracking and progress lines.
"""

from __future__ import annotations

from .compare import compare_studies
from .files import build_summary, write_outputs, write_plots
from .html import write_html_report
from .progress import Reporter
from .recommendation import Recommendation
from .sensitivity import write_sensitivity
from .stage import (
    StudyOutcome,
    StudyReport,
    frontiers,
    reproducibility_record,
    with_vendor_rows,
    write_search_history,
    write_study_report,
)
from .tracking import check_tracking, log_study_mlflow

__all__ = [
    "Recommendation",
    "Reporter",
    "StudyOutcome",
    "StudyReport",
    "build_summary",
    "check_tracking",
    "compare_studies",
    "frontiers",
    "log_study_mlflow",
    "reproducibility_record",
    "with_vendor_rows",
    "write_html_report",
    "write_outputs",
    "write_plots",
    "write_search_history",
    "write_sensitivity",
    "write_study_report",
]
