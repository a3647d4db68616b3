"""Report of the int8 sensitivity pass: ``sensitivity.csv``, ``sensitivity.png`` and the side-by-side table of
float, full int8 and mixed int8 per parent and backend (for the HTML report)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..config import StudyConfig
from ..core import atomic
from ..measure import METRICS
from ..study import Assessment, parent_key, scores_metric

__all__ = ["SENSITIVITY_COLUMNS", "mixed_comparison", "sensitivity_table", "write_sensitivity"]

SENSITIVITY_COLUMNS = [
    "pruning_level",
    "backend",
    "layer",
    "kind",
    "macs",
    "params",
    "drop",
    "sqnr_db",
    "rank",
    "recovery",
]
RECOVERY_LABEL = r"/(?:cle|bias_correction|qat\d+)$"  # how a recovery ends a point's calibration label


def sensitivity_table(out: Path, cfg: StudyConfig) -> pd.DataFrame:
    """Every kept sensitivity result of this study's parents (``out/sensitivity/*.json``), one row per layer;
    ``recovery``: ``none``, or ``cle`` for the equalized parent's pass (each layer's drop before and after)."""
    levels = {parent_key(cfg, float(lv)): float(lv) for lv in cfg.pruning_levels}
    rows = []
    for path in sorted((out / "sensitivity").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        key, _, recovery = str(doc["parent_key"]).partition("-")
        if key not in levels:
            continue
        rows += [
            {"pruning_level": levels[key], "backend": doc["backend"], **layer, "recovery": recovery or "none"}
            for layer in doc["layers"]
        ]
    frame = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
    return frame.sort_values(["pruning_level", "backend", "recovery", "rank"], kind="mergesort").reset_index(drop=True)


def _plot(path: Path, frame: pd.DataFrame, metric: str | None = None) -> None:
    """One bar chart per parent and backend; ``metric``: the study's metric's display name when it is not top1
    (the drops are then in its units, signed so that positive is worse)."""
    groups = list(frame.groupby(["pruning_level", "backend", "recovery"], sort=True))
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 1.2 + 0.35 * len(frame) + 0.6 * len(groups)), squeeze=False)
    for ax, ((level, backend, recovery), g) in zip(axes[:, 0], groups):
        g = g.sort_values("rank", ascending=False)
        ax.barh(g["layer"], (100 if metric is None else 1) * g["drop"], color="tab:red")
        what = "accuracy" if metric is None else metric
        after = "" if recovery == "none" else f", after {recovery}"
        ax.set_title(f"{backend}, pruning {level:g}{after}: {what} drop with that layer alone in int8", fontsize=9)
        ax.set_xlabel("accuracy drop (points)" if metric is None else f"{metric} drop (positive = worse)")
    fig.tight_layout()
    atomic.write_with(path, lambda t: fig.savefig(t, dpi=140, format="png"))
    plt.close(fig)


def _metric_label(cfg: StudyConfig) -> str | None:
    """The display name of the study's metric (None for top1)."""
    if not scores_metric(cfg):
        return None
    if cfg.metric_name or ":" in cfg.metric:
        return cfg.metric_name or cfg.metric.rpartition(":")[2]
    return METRICS.get(cfg.metric).display_name if cfg.metric in METRICS else cfg.metric


def write_sensitivity(out: Path, cfg: StudyConfig) -> pd.DataFrame | None:
    """Write ``sensitivity.csv`` and ``sensitivity.png`` when a sensitivity pass ran (int8_mixed); else None."""
    frame = sensitivity_table(out, cfg)
    if frame.empty:
        return None
    atomic.write_with(out / "sensitivity.csv", lambda t: frame.to_csv(t, index=False, encoding="utf-8"))
    _plot(out / "sensitivity.png", frame, _metric_label(cfg))
    return frame


def mixed_comparison(assessed: Sequence[Assessment]) -> pd.DataFrame:
    """Per parent and backend: fp32, plain int8, int8 under each recovery (``calibration``: the choice's label,
    e.g. ``minmax/per-tensor/4/cle``) and int8_mixed side by side — accuracy drop, latency, memory, the int8 MAC
    share and float layers of the quantized ones, and each variant's build time (a recovery's cost). Empty unless
    the study has int8_mixed or recovery points."""
    rows = []
    for a in assessed:
        if not a.ok or a.point.precision not in ("fp32", "int8", "int8_mixed"):
            continue
        r = a.result
        rows.append(
            {
                "pruning_level": a.point.pruning_level,
                "backend": a.point.backend,
                "precision": a.point.precision,
                "calibration": a.point.calibration,
                "accuracy_drop": a.accuracy_drop,
                **({"metric_drop": a.metric_drop} if a.result.measurement and a.result.measurement.metric_name else {}),
                "latency_ms": a.metrics.latency_ms,
                "memory_mb": a.metrics.memory_mb,
                "int8_mac_fraction": r.int8_mac_fraction,
                "float_layers": ";".join(r.float_layers) if r.float_layers is not None else "",
                "build_s": r.timings.get("variant_building", math.nan),
            }
        )
    frame = pd.DataFrame(rows)
    recovered = frame["calibration"].str.contains(RECOVERY_LABEL).any() if len(frame) else False
    if frame.empty or ("int8_mixed" not in set(frame["precision"]) and not recovered):
        return pd.DataFrame()
    return frame.sort_values(["pruning_level", "backend", "precision", "calibration"], kind="mergesort").reset_index(
        drop=True
    )
