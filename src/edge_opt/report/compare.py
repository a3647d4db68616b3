"""Side-by-side comparison of two finished studies (``edge-opt compare DIR_A DIR_B``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ..config import BudgetSettings, ConfigError
from ..core import atomic
from ..measure import ConfigPoint, VariantResult, latency_differs
from ..study import StoredStudy, load_stored_study, metric_higher_is_better, scores_metric
from .interactive import bokeh_resources, compare_page

_T = TypeVar("_T")

__all__ = ["COLUMNS", "METRIC_COLUMNS", "compare_results", "compare_studies", "config_differences"]


def _pair(a: VariantResult, b: VariantResult) -> dict[str, Any]:
    ma, mb = a.metrics, b.metrics
    la, lb = (ma.latency_ms if ma else math.nan), (mb.latency_ms if mb else math.nan)
    sa = list(a.measurement.latency.samples_ms) if a.measurement else []
    sb = list(b.measurement.latency.samples_ms) if b.measurement else []
    differs, p = latency_differs(sa, sb)
    ca = ma.latency_ci95_ms if ma else math.nan
    cb = mb.latency_ci95_ms if mb else math.nan
    return {
        **asdict(a.point),
        "accuracy_a": ma.accuracy if ma else math.nan,
        "accuracy_b": mb.accuracy if mb else math.nan,
        "latency_ms_a": la,
        "latency_ms_b": lb,
        "latency_ci95_ms_a": ca,
        "latency_ci95_ms_b": cb,
        "latency_diff_ms": lb - la,
        # the half-widths of two independent means' 95 % CIs add in quadrature (normal approximation)
        "latency_diff_ci95_ms": math.hypot(ca, cb),
        "latency_ratio_b_over_a": lb / la if la > 0 else math.nan,
        "mann_whitney_p": p,
        "significant": differs,
        "same_cpu": a.cpu_model == b.cpu_model,
        "error_a": a.error,
        "error_b": b.error,
    }


def _metric_pair(a: VariantResult, b: VariantResult, higher_is_better: bool) -> dict[str, Any]:
    va = a.metrics.metric if a.metrics is not None else math.nan
    vb = b.metrics.metric if b.metrics is not None else math.nan
    drop = va - vb if higher_is_better else vb - va  # positive: B worse, as the study's budgets read a drop
    return {"metric_a": va, "metric_b": vb, "metric_drop_b_vs_a": drop}


def compare_results(
    a: dict[ConfigPoint, VariantResult],
    b: dict[ConfigPoint, VariantResult],
    metric: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One comparison row per config point both studies measured (in A's order); with the studies' ``metric``
    (another than top1), also each one's metric and B's drop from A in the metric's direction (positive: B worse)."""
    if metric is None:
        return [_pair(ra, b[p]) for p, ra in a.items() if p in b]
    higher = bool(metric["higher_is_better"])
    return [{**_pair(ra, b[p]), **_metric_pair(ra, b[p], higher)} for p, ra in a.items() if p in b]


COLUMNS = [
    "pruning_level",
    "precision",
    "backend",
    "calibration",
    "accuracy_a",
    "accuracy_b",
    "latency_ms_a",
    "latency_ms_b",
    "latency_ci95_ms_a",
    "latency_ci95_ms_b",
    "latency_diff_ms",
    "latency_diff_ci95_ms",
    "latency_ratio_b_over_a",
    "mann_whitney_p",
    "significant",
    "same_cpu",
    "error_a",
    "error_b",
]
METRIC_COLUMNS = ["metric_a", "metric_b", "metric_drop_b_vs_a"]  # after accuracy_b, for studies not scored by top1


def _study_metric(folder: Path, study: StoredStudy) -> dict[str, Any] | None:
    """The metric a study was scored by: summary.json's ``metric`` object {name, display_name, higher_is_better},
    else (no summary yet) its config's; None for top1."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict):
        m = summary.get("metric")
        return {k: m.get(k) for k in ("name", "display_name", "higher_is_better")} if isinstance(m, dict) else None
    cfg = study.cfg.part(BudgetSettings)
    if not scores_metric(cfg):
        return None
    name = cfg.metric_name or cfg.metric.rpartition(":")[2]
    return {"name": name, "display_name": name, "higher_is_better": metric_higher_is_better(cfg)}


def _same_metric(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The metric both studies were scored by (None: top1), or a ``ConfigError`` when they differ."""

    def label(m: dict[str, Any] | None) -> str:
        if m is None:
            return "top1"
        return f"{m.get('name')} ({'higher' if m.get('higher_is_better') else 'lower'} is better)"

    key_a = None if a is None else (a.get("name"), a.get("higher_is_better"))
    key_b = None if b is None else (b.get("name"), b.get("higher_is_better"))
    if key_a != key_b:
        raise ConfigError(
            [f"the studies are scored by different metrics (A: {label(a)}, B: {label(b)}); their rows do not compare"]
        )
    return a


