"""Side-by-side comparison of two finished studies (``edge-opt compare DIR_A DIR_B``)."""
from __future__ import annotations

import html
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from . import atomic
from .metrics import latency_differs
from .results import ConfigPoint, VariantResult
from .sweep import load_stored_study

__all__ = ["compare_studies", "compare_results"]


def _by_point(folder: Path) -> dict[ConfigPoint, VariantResult]:
    return {r.point: r for r in load_stored_study(folder).results if r.skipped is None}


def _pair(a: VariantResult, b: VariantResult) -> dict[str, Any]:
    ma, mb = a.metrics, b.metrics
    la, lb = (ma.latency_ms if ma else math.nan), (mb.latency_ms if mb else math.nan)
    sa = list(a.measurement.latency.samples_ms) if a.measurement else []
    sb = list(b.measurement.latency.samples_ms) if b.measurement else []
    differs, p = latency_differs(sa, sb)
    return {**asdict(a.point), "accuracy_a": ma.accuracy if ma else math.nan,
            "accuracy_b": mb.accuracy if mb else math.nan, "latency_ms_a": la, "latency_ms_b": lb,
            "latency_ratio_b_over_a": lb / la if la > 0 else math.nan, "mann_whitney_p": p, "significant": differs,
            "same_cpu": a.cpu_model == b.cpu_model, "error_a": a.error, "error_b": b.error}


def compare_results(a: dict[ConfigPoint, VariantResult], b: dict[ConfigPoint, VariantResult]) -> list[dict[str, Any]]:
    """One comparison row per config point both studies measured (in A's order)."""
    return [_pair(ra, b[p]) for p, ra in a.items() if p in b]


def compare_studies(dir_a: str | Path, dir_b: str | Path, output_dir: str | Path | None = None) -> pd.DataFrame:
    """Match the config points (pruning_level, precision, backend) of two studies and compare them.

    Latency ratio = B / A of the mean latencies; ``significant`` uses ``latency_differs``
    (Mann-Whitney U on the raw samples, p < 0.05, and a ≥ 3 % effect). Rows measured on
    different CPUs are flagged: their ratio mixes hardware and configuration.

    Writes ``comparison.csv`` and ``comparison.html`` to ``output_dir`` (default ``DIR_B/compare``).
    Returns:
        The comparison table.
    """
    a, b = _by_point(Path(dir_a)), _by_point(Path(dir_b))
    out_rows = compare_results(a, b)
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
