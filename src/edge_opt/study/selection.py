"""Analyse stage: budgets, acceptance, speed-ups and the recommendation, over typed records.

``assess_results`` turns the measured ``VariantResult`` records of a study into frozen
``Assessment`` records (budgets applied, compared with the baseline and with each point's
fp32 parent measured on the same node); ``select_recommendation`` picks the variant to ship
and says why. ``Assessment.row()`` is the one place a sweep column is named; the report
stage's ``to_frame`` is the only place rows become a DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from ..config import BudgetSettings, StudyConfig
from ..measure import (
    METRICS,
    ConfigPoint,
    PerfMetrics,
    VariantResult,
    host_loads,
    latency_differs,
    memory_violations,
)

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_POINT",
    "COLUMN_ORDER",
    "DETAIL_COLUMNS",
    "MANIFEST_COLUMNS",
    "RAW_SAMPLE_COLUMNS",
    "REPORT_COLUMNS",
    "TEXT_COLUMNS",
    "Assessment",
    "Selection",
    "assess_results",
    "best_effort",
    "directed_drop",
    "metric_higher_is_better",
    "metric_value",
    "scores_metric",
    "recommend",
    "select_recommendation",
    "study_warnings",
    "to_frame",
]

BASELINE_POINT = ConfigPoint(0.0, "fp32", "torch")

COLUMN_ORDER = (
    "measured_on",
    "source",
    "pruning_level",
    "precision",
    "backend",
    "calibration",
    "kernel_precision",
    "accepted",
    "error",
    "rejected_reason",
    "accuracy",
    "accuracy_drop",
    "latency_ms",
    "latency_median_ms",
    "latency_std_ms",
    "latency_p95_ms",
    "latency_ci95_ms",
    "device_latency_ms",
    "batch_latency_ms",
    "throughput_sps",
    "memory_mb",
    "runtime_memory_mb",
    "energy_proxy_j",
    "energy_ci95_j",
    "energy_source",
    "active_budget_mb",
    "latency_budget_ms",
    "speedup_vs_fp32",
    "speedup_vs_baseline",
    "slower_than_fp32",
    "slower_than_fp32_p",
    "precision_mismatch",
)
# columns added later go last (graph_transform stays the last), so the earlier ones keep their places
LAST_COLUMNS = ("flash_bytes", "peak_ram_bytes", "graph_transform")
RAW_SAMPLE_COLUMNS = ("latency_samples_ms", "batch_latency_samples_ms")  # in memory and the store, not in CSVs
# Columns of COLUMN_ORDER left out of the HTML report's table (they stay in sweep_results.csv).
DETAIL_COLUMNS = frozenset(
    {
        "error",
        "rejected_reason",
        "latency_median_ms",
        "latency_std_ms",
        "latency_p95_ms",
        "energy_ci95_j",
        "active_budget_mb",
        "latency_budget_ms",
        "slower_than_fp32_p",
        "precision_mismatch",
    }
)
REPORT_COLUMNS = (*(c for c in COLUMN_ORDER if c not in DETAIL_COLUMNS), "error")
TEXT_COLUMNS = frozenset(
    {
        "measured_on",
        "source",
        "precision",
        "backend",
        "kernel_precision",
        "energy_source",
        "error",
        "accepted",
        "slower_than_fp32",
        "hostname",
        "cpu_model",
    }
)
# The baseline's entries in summary.json and the measured row's entries in an artifact's manifest.
BASELINE_COLUMNS = (
    "accuracy",
    "latency_ms",
    "latency_std_ms",
    "latency_p95_ms",
    "latency_ci95_ms",
    "throughput_sps",
    "memory_mb",
    "energy_proxy_j",
    "energy_source",
    "batch_latency_ms",
    "kernel_precision",
    "error",
)
MANIFEST_COLUMNS = (
    "accuracy",
    "latency_ms",
    "latency_ci95_ms",
    "latency_p95_ms",
    "batch_latency_ms",
    "throughput_sps",
    "memory_mb",
    "energy_proxy_j",
    "energy_source",
    "device_latency_ms",
    "accuracy_drop",
    "speedup_vs_baseline",
)

_NAN_METRICS = PerfMetrics(*(math.nan,) * 7, energy_source="")


@dataclass(frozen=True)
class Assessment:
    """A measured variant judged against the study's budgets, its baseline and its fp32 parent."""

    result: VariantResult
    accepted: bool
    rejected_reason: str | None
    violations: dict[float, bool]
    active_budget_mb: float
    latency_budget_ms: float
    device_latency_ms: float
    energy_ci95_j: float
    precision_mismatch: bool
    speedup_vs_baseline: float
    accuracy_drop: float
    speedup_vs_fp32: float = math.nan
    slower_than_fp32: bool = False
    slower_than_fp32_p: float = math.nan
    metric_higher_is_better: bool = True  # the direction of the study's metric (top1: higher)
    metric_drop: float = math.nan  # the baseline's metric − this row's, in the metric's direction (not a column)

    @property
    def point(self) -> ConfigPoint:
        return self.result.point

    @property
    def metric_value(self) -> float:
        """The study's metric of this row (``metric_value``; NaN for an error row)."""
        return metric_value(self.result)

    @property
    def metric_score(self) -> float:
        """``metric_value`` signed so that higher is better (the lower-is-better metrics negated)."""
        return self.metric_value if self.metric_higher_is_better else -self.metric_value

    @property
    def metrics(self) -> PerfMetrics:
        """Host statistics of the raw samples (NaN for an error row)."""
        return self.result.metrics or _NAN_METRICS

    @property
    def ok(self) -> bool:
        return self.result.error is None

    @property
    def latency_samples(self) -> list[float]:
        rec = self.result.measurement
        return list(rec.latency.samples_ms) if rec is not None and self.ok else []

    @property
    def runtime_memory_mb(self) -> float:
        rec = self.result.measurement
        if rec is None:
            return math.nan
        held = self.result.runtime_parameter_bytes
        return (held if held is not None else rec.parameter_bytes) / 1e6

    def row(self) -> dict[str, Any]:
        """Every column of the sweep table for this variant, in ``COLUMN_ORDER`` then by name."""
        row = self.result.row()
        row.update(
            {
                "active_budget_mb": self.active_budget_mb,
                "device_latency_ms": self.device_latency_ms,
                "latency_budget_ms": self.latency_budget_ms,
                "energy_ci95_j": self.energy_ci95_j,
                "precision_mismatch": self.precision_mismatch,
                "accepted": self.accepted,
                "rejected_reason": self.rejected_reason,
                "speedup_vs_baseline": self.speedup_vs_baseline,
                "accuracy_drop": self.accuracy_drop,
                "speedup_vs_fp32": self.speedup_vs_fp32,
                "slower_than_fp32": self.slower_than_fp32,
                "slower_than_fp32_p": self.slower_than_fp32_p,
                **{f"violates_{b}mb": v for b, v in self.violations.items()},
            }
        )
        first = [c for c in COLUMN_ORDER if c in row]
        return {c: row[c] for c in [*first, *sorted(c for c in row if c not in first)]}


