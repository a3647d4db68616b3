"""Report stage files: summary, CSV/JSON outputs, trade-off plots, reproducibility record.

All files are UTF-8, written atomically; CSVs carry no index; JSON uses 2-space
indentation with NaN written as null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..core import atomic
from ..hardware import decade_axes
from ..study import RAW_SAMPLE_COLUMNS, to_frame  # to_frame: also the documented edge_opt.reporting.to_frame

__all__ = [
    "PLOT_DPI",
    "to_frame",
    "RAW_COLUMNS",
    "build_summary",
    "csv_frame",
    "plot_tradeoff",
    "quality_frontier",
    "write_csv",
    "write_outputs",
    "write_plots",
    "y_axis",
]

RAW_COLUMNS = RAW_SAMPLE_COLUMNS
PLOT_DPI = 140


def _clean_float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def build_summary(
    baseline: Mapping[str, Any],
    memory_budgets_mb: Sequence[float],
    active_memory_budget_mb: float,
    cpu_frequency_scale: float,
    latency_multiplier: float,
    sweep_df: pd.DataFrame,
    deployment: Mapping[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Summary of a study (its documented core fields, then any ``extra`` such as the recommendation).

    Args:
        baseline: baseline metrics (unpruned fp32, torch).
        memory_budgets_mb: all budgets evaluated.
        active_memory_budget_mb: the budget rows are accepted against.
        cpu_frequency_scale: simulated device clock / host clock.
        latency_multiplier: host → device latency factor (linear clock model).
        sweep_df: sweep rows with an ``accepted`` column.
        deployment: results of ``deployment_simulation``.
        **extra: additional top-level keys (recommended configuration, warnings …).
    Returns:
        Dict with baseline, memory_budgets_mb, active_memory_budget_mb, cpu_frequency_scale,
        latency_multiplier, study_rows, accepted_rows, rejected_rows, best_accuracy_accepted,
        lowest_latency_ms_accepted (None when nothing is accepted), deployment.
    """
    accepted = sweep_df[sweep_df["accepted"].astype(bool)] if "accepted" in sweep_df.columns else sweep_df.iloc[0:0]
    summary: dict[str, Any] = {
        "baseline": dict(baseline),
        "memory_budgets_mb": [float(b) for b in memory_budgets_mb],
        "active_memory_budget_mb": float(active_memory_budget_mb),
        "cpu_frequency_scale": float(cpu_frequency_scale),
        "latency_multiplier": float(latency_multiplier),
        "study_rows": int(len(sweep_df)),
        "accepted_rows": int(len(accepted)),
        "rejected_rows": int(len(sweep_df) - len(accepted)),
        "best_accuracy_accepted": _clean_float(accepted["accuracy"].max()) if len(accepted) else None,
        "lowest_latency_ms_accepted": _clean_float(accepted["latency_ms"].min()) if len(accepted) else None,
        "deployment": dict(deployment),
    }
    summary.update(extra)
    return summary


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The DataFrame as written to CSV: raw-sample columns dropped (they live in the study store)."""
    return df.drop(columns=[c for c in RAW_COLUMNS if c in df.columns])


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    """Atomically write a CSV (UTF-8, no index)."""
    return atomic.write_with(path, lambda tmp: csv_frame(df).to_csv(tmp, index=False, encoding="utf-8"))


def write_outputs(
    output_dir: str | Path,
    sweep_df: pd.DataFrame,
    pareto_latency_df: pd.DataFrame,
    pareto_energy_df: pd.DataFrame,
    summary: Mapping[str, Any],
) -> dict[str, Path]:
    """Write sweep_results.csv, pareto_frontier_latency.csv, pareto_frontier_energy.csv, summary.json.

    Args:
        output_dir: folder (created if missing).
        sweep_df: all configurations.
        pareto_latency_df: latency–accuracy frontier.
        pareto_energy_df: energy–accuracy frontier.
        summary: from ``build_summary``.
    Returns:
        Name → path of the four files.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "sweep_results": write_csv(out / "sweep_results.csv", sweep_df),
        "pareto_frontier_latency": write_csv(out / "pareto_frontier_latency.csv", pareto_latency_df),
        "pareto_frontier_energy": write_csv(out / "pareto_frontier_energy.csv", pareto_energy_df),
        "summary": atomic.write_json(out / "summary.json", dict(summary), indent=2),
    }
    return paths


def y_axis(df: pd.DataFrame) -> tuple[str, str]:
    """(column, label) of the quality axis: the ``metric`` column and its display name when the study scores
    another metric than top1, else ``accuracy``."""
    if "metric" in df.columns:
        names = df["metric_name"].dropna() if "metric_name" in df.columns else pd.Series([], dtype=object)
        return "metric", str(names.iloc[0]) if len(names) else "metric"
    return "accuracy", "accuracy"


def _label(r: pd.Series) -> str:
    return f"{r.get('backend', '')} {r.get('precision', '')} p{float(r.get('pruning_level', 0)):g}"


