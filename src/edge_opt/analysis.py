"""Hardware-analysis stage: layer tables, the machine's roofs and each variant's place under them.

``analyse_hardware`` measures (or reads the cached) machine calibration, builds the layer
tables of the baseline and the recommended variant at the study's latency batch and at the
loader's batch, places every measured variant on the roofline, and writes the hardware
artifacts (``layerwise_breakdown.csv``, ``precision_tradeoffs.csv``, ``hardware_summary.csv``,
``roofline_points.csv`` and their plots).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from .config import StudyConfig
from .hardware import (
    add_layer_roofline,
    estimate_layerwise_stats,
    machine_calibration,
    precision_tradeoff_table,
    save_hardware_artifacts,
    summarize_hardware,
)
from .results import VariantResult
from .selection import Assessment, Selection, to_frame
from .variants.precisions import get_precision

__all__ = ["HardwareAnalysis", "analyse_hardware", "layer_table"]


@dataclass(frozen=True)
class HardwareAnalysis:
    """What the hardware stage found.

    Attributes:
        summaries: ``summarize_hardware`` of the baseline, the recommended variant, and the recommended
            variant at the loader's batch (``recommended_batch``), plus the ``machine`` calibration.
        machine: the roofs (measured or configured).
    """

    summaries: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def compute_bound_fraction(self, label: str) -> float | None:
        """Compute-bound share of the roofline time of ``label`` (baseline / recommended)."""
        return self.summaries.get(label, {}).get("compute_bound_fraction")


def layer_table(model: nn.Module, precision: str, batch: int, input_shape: tuple[int, ...]) -> pd.DataFrame:
    """Layer table of a float parent at ``precision``: activations and parameters at its bytes per value."""
    bpv = get_precision(precision).bytes_per_value
    df = estimate_layerwise_stats(model, batch, input_shape, activation_bytes_per_value=bpv)
    df["parameter_bytes"] = (df["parameter_bytes"] * (bpv / 4)).astype(int)  # the parent is fp32
    return df


def _roofline_points(assessed: Sequence[Assessment], parent: Callable[[float], nn.Module], batch: int,
                     input_shape: tuple[int, ...], bw: float, peak: float) -> pd.DataFrame:
    cache: dict[tuple[float, str], pd.DataFrame] = {}
    rows = []
    for a in assessed:
        if not a.ok:
            continue
        k = (a.point.pruning_level, a.point.precision)
        if k not in cache:
            cache[k] = layer_table(parent(k[0]), k[1], batch, input_shape)
        s = summarize_hardware(cache[k], a.metrics.latency_ms, bw, peak)
        rows.append({"backend": a.point.backend, "precision": a.point.precision, "pruning_level": k[0],
                     "arithmetic_intensity": s["arithmetic_intensity"], "achieved_gmacs": s["achieved_gmacs"]})
    return pd.DataFrame(rows)


def analyse_hardware(out: Path, cfg: StudyConfig, parent: Callable[[float], nn.Module], input_shape: tuple[int, ...],
                     baseline: VariantResult, selection: Selection,
                     assessed: Sequence[Assessment]) -> tuple[HardwareAnalysis, pd.DataFrame]:
    """Stage: roofline analysis of the baseline and the chosen variant; writes the hardware artifacts.

    Returns:
        The analysis and the chosen variant's (else the baseline's) layer table with roofline columns.
    """
    machine = machine_calibration(out, cfg.threads, cfg.memory_bandwidth_gbps, cfg.peak_compute_gmacs)
    bw, peak, lb = machine["memory_bandwidth_gbps"], machine["peak_compute_gmacs"], cfg.latency_batch_size
    base_m = baseline.metrics
    if base_m is None:
        raise ValueError("The hardware analysis needs a measured baseline. Got a baseline without measurement.")
    base_layers = add_layer_roofline(layer_table(parent(0.0), "fp32", lb, input_shape), bw, peak)
    summaries: dict[str, Any] = {"baseline": summarize_hardware(base_layers, base_m.latency_ms, bw, peak)}
    layers = base_layers
    chosen = selection.chosen
    if chosen is not None:
        level, precision = chosen.point.pruning_level, chosen.point.precision
        layers = add_layer_roofline(layer_table(parent(level), precision, lb, input_shape), bw, peak)
        summaries["recommended"] = summarize_hardware(layers, chosen.metrics.latency_ms, bw, peak)
        rec = chosen.result.measurement
        loader_batch = rec.batch_latency.batch_size if rec is not None else lb
        big = add_layer_roofline(layer_table(parent(level), precision, loader_batch, input_shape), bw, peak)
        summaries["recommended_batch"] = summarize_hardware(big, chosen.metrics.batch_latency_ms, bw, peak)
    summaries["machine"] = machine
    points = _roofline_points(assessed, parent, lb, input_shape, bw, peak)
    frame = to_frame(assessed)
    ptable = precision_tradeoff_table(frame) if len(assessed) else pd.DataFrame()
    hw_summary = {**summaries["recommended" if chosen is not None else "baseline"],
                  "bandwidth_source": machine["bandwidth_source"], "peak_source": machine["peak_source"],
                  "peak_compute_gmacs_int8": machine.get("peak_compute_gmacs_int8")}
    save_hardware_artifacts(out, layers, ptable, hw_summary, points)
    return HardwareAnalysis(summaries, machine), layers