def _rejections(r: VariantResult, device_latency_ms: float, cfg: StudyConfig) -> list[str]:
    if r.error is not None:
        return ["error"]
    why = []
    mem = r.metrics.memory_mb if r.metrics is not None else math.nan
    if not mem <= cfg.active_memory_budget_mb:
        why.append(f"memory {mem:.3f} MB > budget {cfg.active_memory_budget_mb} MB")
    if cfg.latency_budget_ms is not None and not device_latency_ms <= cfg.latency_budget_ms:
        why.append(f"device latency {device_latency_ms:.3f} ms > budget {cfg.latency_budget_ms} ms")
    for what, budget, value in (
        ("flash", cfg.flash_budget_kb, r.flash_bytes),
        ("peak RAM", cfg.ram_budget_kb, r.peak_ram_bytes),
    ):
        if budget is None:
            continue
        if value is None:
            why.append(f"{what} unknown (a microcontroller budget judges .tflite rows: backend litert)")
        elif not value / 1024 <= budget:
            why.append(f"{what} {value / 1024:.1f} KB > budget {budget:g} KB")
    return why


def _judge(r: VariantResult, cfg: StudyConfig, baseline: VariantResult | None) -> Assessment:
    m = r.metrics or _NAN_METRICS
    device = m.latency_ms * cfg.latency_multiplier
    why = _rejections(r, device, cfg)
    base = baseline.metrics if baseline is not None and baseline.metrics is not None else _NAN_METRICS
    kernel = r.measurement.kernel_precision if r.measurement is not None and r.error is None else None
    higher = metric_higher_is_better(cfg)
    return Assessment(
        result=r,
        accepted=not why,
        rejected_reason="; ".join(why) or None,
        violations={
            b: bool(memory_violations(m.memory_mb, [b])[f"violates_{b}mb"]) if math.isfinite(m.memory_mb) else True
            for b in cfg.memory_budgets_mb
        },
        active_budget_mb=cfg.active_memory_budget_mb,
        latency_budget_ms=cfg.latency_budget_ms if cfg.latency_budget_ms is not None else math.nan,
        device_latency_ms=device,
        energy_ci95_j=cfg.power_watts * m.latency_ci95_ms / 1e3,
        precision_mismatch=bool(kernel is not None and not str(kernel).startswith(r.point.precision)),
        speedup_vs_baseline=base.latency_ms / m.latency_ms,
        accuracy_drop=base.accuracy - m.accuracy,
        metric_higher_is_better=higher,
        metric_drop=directed_drop(metric_value(baseline), metric_value(r), higher) if baseline else math.nan,
    )