def _scatter_by_verdict(ax: Any, df: pd.DataFrame, x_col: str, y_col: str = "accuracy") -> None:
    """``y_col`` vs ``x_col`` of the accepted rows in green and the rejected ones in red, one marker per backend."""
    acc = df[df["accepted"].astype(bool)] if "accepted" in df.columns else df
    rej = df[~df["accepted"].astype(bool)] if "accepted" in df.columns else df.iloc[0:0]
    markers = {"torch": "o", "onnxruntime": "s", "torch_channels_last": "^"}
    for part, color, name in ((acc, "tab:green", "accepted"), (rej, "tab:red", "rejected")):
        for backend, grp in part.groupby("backend") if "backend" in part.columns and len(part) else []:
            ax.scatter(
                grp[x_col],
                grp[y_col],
                c=color,
                marker=markers.get(backend, "D"),
                alpha=0.75,
                label=f"{name} ({backend})",
                edgecolors="k",
                linewidths=0.4,
            )


def _ring_recommended(ax: Any, rec: pd.DataFrame, x_col: str, y_col: str = "accuracy") -> None:
    """A gold ring round the recommended row (when it is among the plotted rows), labelled by its point."""
    if not len(rec):
        return
    ax.scatter(
        rec[x_col],
        rec[y_col],
        s=220,
        facecolors="none",
        edgecolors="gold",
        linewidths=2.5,
        label="recommended",
        zorder=5,
    )
    ax.annotate(
        _label(rec.iloc[0]),
        (rec[x_col].iloc[0], rec[y_col].iloc[0]),
        textcoords="offset points",
        xytext=(8, -12),
        fontsize=8,
    )


def plot_tradeoff(
    path: str | Path,
    sweep_df: pd.DataFrame,
    x_col: str,
    x_label: str,
    frontier: pd.DataFrame | None = None,
    dpi: int = PLOT_DPI,
    recommended_key: str | None = None,
) -> Path:
    """Scatter accuracy (the study's metric, ``y_axis``) vs ``x_col``: accepted, rejected and error-free rows, the
    frontier as a line."""
    df = sweep_df[sweep_df["error"].isna()] if "error" in sweep_df.columns else sweep_df
    y_col, y_label = y_axis(sweep_df)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    _scatter_by_verdict(ax, df, x_col, y_col)
    if frontier is not None and len(frontier) and y_col in frontier.columns:
        f = frontier.sort_values(x_col)
        ax.plot(f[x_col], f[y_col], "-", color="tab:blue", lw=1.5, label="Pareto frontier", zorder=1)
    if recommended_key is not None and "key" in df.columns:
        _ring_recommended(ax, df[df["key"] == recommended_key], x_col, y_col)
    if (
        len(df)
        and (df[x_col].astype(float) > 0).all()
        and df[x_col].astype(float).max() / max(df[x_col].astype(float).min(), 1e-30) > 20
    ):
        ax.set_xscale("log")
        decade_axes(ax, "x")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{y_label} vs {x_label}")
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.11, top=0.93)  # fixed margins: no layout pass
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return Path(path)


def write_plots(
    output_dir: str | Path,
    sweep_df: pd.DataFrame,
    frontier_latency: pd.DataFrame,
    frontier_energy: pd.DataFrame,
    recommended_key: str | None = None,
    higher_is_better: bool = True,
) -> dict[str, Path]:
    """accuracy_vs_latency.png, accuracy_vs_energy.png, accuracy_vs_memory.png (their y axis is the study's metric
    when it is not top1; ``higher_is_better``: its direction, for the memory frontier)."""
    out = Path(output_dir)
    return {
        "accuracy_vs_latency": plot_tradeoff(
            out / "accuracy_vs_latency.png",
            sweep_df,
            "latency_ms",
            "latency (ms, batch of latency_batch_size)",
            frontier_latency,
            recommended_key=recommended_key,
        ),
        "accuracy_vs_energy": plot_tradeoff(
            out / "accuracy_vs_energy.png",
            sweep_df,
            "energy_proxy_j",
            "energy per inference (J)",
            frontier_energy,
            recommended_key=recommended_key,
        ),
        "accuracy_vs_memory": plot_tradeoff(
            out / "accuracy_vs_memory.png",
            sweep_df,
            "memory_mb",
            "parameter memory (MB)",
            quality_frontier(sweep_df, "memory_mb", False, higher_is_better) if len(sweep_df) else None,
            recommended_key=recommended_key,
        ),
    }


def quality_frontier(df: pd.DataFrame, x_col: str, use_ci: bool, higher_is_better: bool = True) -> pd.DataFrame:
    """``study.pareto_frontier`` of ``x_col`` against the quality axis (``y_axis``), in the metric's direction
    (a lower-is-better metric is negated for the comparison; the rows come back as they are)."""
    from ..study import pareto_frontier

    y_col, _ = y_axis(df)
    if higher_is_better:
        return pareto_frontier(df, x_col, use_ci, y_col)
    flipped = df.assign(_quality=-pd.to_numeric(df[y_col], errors="coerce"))
    return pareto_frontier(flipped, x_col, use_ci, "_quality").drop(columns="_quality")