def _study_differences(a: StoredStudy, b: StoredStudy) -> list[str]:
    """What makes two studies' rows incomparable beyond their config points (model, data, image size)."""
    ca, cb = a.cfg, b.cfg
    checks = {
        "model": (ca.model.model_dump(), cb.model.model_dump()),
        "dataset": (ca.dataset, cb.dataset),
        "image_size": (ca.image_size, cb.image_size),
        "data_path": (ca.data_path, cb.data_path),
        "latency_batch_size": (ca.latency_batch_size, cb.latency_batch_size),
        "threads": (ca.threads, cb.threads),
    }
    return [
        f"the studies differ in {k!r} (A: {str(va)[:80]}, B: {str(vb)[:80]}): their matched rows compare "
        "different models or measurements"
        for k, (va, vb) in checks.items()
        if va != vb
    ]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys → values (lists kept whole)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(a: StoredStudy, b: StoredStudy) -> list[tuple[str, str, str]]:
    """Every config key whose value differs between the two studies, as (key, A's value, B's value)."""
    fa, fb = _flat(a.cfg.model_dump(mode="json")), _flat(b.cfg.model_dump(mode="json"))
    return [
        (k, json.dumps(fa.get(k), default=str), json.dumps(fb.get(k), default=str))
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k) and k != "output_dir"
    ]


def _checked(errors: list[str], fn: Callable[[], _T]) -> _T | None:
    """``fn()``, or None with its ``ConfigError``'s lines added to ``errors``."""
    try:
        return fn()
    except ConfigError as exc:
        errors.extend(exc.errors)
        return None


def _output_folder(dir_b: str | Path, output_dir: str | Path | None) -> Path:
    out = Path(output_dir) if output_dir is not None else Path(dir_b) / "compare"
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            [
                f"The '--output' parameter must name a folder. Got {str(output_dir or out)!r} instead "
                f"({str(probe)!r} is a file)."
            ]
        )
    return out


def _comparison_html(
    table: pd.DataFrame,
    warnings: list[str],
    metric: dict[str, Any] | None,
    dirs: tuple[str | Path, str | Path],
    counts: tuple[int, int],
    config_diff: list[tuple[str, str, str]],
) -> str:
    """The comparison page: the matched points interactive (Bokeh, JS inlined) with the static table in
    ``<noscript>``, the warnings, the metric's direction and what changed in the configs."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    body = (
        table.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")
        if len(table)
        else "<p>(no common config points)</p>"
    )
    interactive = compare_page(table)
    env = Environment(loader=PackageLoader("edge_opt", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("comparison.html.j2").render(
        bokeh_js=Markup(bokeh_resources()) if interactive is not None else "",
        explore_script=Markup(interactive.script) if interactive is not None else "",
        explore_div=Markup(interactive.div) if interactive is not None else "",
        static_table=Markup(body),
        warnings=warnings,
        metric=metric,
        dir_a=str(dirs[0]),
        dir_b=str(dirs[1]),
        matched=len(table),
        counts=counts,
        config_diff=config_diff,
    )


def compare_studies(
    dir_a: str | Path, dir_b: str | Path, output_dir: str | Path | None = None, with_warnings: bool = False
) -> Any:
    """Match the config points (pruning_level, precision, backend, calibration) of two studies and compare them.

    Latency ratio = B / A of the mean latencies; ``significant`` uses ``latency_differs``
    (Mann-Whitney U on the raw samples, p < 0.05, and a ≥ 3 % effect). Rows measured on
    different CPUs are flagged: their ratio mixes hardware and configuration. Studies of
    different models, data or image sizes are compared with a warning.

    Writes ``comparison.csv`` and ``comparison.html`` to ``output_dir`` (default ``DIR_B/compare``).
    Returns:
        The comparison table (and the warnings, with ``with_warnings``).
    Studies scored by another metric than top1 (summary.json's ``metric`` object) add ``metric_a``, ``metric_b``
    and ``metric_drop_b_vs_a`` (in the metric's direction; positive: B worse); the table's ``attrs["metric"]``
    names it.

    Raises:
        ConfigError: a folder that holds no study, studies scored by different metrics, or an output path that is
            a file (nothing written).
    """
    errors: list[str] = []
    out = _checked(errors, lambda: _output_folder(dir_b, output_dir))
    sa = _checked(errors, lambda: load_stored_study(Path(dir_a)))
    sb = _checked(errors, lambda: load_stored_study(Path(dir_b)))
    if errors or out is None or sa is None or sb is None:
        raise ConfigError(errors)  # every problem at once, one line each
    metric = _same_metric(_study_metric(Path(dir_a), sa), _study_metric(Path(dir_b), sb))
    a = {r.point: r for r in sa.results if r.skipped is None}
    b = {r.point: r for r in sb.results if r.skipped is None}
    warnings = _study_differences(sa, sb)
    warnings += [
        f"study {name} ({str(d)!r}) has no finished points"
        for name, d, rows in (("A", dir_a, a), ("B", dir_b, b))
        if not rows
    ]
    columns = COLUMNS if metric is None else [*COLUMNS[:6], *METRIC_COLUMNS, *COLUMNS[6:]]
    table = pd.DataFrame(compare_results(a, b, metric), columns=columns)
    if metric is not None:
        table.attrs["metric"] = metric
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_with(out / "comparison.csv", lambda t: table.to_csv(t, index=False, encoding="utf-8"))
    page = _comparison_html(table, warnings, metric, (dir_a, dir_b), (len(a), len(b)), config_differences(sa, sb))
    atomic.write_text(out / "comparison.html", page)
    return (table, warnings) if with_warnings else table