def metric_value(result: VariantResult) -> float:
    """The study's metric of a result: its ``metric`` when the study scores another metric than top1, else its
    accuracy (NaN without a measurement)."""
    rec = result.measurement
    if rec is None:
        return math.nan
    return rec.metrics.metric if rec.metric_name is not None else rec.metrics.accuracy


def metric_higher_is_better(cfg: BudgetSettings) -> bool:
    """The direction of the study's metric: ``metric_higher_is_better`` for a callable, the built-in's own."""
    if cfg.metric_higher_is_better is not None:
        return cfg.metric_higher_is_better
    return METRICS.get(cfg.metric).higher_is_better if cfg.metric in METRICS else True


def directed_drop(baseline: float, value: float, higher_is_better: bool, relative: bool = False) -> float:
    """The drop of ``value`` from ``baseline`` in the metric's direction (positive = worse), the rule of
    ``edge_opt.measure.metric_drop``; a relative drop from a baseline of 0 is NaN (it meets no budget)."""
    drop = baseline - value if higher_is_better else value - baseline
    if relative:
        return drop / abs(baseline) if baseline != 0 else math.nan
    return drop


def _same_node(a: VariantResult, b: VariantResult) -> bool:
    return a.hostname is None or (a.hostname == b.hostname and a.cpu_model == b.cpu_model)


def _fp32_parent(a: Assessment, pool: Sequence[Assessment]) -> Assessment | None:
    for p in pool:
        if (
            p.ok
            and p.point.precision == "fp32"
            and p.point.pruning_level == a.point.pruning_level
            and p.point.backend == a.point.backend
            and _same_node(a.result, p.result)
        ):
            return p
    return None


def _compare_with_parent(a: Assessment, pool: Sequence[Assessment]) -> Assessment:
    parent = _fp32_parent(a, pool)
    if not a.ok or parent is None:
        return a
    lat, plat = a.metrics.latency_ms, parent.metrics.latency_ms
    changes: dict[str, Any] = {"speedup_vs_fp32": plat / lat}
    if a.point.precision != "fp32":
        ci_above = lat - a.metrics.latency_ci95_ms > plat + parent.metrics.latency_ci95_ms
        differs, pval = latency_differs(a.latency_samples, parent.latency_samples)
        changes.update(slower_than_fp32=bool(ci_above and (differs or not a.latency_samples)), slower_than_fp32_p=pval)
    return replace(a, **changes)


