"""Side-by-side comparison of two finished studies (``edge-opt compare DIR_A DIR_B``)."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import atomic
from .metrics import latency_differs
from .sweep import load_stored_study

POINT = ["pruning_level", "precision", "backend"]


def _study_rows(folder: Path) -> pd.DataFrame:
    _, rows, _ = load_stored_study(folder)
    return pd.DataFrame(rows)


def compare_studies(dir_a: str | Path, dir_b: str | Path, output_dir: str | Path | None = None) -> pd.DataFrame:
    """Match the config points (pruning_level, precision, backend) of two studies and compare them.

    Latency ratio = B / A of the mean latencies; ``significant`` uses ``latency_differs``
    (Mann-Whitney U on the raw samples, p < 0.05, and a ≥ 3 % effect). Rows measured on
    different CPUs are flagged: their ratio mixes hardware and configuration.

    Writes ``comparison.csv`` and ``comparison.html`` to ``output_dir`` (default ``DIR_B/compare``).
    Returns:
        The comparison table.
    """
    a, b = _study_rows(Path(dir_a)), _study_rows(Path(dir_b))
    merged = a.merge(b, on=POINT, suffixes=("_a", "_b"))
    out_rows: list[dict[str, Any]] = []
    for _, r in merged.iterrows():
        differs, p = latency_differs(list(r.get("latency_samples_ms_a") or []), list(r.get("latency_samples_ms_b") or []))
        ratio = float(r["latency_ms_b"]) / float(r["latency_ms_a"]) if float(r["latency_ms_a"] or math.nan) > 0 else math.nan
        out_rows.append({**{k: r[k] for k in POINT}, "accuracy_a": r["accuracy_a"], "accuracy_b": r["accuracy_b"],
                         "latency_ms_a": r["latency_ms_a"], "latency_ms_b": r["latency_ms_b"], "latency_ratio_b_over_a": ratio,
                         "mann_whitney_p": p, "significant": differs,
                         "same_cpu": r.get("cpu_model_a") == r.get("cpu_model_b"),
                         "error_a": r.get("error_a"), "error_b": r.get("error_b")})
    table = pd.DataFrame(out_rows)
    out = Path(output_dir) if output_dir is not None else Path(dir_b) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_with(out / "comparison.csv", lambda t: table.to_csv(t, index=False, encoding="utf-8"))
    body = table.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}") if len(table) else "<p>(no common config points)</p>"
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edge_opt comparison</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:3px 6px}}"
            f"table{{border-collapse:collapse}}</style></head><body><h1>Study comparison</h1>"
            f"<p>A = <code>{html.escape(str(dir_a))}</code>, B = <code>{html.escape(str(dir_b))}</code>; "
            f"{len(table)} matched config points (of {len(a)} and {len(b)}). Ratio = B / A mean latency; significant = "
            f"Mann-Whitney U p &lt; 0.05 and ≥ 3 % effect on the raw samples.</p>{body}</body></html>")
    atomic.write_text(out / "comparison.html", page)
    return table
