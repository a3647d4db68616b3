"""Report stage: records → the study's tables, summary, plots, reproducibility record and HTML.

``write_study_report`` is the study's reporting edge: it turns the assessed records into the
sweep table (``to_frame``), the frontiers, ``summary.json`` (its documented core keys, then the
recommendation, warnings, hardware and deployment results), the plots, ``reproducibility.json``
and ``report.html``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import BudgetSettings, StudyConfig
from ..core import atomic, environment, git_commit, package_versions
from ..deploy import DeploymentResult, ExportedArtifact, TargetRun, simulation_gap
from ..hardware import HardwareAnalysis
from ..inputs import DataBundle
from ..measure import VariantResult
from ..study import (
    BASELINE_COLUMNS,
    BASELINE_POINT,
    Assessment,
    SearchOutcome,
    Selection,
    VendorRow,
    history_rows,
    metric_higher_is_better,
    scores_metric,
    select_recommendation,
    to_frame,
)
from .files import build_summary, quality_frontier, write_outputs, write_plots
from .html import write_html_report
from .recommendation import Recommendation
from .sensitivity import mixed_comparison, write_sensitivity

__all__ = [
    "BASELINE_KEYS",
    "LATENCY_NOTE",
    "SEARCH_HISTORY",
    "StudyOutcome",
    "StudyReport",
    "frontiers",
    "recommendation_summary",
    "with_vendor_rows",
    "write_search_history",
    "skipped_summary",
    "reproducibility_record",
    "write_study_report",
]

BASELINE_KEYS = BASELINE_COLUMNS
LATENCY_NOTE = (
    "latency_ms columns are host measurements (batch of latency_batch_size, torch.utils.benchmark); "
    "device_latency_ms = latency_ms × latency_multiplier (linear clock model)"
)


@dataclass(frozen=True)
class StudyOutcome:
    """Everything the stages before the report produced."""

    cfg: StudyConfig
    assessed: tuple[Assessment, ...]
    baseline: VariantResult | None
    selection: Selection
    artifact: ExportedArtifact | None = None
    hardware: HardwareAnalysis | None = None
    deployment: DeploymentResult = field(default_factory=DeploymentResult)
    warnings: tuple[str, ...] = ()
    total_points: int = 0
    interrupted: bool = False
    skipped: tuple[VariantResult, ...] = ()
    search: SearchOutcome | None = None  # the Optuna search that chose the points (None: the grid)
    targets: tuple[TargetRun, ...] = ()  # the devices measured on besides the host
    on_target: Mapping[str, tuple[Assessment, ...]] = field(default_factory=dict)
    host_selection: Selection | None = None  # the host's choice when a target's numbers chose the artifact
    vendor_rows: tuple[VendorRow, ...] = ()  # rows imported from vendor benchmark reports
    model_conversion: Mapping[str, Any] | None = None  # an ONNX model's conversion to PyTorch (summary.json)
    graph_transform: Mapping[str, Any] | None = None  # what model.simplify did to an ONNX model's graph (summary.json)
    host: Mapping[str, Any] = field(default_factory=dict)  # peak_rss_mb by stage, host_load (summary.json)

    @property
    def all_assessed(self) -> tuple[Assessment, ...]:
        """Host rows, then each target's rows."""
        return self.assessed + tuple(a for rows in self.on_target.values() for a in rows)

    @property
    def recommendation(self) -> Recommendation | None:
        """The chosen configuration with its artifact (None when nothing was chosen or the study was interrupted)."""
        return Recommendation.of(self.selection, self.artifact)


@dataclass(frozen=True)
class StudyReport:
    """The written report: the sweep table and the summary."""

    output_dir: Path
    frame: pd.DataFrame
    summary: dict[str, Any]
    frontier_latency: pd.DataFrame = field(default_factory=pd.DataFrame)
    frontier_energy: pd.DataFrame = field(default_factory=pd.DataFrame)
    recommendation: Recommendation | None = None


def recommendation_summary(o: StudyOutcome) -> dict[str, Any] | None:
    """The ``recommended`` entry of summary.json (None when nothing was chosen or the study was interrupted)."""
    rec = o.recommendation
    return rec.to_dict() if rec is not None else None


def _deployment_summary(o: StudyOutcome) -> dict[str, Any]:
    deployment = o.deployment.to_dict()
    if not deployment:
        return deployment
    main = deployment.get("recommended", deployment.get("baseline", {}))
    for k in ("batch_latency_ms", "batch_throughput_sps", "stream_avg_latency_ms", "stream_throughput_sps"):
        if k in main:  # the reference's top-level batch keys, from the recommended (else baseline) simulation
            deployment[k] = main[k]
    hw = o.hardware.summaries if o.hardware is not None else {}
    deployment["hardware_summary"] = hw.get("recommended", hw.get("baseline"))
    return deployment