def assess_results(
    results: Sequence[VariantResult], cfg: StudyConfig, baseline: VariantResult | None = None
) -> list[Assessment]:
    """Budgets, acceptance, device latency, speed-ups and the slower-than-fp32 flag for every result.

    Args:
        results: measured (or failed) config points, in grid order.
        cfg: the study's budgets, clock scale and power.
        baseline: the unpruned fp32 torch result (speed-up and accuracy drop are relative to it).
    """
    judged = [_judge(r, cfg, baseline) for r in results]
    return [_compare_with_parent(a, judged) for a in judged]


@dataclass(frozen=True)
class Selection:
    """The variant to ship (or the best effort), whether it met every goal, and why."""

    chosen: Assessment | None
    goals_met: bool
    failed_goals: tuple[str, ...] = ()
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _ci(a: Assessment) -> float:
    c = a.metrics.latency_ci95_ms
    return c if math.isfinite(c) else 0.0


def recommend(
    assessed: Sequence[Assessment],
    baseline_accuracy: float,
    max_accuracy_drop: float,
    relative: bool = False,
    budget_key: str = "max_accuracy_drop",
) -> tuple[Assessment | None, list[str]]:
    """The lowest-latency accepted variant within ``max_accuracy_drop`` of the baseline's metric (the accuracy
    for top1; in the metric's direction, and as a share of the baseline when ``relative``).

    Variants whose latency is within the fastest one's 95 % interval, or not significantly different
    from it (``latency_differs``: Mann-Whitney U and a 3 % minimum effect), count as equally fast; among
    them those whose kernels run the requested precision, then the least run-time memory, then the
    least parameter memory, then the best metric (the most accurate; the lowest for a lower-is-better
    metric) win (ties keep grid order).

    Returns:
        (assessment or None, failed goals) — the failed goals are empty when one meets every goal.
    """
    ok = [a for a in assessed if a.accepted]
    if not ok:
        return None, ["no configuration meets the budgets"]
    within = [
        a
        for a in ok
        if directed_drop(baseline_accuracy, a.metric_value, a.metric_higher_is_better, relative)
        <= max_accuracy_drop + 1e-12
    ]
    if not within:
        return None, [f"no accepted configuration is within {budget_key}={max_accuracy_drop}"]
    fastest = min(within, key=lambda a: a.metrics.latency_ms)
    band = fastest.metrics.latency_ms + _ci(fastest)

    def tie(a: Assessment) -> bool:
        if a.metrics.latency_ms - _ci(a) <= band:
            return True
        return bool(
            a.latency_samples
            and fastest.latency_samples
            and not latency_differs(fastest.latency_samples, a.latency_samples)[0]
        )

    tied = [a for a in within if tie(a)]
    tied.sort(
        key=lambda a: (
            a.precision_mismatch,
            a.runtime_memory_mb,
            a.metrics.memory_mb,
            -a.metric_score,
            a.metrics.latency_ms,
        )
    )
    return tied[0], []


def best_effort(assessed: Sequence[Assessment]) -> Assessment | None:
    """When nothing meets every goal: the best metric (the highest accuracy for top1) among memory-accepted
    variants, else overall.

    Errors are excluded."""
    good = [a for a in assessed if a.ok]
    if not good:
        return None
    mem_ok = [a for a in good if a.metrics.memory_mb <= a.active_budget_mb]
    pool = mem_ok or good
    return min(pool, key=lambda a: (-a.metric_score, a.metrics.latency_ms))


def scores_metric(cfg: BudgetSettings) -> bool:
    """Whether the study scores another metric than top1 (the rows then carry a ``metric`` column)."""
    return cfg.metric != "top1" or cfg.postprocess is not None


def _why(cfg: BudgetSettings, name: str = "accuracy") -> str:
    budgets = f"memory ≤ {cfg.active_memory_budget_mb} MB"
    if cfg.latency_budget_ms:
        budgets += f", device latency ≤ {cfg.latency_budget_ms} ms"
    share = " (a share of the baseline's)" if cfg.metric_drop_relative else ""
    return (
        f"lowest latency among rows meeting the budgets ({budgets}) with {name} drop{share} ≤ "
        f"{cfg.metric_budget}; latencies that do not differ significantly are ties, won by kernels that "
        "really run the precision, then the least run-time memory"
    )


