"""Measure stage: accuracy, latency distribution, throughput, memory and energy of any variant, and the
frozen records (config point, measurement record, variant result) that flow from here to the report, the one
guard of torch's thread count (``torch_threads``) and the metric registry (``METRICS``: how a variant is scored).
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
from .scoring import (
    METRICS,
    SEGMENTATION_IGNORE_INDEX,
    SQNR_CAP_DB,
    Detections,
    DetectionTargets,
    Metric,
    MetricError,
    check_metric_value,
    get_metric,
    list_metrics,
    metric_drop,
    register_metric,
    user_metric,
)
from .threads import torch_threads

__all__ = [
    "METRICS",
    "SEGMENTATION_IGNORE_INDEX",
    "SQNR_CAP_DB",
    "BenchmarkSettings",
    "ConfigPoint",
    "DetectionTargets",
    "Detections",
    "LatencySamples",
    "MeasurementRecord",
    "Metric",
    "MetricError",
    "ModelLike",
    "PerfMetrics",
    "RaplReader",
    "VariantResult",
    "as_variant",
    "check_metric_value",
    "collect_metrics",
    "evaluate_accuracy",
    "get_metric",
    "latency_differs",
    "list_metrics",
    "measure_energy",
    "measure_latency",
    "measure_latency_distribution",
    "measure_variant",
    "measure_variants",
    "memory_violations",
    "metric_drop",
    "model_memory_mb",
    "pinned",
    "proxy_energy",
    "register_metric",
    "torch_threads",
    "user_metric",
]
