"""Repeated-run statistics (``edge-opt bench``): confidence intervals that are right at small n,
repeated benchmarks per precision mode, their files and plots, and multi-seed aggregation.

``ci95(values, method="t")`` is t(0.975, n−1)·s/√n; the normal approximation 1.96·s/√n (``method="normal"``)
is ~2.8× too narrow at n = 2 and ~1.4× at n = 5. n < 2 gives NaN. For latency the median and
a seeded percentile-bootstrap interval of the mean are reported too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ..core import atomic, ci95_half_width
from ..measure import latency_differs
from .setup import benchmark_one_setup

__all__ = [
    "CI_NOTE",
    "METRICS",
    "STAT_DPI",
    "aggregate_multi_seed",
    "bootstrap_ci",
    "ci95",
    "latency_differs",
    "pareto_modes",
    "run_repeated_benchmarks",
    "summarize_runs",
]

STAT_DPI = 140
METRICS = ("train_time", "latency", "memory", "accuracy", "energy")
CI_NOTE = "ci95 = t(0.975, n-1) * s / sqrt(n) (Student t; NaN for n < 2); std is the sample std (ddof=1)"


def ci95(values: Sequence[float], method: str = "t") -> float:
    """Half-width of the 95 % confidence interval of the mean.

    Args:
        values: samples.
        method: "t" (Student t, default) or "normal" (the normal approximation 1.96·s/√n, too narrow at small n).
    Returns:
        The half-width; NaN when fewer than 2 finite values.
    """
    if method not in ("t", "normal"):
        raise ValueError(f"The 'method' parameter must be one of ['normal', 't']. Got {method!r} instead.")
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if method == "t":
        return ci95_half_width(a)  # the one t-interval, ``core.ci95_half_width``
    n = a.size
    if n < 2:
        return math.nan
    return float(1.96 * float(a.std(ddof=1)) / math.sqrt(n))


_ci95 = ci95  # the helper's earlier private name; same honest (t-based) number


def bootstrap_ci(values: Sequence[float], seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """Seeded percentile-bootstrap 95 % interval of the mean (NaN, NaN for n < 2)."""
    a = np.asarray(values, dtype=float)
    if a.size < 2:
        return math.nan, math.nan
    res = stats.bootstrap(
        (a,),
        np.mean,
        confidence_level=0.95,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize_runs(rows: Sequence[dict[str, Any]], precision_mode: str, seed: int = 0) -> dict[str, Any]:
    """The documented summary dict for one precision mode, plus medians and a latency bootstrap interval."""
    out: dict[str, Any] = {"precision_mode": precision_mode, "repeats": len(rows)}
    for m in METRICS:
        vals = [float(r[m]) for r in rows]
        out[f"{m}_mean"] = float(np.mean(vals)) if vals else math.nan
        out[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
        out[f"{m}_ci95"] = ci95(vals)
    lat = [float(r["latency"]) for r in rows]
    out["latency_median"] = float(np.median(lat)) if lat else math.nan
    out["latency_boot_low"], out["latency_boot_high"] = bootstrap_ci(lat, seed)
    val = [float(r["val_accuracy"]) for r in rows if "val_accuracy" in r]
    out["val_accuracy_mean"] = float(np.mean(val)) if val else math.nan
    out["val_accuracy_ci95"] = ci95(val)
    out["energy_source"] = ",".join(sorted({str(r.get("energy_source")) for r in rows}))
    out["dataset"] = ",".join(sorted({str(r.get("dataset")) for r in rows}))
    out["ci_method"] = "t"
    return out


def pareto_modes(summary_rows: Sequence[dict[str, Any]]) -> list[str]:
    """Precision modes not dominated on (latency_mean min, accuracy_mean max); ties do not dominate."""
    pts = [
        (r["precision_mode"], r["latency_mean"], r["accuracy_mean"])
        for r in summary_rows
        if math.isfinite(r["latency_mean"]) and math.isfinite(r["accuracy_mean"])
    ]
    keep = []
    for name, x, y in pts:
        if not any((x2 <= x and y2 >= y and (x2 < x or y2 > y)) for n2, x2, y2 in pts if n2 != name):
            keep.append(name)
    return keep


def _scatter(
    path: Path, rows: Sequence[dict[str, Any]], metric: str, label: str, frontier: list[str] | None = None
) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        on = frontier is not None and r["precision_mode"] in frontier
        ax.errorbar(
            r[f"{metric}_mean"],
            r["accuracy_mean"],
            xerr=np.nan_to_num(r[f"{metric}_ci95"]),
            yerr=np.nan_to_num(r["accuracy_ci95"]),
            fmt="o",
            capsize=3,
            color="tab:blue" if on else "tab:grey",
        )
        ax.annotate(
            r["precision_mode"],
            (r[f"{metric}_mean"], r["accuracy_mean"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    if frontier:
        f = sorted([r for r in rows if r["precision_mode"] in frontier], key=lambda r: r[f"{metric}_mean"])
        ax.plot(
            [r[f"{metric}_mean"] for r in f],
            [r["accuracy_mean"] for r in f],
            "-",
            color="tab:blue",
            label="Pareto frontier",
        )
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (mean ± 95 % t-CI)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic.write_with(path, lambda t: fig.savefig(t, dpi=STAT_DPI, format="png"))
    plt.close(fig)


def run_repeated_benchmarks(
    layer_sizes: Sequence[int],
    activations: Sequence[str],
    precision_modes: Sequence[str],
    batch_size: int,
    n_samples: int,
    epochs: int,
    repeats: int,
    seed: int,
    output_dir: str | Path | None = None,
    on_run: Callable[..., None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``benchmark_one_setup`` ``repeats`` times (seed + repeat index) per precision mode.

    Writes raw_runs.csv, summary_stats.csv (a plain CSV, header first), summary_stats.json (the list of the
    same rows), summary_stats_meta.json (the interval method), accuracy_vs_latency.png,
    accuracy_vs_energy.png, accuracy_vs_memory.png, pareto_frontier.png (140 DPI) to ``output_dir``
    (default ``benchmarks/statistical`` under the current folder).

    Returns:
        One summary dict per precision mode (the documented keys first).
    """
    if repeats < 1:
        raise ValueError(f"The 'repeats' parameter must be >= 1. Got {repeats!r} instead.")
    out = Path(output_dir) if output_dir is not None else Path("benchmarks") / "statistical"
    raw: list[dict[str, Any]] = []
    summaries = []
    for mode in precision_modes:
        runs = []
        for i in range(repeats):
            row = benchmark_one_setup(layer_sizes, activations, mode, batch_size, n_samples, epochs, seed + i)
            row["repeat"] = i
            runs.append(row)
            if on_run:
                on_run(mode=mode, repeat=i, row=row)
        raw.extend(runs)
        summaries.append(summarize_runs(runs, mode, seed))
    frontier = pareto_modes(summaries)
    for s in summaries:
        s["on_pareto_frontier"] = s["precision_mode"] in frontier
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_with(out / "raw_runs.csv", lambda t: pd.DataFrame(raw).to_csv(t, index=False, encoding="utf-8"))

    # Plain files any reader takes: the CSV starts with its header, the JSON is the list of the same rows;
    # the interval method is each row's ci_method column, spelled out in summary_stats_meta.json.
    atomic.write_with(
        out / "summary_stats.csv", lambda t: pd.DataFrame(summaries).to_csv(t, index=False, encoding="utf-8")
    )
    atomic.write_json(out / "summary_stats.json", summaries)
    atomic.write_json(
        out / "summary_stats_meta.json",
        {"ci_method": "t", "ci_note": CI_NOTE, "files": ["summary_stats.csv", "summary_stats.json"]},
    )
    _scatter(out / "accuracy_vs_latency.png", summaries, "latency", "latency per sample (s)")
    _scatter(out / "accuracy_vs_energy.png", summaries, "energy", "energy per epoch (J)")
    _scatter(out / "accuracy_vs_memory.png", summaries, "memory", "peak memory growth (MB)")
    _scatter(out / "pareto_frontier.png", summaries, "latency", "latency per sample (s)", frontier)
    return summaries


def aggregate_multi_seed(frames: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per configuration (pruning_level, precision, backend): mean, std and t-CI of accuracy and latency over seeds."""
    rows = []
    allrows = pd.concat([f.assign(seed=s) for s, f in frames.items()], ignore_index=True)
    for key, grp in allrows.groupby(["pruning_level", "precision", "backend"], sort=True):
        r: dict[str, Any] = dict(zip(["pruning_level", "precision", "backend"], key))
        r["seeds"] = int(grp["seed"].nunique())
        for m in ("accuracy", "latency_ms"):
            vals = grp[m].astype(float).dropna().tolist()
            r[f"{m}_mean"] = float(np.mean(vals)) if vals else math.nan
            r[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
            r[f"{m}_ci95"] = ci95(vals)
        r["accepted_ratio"] = float(grp["accepted"].astype(bool).mean())
        rows.append(r)
    return pd.DataFrame(rows)