def select_recommendation(
    assessed: Sequence[Assessment], baseline: VariantResult | None, cfg: BudgetSettings
) -> Selection:
    """Stage: the recommended variant (or the best effort when no variant meets every goal), and why."""
    if baseline is None or not baseline.ok or baseline.metrics is None:
        chosen = best_effort(assessed)
        return Selection(chosen, False, ("baseline failed",), "best effort: baseline failed")
    name = baseline.measurement.metric_name if baseline.measurement is not None else None
    value = metric_value(baseline)
    key = "max_metric_drop" if cfg.max_metric_drop is not None or scores_metric(cfg) else "max_accuracy_drop"
    rec, failed = recommend(assessed, value, cfg.metric_budget, cfg.metric_drop_relative, key)
    if rec is not None:
        return Selection(rec, True, (), _why(cfg, name or "accuracy"))
    return Selection(best_effort(assessed), False, tuple(failed), "best effort: " + "; ".join(failed))


def to_frame(assessed: Sequence[Assessment]) -> pd.DataFrame:
    """The sweep table: one row per variant (``Assessment.row``), the only place records become a DataFrame."""
    rows = [a.row() for a in assessed]
    if not rows:
        return pd.DataFrame({"accepted": pd.Series([], dtype=bool)})
    frame = pd.DataFrame(rows)
    if "host_probe_ms" in frame.columns:
        frame["host_load"] = _host_load(frame)
    first = [c for c in COLUMN_ORDER if c in frame.columns]
    last = [c for c in LAST_COLUMNS if c in frame.columns]
    return frame[first + sorted(c for c in frame.columns if c not in first and c not in last) + last]


def _host_load(frame: pd.DataFrame) -> pd.Series:
    """Each row's ``host_load`` (``measure.host_loads``) against the quietest probe of the rows measured on the same
    machine (``measured_on``: the host's, each target's)."""
    out = pd.Series(math.nan, index=frame.index)
    groups = frame.groupby("measured_on", sort=False) if "measured_on" in frame.columns else [("", frame)]
    for _, g in groups:
        cols = [g[c].astype(float).tolist() for c in ("host_probe_ms", "host_probe_cpu_ms", "host_cpu_share")]
        out[g.index] = host_loads(*cols)
    return out


def study_warnings(assessed: Sequence[Assessment]) -> list[str]:
    """What a user must know about the rows: slower than fp32, mislabelled precision, noise, nodes, errors."""
    out = []
    for a in assessed:
        m, label = a.metrics, a.point.label
        if a.slower_than_fp32:
            out.append(
                f"{a.point.backend} {a.point.precision} at pruning {a.point.pruning_level:g} is slower than its "
                f"fp32 parent ({m.latency_ms:.4f} vs {m.latency_ms * a.speedup_vs_fp32:.4f} ms)"
            )
        if a.precision_mismatch and a.result.measurement is not None:
            out.append(
                f"{a.point.backend} {a.point.precision} at pruning {a.point.pruning_level:g} really computes in "
                f"{a.result.measurement.kernel_precision}"
            )
        if m.latency_ci95_ms / m.latency_ms > 0.05:
            out.append(f"noisy latency: {label} ±{100 * m.latency_ci95_ms / m.latency_ms:.1f}% (95% CI)")
        rec = a.result.measurement
        if rec is not None and rec.latency.budget_hit:
            out.append(
                f"latency of {label} stopped at its time budget (benchmark_max_s, {rec.latency.spent_s or 0:.1f} s) "
                f"at ±{100 * m.latency_ci95_ms / m.latency_ms:.1f}% (95% CI, {rec.latency.n} samples)"
            )
        if a.result.error is not None:
            out.append(f"{label} failed: {a.result.error}")
    nodes = sorted({(a.result.hostname, a.result.cpu_model) for a in assessed if a.ok and a.result.hostname}, key=str)
    if len(nodes) > 1:
        out.append(
            f"rows were measured on {len(nodes)} different nodes ({', '.join(f'{h} [{c}]' for h, c in nodes)}); "
            "latencies are only compared within a node (speed-ups use the fp32 parent measured on the same node)"
        )
    return out
