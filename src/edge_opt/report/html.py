"""One self-contained ``report.html`` from a study's files: interactive plots and table (Bokeh, its JavaScript
inlined, no network), with the static tables and PNG plots (data URIs) in ``<noscript>`` for a browser without
JavaScript."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from ..core import atomic
from ..study import REPORT_COLUMNS, TEXT_COLUMNS
from .interactive import bokeh_resources, page_extras, search_page, sweep_page

__all__ = ["SWEEP_COLS", "TEXT_COLS", "write_html_report"]

SWEEP_COLS = list(REPORT_COLUMNS)
TEXT_COLS = set(TEXT_COLUMNS)


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def _table(df: pd.DataFrame, table_id: str) -> str:
    if df is None or df.empty:
        return "<p>(none)</p>"
    return df.map(_fmt).to_html(index=False, table_id=table_id, border=0, escape=True)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV of the study, or an empty table when it is missing or has no columns."""
    try:  # the page carries the config hash once, in its <meta>, not in every table
        return pd.read_csv(path).drop(columns=["config_hash"], errors="ignore")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _grouped_sweep(sweep: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The sweep rows grouped by node (when several ran it) and by where they were measured, and the columns
    the table shows (the node's when several)."""
    cols = list(SWEEP_COLS)
    if "metric" in sweep.columns and "accuracy" in cols:  # the study's metric, under its display name
        name = sweep["metric_name"].dropna() if "metric_name" in sweep.columns else pd.Series([], dtype=object)
        label = str(name.iloc[0]) if len(name) else "metric"
        sweep = sweep.rename(columns={"metric": label})
        cols.insert(cols.index("accuracy") + 1, label)
    if "hostname" in sweep.columns and sweep[["hostname", "cpu_model"]].drop_duplicates().shape[0] > 1:
        cols = ["hostname", "cpu_model", *cols]  # several nodes: group the table by node
        sweep = sweep.sort_values(["hostname", "pruning_level", "precision", "backend"], kind="mergesort")
    if "measured_on" in sweep.columns and sweep["measured_on"].nunique() > 1:  # group the rows by where measured
        sweep = sweep.assign(_host=sweep["measured_on"] != "host").sort_values(
            ["_host", "measured_on"], kind="mergesort"
        )
    return sweep, cols


def _rejected_rows(sweep: pd.DataFrame) -> list[dict[str, Any]]:
    """Point and reason of each rejected sweep row."""
    return [
        {
            "backend": r["backend"],
            "precision": r["precision"],
            "pruning_level": _fmt(r["pruning_level"]),
            "reason": r.get("rejected_reason") if isinstance(r.get("rejected_reason"), str) else "",
        }
        for _, r in sweep.iterrows()
        if not bool(r.get("accepted"))
    ]


def _images(out: Path) -> dict[str, list[tuple[str, str]]]:
    """The study's plots that exist, per report section, as (name, data URI)."""
    return {
        "tradeoffs": [
            (n, _uri(out / f"{n}.png"))
            for n in ("accuracy_vs_latency", "accuracy_vs_energy", "accuracy_vs_memory")
            if (out / f"{n}.png").exists()
        ],
        "hardware": [
            (n, _uri(out / f"{n}.png"))
            for n in ("roofline", "layerwise_macs", "layerwise_activation_memory")
            if (out / f"{n}.png").exists()
        ],
        "sensitivity": [(n, _uri(out / f"{n}.png")) for n in ("sensitivity",) if (out / f"{n}.png").exists()],
    }


def _interactive(out: Path, sweep: pd.DataFrame, summary: dict[str, Any]) -> Any:
    """The page's Bokeh part over every sweep column (None without rows), y = the study's metric."""
    y, label = "accuracy", "accuracy"
    if "metric" in sweep.columns and sweep["metric"].notna().any():
        names = sweep["metric_name"].dropna() if "metric_name" in sweep.columns else pd.Series([], dtype=object)
        y, label = "metric", str(names.iloc[0]) if len(names) else "metric"
    rec = summary.get("recommended") or {}
    return sweep_page(sweep, y, rec.get("key"), page_extras(out, sweep, summary), y_label=label)


def write_html_report(output_dir: str | Path) -> Path:
    """Build ``report.html`` from the study files in ``output_dir``.

    Returns:
        The report's path.
    """
    out = Path(output_dir)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    sweep = _read_csv(out / "sweep_results.csv")
    rec = summary.get("recommended")
    interactive = _interactive(out, sweep, summary)
    sweep, cols = _grouped_sweep(sweep)
    rows = []
    for _, r in sweep.iterrows():
        d: dict[str, Any] = {c: _fmt(r.get(c)) for c in cols}
        d["_accepted"] = bool(r.get("accepted"))
        d["_recommended"] = bool(rec and r.get("key") == rec.get("key"))
        rows.append(d)
    rejected = _rejected_rows(sweep)
    read = lambda name: _read_csv(out / name)  # noqa: E731
    repro = (
        json.loads((out / "reproducibility.json").read_text(encoding="utf-8"))
        if (out / "reproducibility.json").exists()
        else {}
    )
    images = _images(out)
    search = search_page(read("search_history.csv")) if summary.get("search", {}).get("strategy") != "grid" else None
    hw = read("hardware_summary.csv")
    env = Environment(loader=PackageLoader("edge_opt", "templates"), autoescape=select_autoescape(["html", "j2"]))
    from markupsafe import Markup

    html = env.get_template("report.html.j2").render(
        output_dir=str(out),
        bokeh_js=Markup(bokeh_resources()) if interactive is not None or search is not None else "",
        search_script=Markup(search.script) if search is not None else "",
        search_div=Markup(search.div) if search is not None else "",
        explore_script=Markup(interactive.script) if interactive is not None else "",
        explore_div=Markup(interactive.div) if interactive is not None else "",
        summary=summary,
        rec=rec,
        sweep_cols=cols,
        text_cols=TEXT_COLS | {"hostname", "cpu_model"},
        sweep_rows=rows,
        rejected=rejected,
        images=images,
        precision_table=Markup(_table(read("precision_tradeoffs.csv"), "precision")),
        hardware_table=Markup(
            _table(hw.T.reset_index().rename(columns={"index": "figure", 0: "value"}) if len(hw) else hw, "hardware")
        ),
        deployment_table=Markup(_table(read("deployment.csv"), "deployment")),
        sensitivity_table=Markup(_table(read("sensitivity.csv"), "sensitivity")),
        mixed_table=Markup(_table(read("mixed_precision.csv"), "mixed")),
        search_table=Markup(_table(read("search_history.csv"), "search")),
        config_text=yaml.safe_dump(repro.get("config", {}), sort_keys=False),
        repro_text=json.dumps({k: v for k, v in repro.items() if k != "config"}, indent=2),
    )
    return atomic.write_text(out / "report.html", html)