def _metric_summary(o: StudyOutcome) -> dict[str, Any]:
    """summary.json's ``metric`` object {name, display_name, higher_is_better, baseline} (nothing for top1)."""
    cfg = o.cfg.part(BudgetSettings)
    if not scores_metric(cfg):
        return {}
    rec = o.baseline.measurement if o.baseline is not None else None
    name = cfg.metric_name or cfg.metric.rpartition(":")[2]
    baseline = rec.metrics.metric if rec is not None and rec.metric_name is not None else None
    return {
        "metric": {
            "name": name,
            "display_name": rec.metric_name if rec is not None and rec.metric_name else name,
            "higher_is_better": metric_higher_is_better(cfg),
            "baseline": baseline if baseline is not None and math.isfinite(baseline) else None,
        }
    }


def _summary(o: StudyOutcome, frame: pd.DataFrame) -> dict[str, Any]:
    cfg = o.cfg
    baseline = {k: o.baseline.row().get(k) for k in BASELINE_KEYS} if o.baseline is not None else {}
    point = o.baseline.point if o.baseline is not None else BASELINE_POINT
    baseline.update({"pruning_level": point.pruning_level, "precision": point.precision, "backend": point.backend})
    slower = [
        {
            "backend": a.point.backend,
            "precision": a.point.precision,
            "pruning_level": a.point.pruning_level,
            "latency_ms": a.metrics.latency_ms,
            "speedup_vs_fp32": a.speedup_vs_fp32,
        }
        for a in o.assessed
        if a.slower_than_fp32
    ]
    mismatches = [
        {
            "backend": a.point.backend,
            "precision": a.point.precision,
            "pruning_level": a.point.pruning_level,
            "kernel_precision": a.result.measurement.kernel_precision if a.result.measurement else None,
        }
        for a in o.assessed
        if a.precision_mismatch
    ]
    model_source, model_sha256 = _model_identity(o)
    return build_summary(
        baseline,
        cfg.memory_budgets_mb,
        cfg.active_memory_budget_mb,
        cfg.cpu_frequency_scale,
        cfg.latency_multiplier,
        frame,
        _deployment_summary(o),
        recommended=recommendation_summary(o),
        slower_than_fp32=slower,
        precision_mismatches=mismatches,
        hardware=dict(o.hardware.summaries) if o.hardware else {},
        warnings=sorted(set(o.warnings)),
        latency_note=LATENCY_NOTE,
        finished_points=len(o.assessed) + len(o.skipped),
        total_points=o.total_points,
        interrupted=o.interrupted,
        skipped=skipped_summary(o.skipped),
        int8_mixed=mixed_comparison(o.assessed).to_dict("records"),
        model_source=model_source,
        model_sha256=model_sha256,
        config_hash=cfg.config_hash,
        search=o.search.summary() if o.search is not None else {"strategy": "grid"},
        measured_on=list(cfg.measure_on),
        recommend_for=cfg.recommendation_target,
        targets=_targets_summary(o),
        **_metric_summary(o),
        **({"onnx_conversion": dict(o.model_conversion)} if o.model_conversion is not None else {}),
        **({"graph_transform": dict(o.graph_transform)} if o.graph_transform is not None else {}),
        **o.host,
    )


def _targets_summary(o: StudyOutcome) -> dict[str, Any]:
    """Per target: its rows, errors, fingerprint, its own recommendation and how far the simulation was."""
    hosts = [a.result for a in o.assessed]
    out: dict[str, Any] = {}
    for run in o.targets:
        rows = o.on_target.get(run.name, ())
        sel = select_recommendation(rows, o.baseline, o.cfg.part(BudgetSettings))
        best = sel.chosen
        out[run.name] = {
            "rows": len(run.results),
            "measured_now": run.measured,
            "errors": [{**asdict(r.point), "error": r.error} for r in run.results if r.error],
            "skipped": [{**asdict(r.point), "reason": r.skipped} for r in run.results if r.skipped],
            "fingerprint": run.fingerprint,
            "recommended": None
            if best is None
            else {
                **asdict(best.point),
                "key": best.result.key,
                "accuracy": best.metrics.accuracy,
                "latency_ms": best.metrics.latency_ms,
                "latency_ci95_ms": best.metrics.latency_ci95_ms,
            },
            "simulation_vs_measured": simulation_gap(o.cfg, hosts, run),
        }
    return out


