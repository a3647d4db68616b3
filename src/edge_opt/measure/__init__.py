"""Measure stage: accuracy, latency distribution, throughput, memory and energy of any variant, and the
frozen records (config point, measurement record, variant result) that flow from here to the report, and the one
guard of torch's thread count (``torch_threads``).
"""

from __future__ import annotations

from .energy import RaplReader, measure_energy, proxy_energy
from .metrics import (
    BenchmarkSettings,
    LatencySamples,
    MeasurementRecord,
    ModelLike,
    PerfMetrics,
    as_variant,
    collect_metrics,
    evaluate_accuracy,
    latency_differs,
    measure_latency,
    measure_latency_distribution,
    measure_variant,
    measure_variants,
    memory_violations,
    model_memory_mb,
    pinned,
)
from .records import ConfigPoint, VariantResult
from .threads import torch_threads

__all__ = [
    "BenchmarkSettings",
    "ConfigPoint",
    "LatencySamples",
    "MeasurementRecord",
    "ModelLike",
    "PerfMetrics",
    "RaplReader",
    "VariantResult",
    "as_variant",
    "collect_metrics",
    "evaluate_accuracy",
    "latency_differs",
    "measure_energy",
    "measure_latency",
    "measure_latency_distribution",
    "measure_variant",
    "measure_variants",
    "memory_violations",
    "model_memory_mb",
    "pinned",
    "proxy_energy",
    "torch_threads",
]
