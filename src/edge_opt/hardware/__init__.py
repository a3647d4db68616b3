"""Hardware stage: layer tables (MACs, bytes), the machine's measured roofs and each variant's place under them."""

from __future__ import annotations

from .analysis import HardwareAnalysis, analyse_hardware
from .tables import (
    LayerEstimate,
    decade_axes,
    estimate_layerwise_stats,
    machine_calibration,
    precision_tradeoff_table,
    rebuild_hardware_plots,
    save_hardware_artifacts,
    summarize_hardware,
)

__all__ = [
    "HardwareAnalysis",
    "LayerEstimate",
    "analyse_hardware",
    "decade_axes",
    "estimate_layerwise_stats",
    "machine_calibration",
    "precision_tradeoff_table",
    "rebuild_hardware_plots",
    "save_hardware_artifacts",
    "summarize_hardware",
]