def skipped_summary(skipped: Sequence[VariantResult]) -> list[dict[str, Any]]:
    """``summary.json``'s ``skipped``: each point that does not apply, with its reason."""
    return [{**asdict(r.point), "key": r.key, "reason": r.skipped} for r in skipped]


def _model_identity(o: StudyOutcome) -> tuple[str | None, str | None]:
    for r in (o.baseline, *(a.result for a in o.assessed), *o.skipped):
        if r is not None and r.model_source is not None:
            return r.model_source, r.model_sha256
    return None, None


def reproducibility_record(cfg: StudyConfig, data: DataBundle, command: Sequence[str] | None) -> dict[str, Any]:
    """What it takes to run the study again: command, commit, seeds, config, environment, data."""
    return {
        "command": list(command) if command else sys.argv,
        "git_commit": git_commit(Path(__file__).parent),
        "seeds": {"seed": cfg.seed, "dataloader_seed": cfg.dataloader_seed},
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash,
        "environment": environment(cfg.threads),
        "package_versions": package_versions(),
        "torch_threads_measurement": cfg.threads,
        "torch_threads_training": torch.get_num_threads(),
        "data": {
            "source": data.source,
            "n_train": data.n_train,
            "n_val": data.n_val,
            "input_shape": list(data.input_shape),
            "mean": data.mean,
            "std": data.std,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def frontiers(frame: pd.DataFrame, use_ci: bool, higher_is_better: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latency–accuracy and energy–accuracy Pareto frontiers of the sweep table (one per ``measured_on``:
    the host's and each target's, never mixed); against the study's metric in its direction when the table has a
    ``metric`` column."""
    if frame.empty or "latency_ms" not in frame.columns:
        return frame, frame
    groups = [g for _, g in frame.groupby("measured_on", sort=False)] if "measured_on" in frame.columns else [frame]
    lat = [quality_frontier(g, "latency_ms", use_ci, higher_is_better) for g in groups]
    en = [quality_frontier(g, "energy_proxy_j", use_ci, higher_is_better) for g in groups]
    return pd.concat(lat, ignore_index=True), pd.concat(en, ignore_index=True)


def write_study_report(out: Path, o: StudyOutcome, data: DataBundle, command: Sequence[str] | None) -> StudyReport:
    """Stage: write the sweep table, frontiers, summary.json, plots, reproducibility.json and report.html."""
    frame = with_vendor_rows(to_frame(o.all_assessed), o.vendor_rows)
    has_rows = len(o.assessed) > 0
    higher = metric_higher_is_better(o.cfg.part(BudgetSettings))
    frontier_lat, frontier_en = frontiers(frame, o.cfg.pareto_use_ci, higher)
    summary = _summary(o, frame)
    write_outputs(out, frame, frontier_lat, frontier_en, summary)
    if has_rows:
        chosen = o.selection.chosen
        who = o.cfg.recommendation_target if o.on_target else "host"  # the plots show the rows that chose
        write_plots(
            out,
            _rows_of(frame, who),
            _rows_of(frontier_lat, who),
            _rows_of(frontier_en, who),
            recommended_key=chosen.result.key if chosen else None,
            higher_is_better=higher,
        )
    atomic.write_json(out / "reproducibility.json", reproducibility_record(o.cfg, data, command))
    write_sensitivity(out, o.cfg)
    mixed = mixed_comparison(o.assessed)
    if len(mixed):
        atomic.write_with(out / "mixed_precision.csv", lambda t: mixed.to_csv(t, index=False, encoding="utf-8"))
    if o.search is not None:
        write_search_history(out, o.search)
    write_html_report(out)
    return StudyReport(out, frame, summary, frontier_lat, frontier_en, o.recommendation)


def with_vendor_rows(frame: pd.DataFrame, rows: Sequence[VendorRow]) -> pd.DataFrame:
    """The sweep table with the imported vendor rows appended (they keep their own ``measured_on``)."""
    return pd.concat([frame, pd.DataFrame([r.row() for r in rows])], ignore_index=True) if rows else frame


def _rows_of(frame: pd.DataFrame, measured_on: str) -> pd.DataFrame:
    return frame[frame["measured_on"] == measured_on] if "measured_on" in frame.columns and len(frame) else frame


SEARCH_HISTORY = "search_history.csv"


def write_search_history(out: Path, search: SearchOutcome) -> None:
    """``search_history.csv``: every trial of the search (number, config point, values, feasibility, wall time)."""
    frame = pd.DataFrame(history_rows(search))
    atomic.write_with(out / SEARCH_HISTORY, lambda t: frame.to_csv(t, index=False, encoding="utf-8"))
