"""Rows imported from vendor benchmark reports (``edge-opt import-bench``) as frozen records.

A ``VendorRow`` is a vendor tool's measurement of one study point on a named target. The study store keeps
``VendorRow.to_dict()`` (kind ``vendor``) and gives back ``VendorRow.from_dict``; ``VendorRow.row()`` is its
sweep-table row, built only when the report is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..device import VendorMeasurement
from ..measure import ConfigPoint
from .store import VENDOR_KIND, StudyStore

__all__ = ["VENDOR_REJECTED_REASON", "VendorRow", "stored_vendor_rows"]

VENDOR_REJECTED_REASON = "imported vendor measurement (not part of the selection)"


@dataclass(frozen=True)
class VendorRow:
    """A vendor tool's measurement of ``point`` on the target ``measured_on``: the tool's statistics (NaN where
    it reports none), the host's accuracy and memory (the same model, not re-evaluated).

    Attributes:
        key: store key, ``<host point key>@<target>``.
        point: the study point measured.
        measured_on: the target's name.
        source: the tool (``openvino benchmark_app``, ``litert benchmark_model``).
        accuracy: the host's accuracy of the point.
        latency_ms, latency_median_ms, latency_std_ms, latency_ci95_ms: the tool's latency statistics (ms).
        latency_samples: how many runs the tool timed (None when it does not say).
        throughput_sps: the tool's throughput (samples/s).
        memory_mb, runtime_memory_mb: the host's parameter and run-time memory of the point.
        vendor: everything the tool reported (None for a stored document without it).
    """

    key: str
    point: ConfigPoint
    measured_on: str
    source: str
    accuracy: float
    latency_ms: float
    latency_median_ms: float = math.nan
    latency_std_ms: float = math.nan
    latency_ci95_ms: float = math.nan
    latency_samples: int | None = None
    throughput_sps: float = math.nan
    memory_mb: float = math.nan
    runtime_memory_mb: float = math.nan
    vendor: VendorMeasurement | None = None

    def to_dict(self) -> dict[str, Any]:
        """The document the study store keeps (the sweep-table columns, then ``vendor``: the tool's report)."""
        p = self.point
        return {
            "key": self.key,
            "pruning_level": p.pruning_level,
            "precision": p.precision,
            "backend": p.backend,
            "calibration": p.calibration,
            "measured_on": self.measured_on,
            "source": self.source,
            "error": None,
            "accuracy": self.accuracy,
            "accuracy_source": "host",
            "latency_ms": self.latency_ms,
            "latency_median_ms": self.latency_median_ms,
            "latency_std_ms": self.latency_std_ms,
            "latency_ci95_ms": self.latency_ci95_ms,
            "latency_p95_ms": math.nan,
            "device_latency_ms": self.latency_ms,
            "latency_samples": self.latency_samples,
            "throughput_sps": self.throughput_sps,
            "memory_mb": self.memory_mb,
            "runtime_memory_mb": self.runtime_memory_mb,
            "accepted": False,
            "rejected_reason": VENDOR_REJECTED_REASON,
            "vendor": self.vendor.to_dict() if self.vendor is not None else None,
        }

    def row(self) -> dict[str, Any]:
        """The sweep-table row: the stored document without the tool's report, in key order (as the store
        keeps it)."""
        return {k: v for k, v in sorted(self.to_dict().items()) if k != "vendor"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VendorRow:
        """Inverse of ``to_dict`` (a stored document)."""
        vendor = d.get("vendor")
        samples = d.get("latency_samples")
        return cls(
            key=str(d["key"]),
            point=ConfigPoint(
                float(d["pruning_level"]), str(d["precision"]), str(d["backend"]), d.get("calibration", "")
            ),
            measured_on=str(d["measured_on"]),
            source=str(d["source"]),
            accuracy=float(d["accuracy"]),
            latency_ms=float(d["latency_ms"]),
            latency_median_ms=float(d.get("latency_median_ms", math.nan)),
            latency_std_ms=float(d.get("latency_std_ms", math.nan)),
            latency_ci95_ms=float(d.get("latency_ci95_ms", math.nan)),
            latency_samples=int(samples) if samples is not None else None,
            throughput_sps=float(d.get("throughput_sps", math.nan)),
            memory_mb=float(d.get("memory_mb", math.nan)),
            runtime_memory_mb=float(d.get("runtime_memory_mb", math.nan)),
            vendor=VendorMeasurement.from_dict(vendor) if isinstance(vendor, Mapping) else None,
        )


def stored_vendor_rows(store: StudyStore) -> list[VendorRow]:
    """Rows imported with ``edge-opt import-bench``, in the order they were imported."""
    docs = [store.get(k) for k in store.keys(VENDOR_KIND)]
    return [VendorRow.from_dict(d) for d in docs if d is not None]
