"""Pareto frontiers: minimise a cost column, maximise accuracy; ties never dominate; NaN never enters."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CI_COLUMNS", "pareto_frontier"]

CI_COLUMNS = {"latency_ms": "latency_ci95_ms", "energy_proxy_j": "energy_ci95_j", "memory_mb": None}


def pareto_frontier(
    df: pd.DataFrame,
    x_col: str = "latency_ms",
    use_ci: bool = False,
    y_col: str = "accuracy",
    ci_col: str | None = None,
) -> pd.DataFrame:
    """Non-dominated rows of ``df`` (accepted rows only when an ``accepted`` column exists).

    A row is dominated when another row is no worse on both axes and strictly better on
    one; equal rows do not dominate each other. With ``use_ci`` costs are compared by their
    95 % intervals (``ci_col``, default the cost column's CI column): overlapping intervals
    count as equal cost, and a cost is strictly better only when the whole interval is below.

    Args:
        df: sweep rows.
        x_col: cost to minimise (latency_ms, energy_proxy_j, memory_mb …).
        use_ci: compare costs by their confidence intervals.
        y_col: quality to maximise.
    Returns:
        The frontier rows, sorted by ``x_col`` ascending, with a clean index.
    Raises:
        ValueError: a named column is missing.
    """
    for col in (x_col, y_col):
        if col not in df.columns:
            raise ValueError(
                f"The 'x_col'/'y_col' parameter must name a column of the DataFrame "
                f"({sorted(df.columns)}). Got {col!r} instead."
            )
    rows = df
    if "accepted" in rows.columns:
        rows = rows[rows["accepted"].fillna(False).astype(bool)]
    x = pd.to_numeric(rows[x_col], errors="coerce")
    y = pd.to_numeric(rows[y_col], errors="coerce")
    ok = np.isfinite(x) & np.isfinite(y)
    rows, x, y = rows[ok], x[ok].to_numpy(float), y[ok].to_numpy(float)
    if use_ci:
        ci_col = ci_col or CI_COLUMNS.get(x_col)
        ci = pd.to_numeric(rows[ci_col], errors="coerce").fillna(0).to_numpy(float) if ci_col in rows.columns else 0 * x
    else:
        ci = np.zeros_like(x)
    keep = []
    for i in range(len(x)):
        dominated = False
        for j in range(len(x)):
            if i == j:
                continue
            x_better_eq = x[j] - ci[j] <= x[i] + ci[i] if use_ci else x[j] <= x[i]
            x_strict = x[j] + ci[j] < x[i] - ci[i] if use_ci else x[j] < x[i]
            if x_better_eq and y[j] >= y[i] and (x_strict or y[j] > y[i]):
                dominated = True
                break
        keep.append(not dominated)
    out = rows[np.array(keep, dtype=bool)] if len(keep) else rows
    return out.sort_values([x_col, y_col], ascending=[True, False], kind="mergesort").reset_index(drop=True)
