"""Vendor benchmark reports as measurements: OpenVINO ``benchmark_app``'s JSON report (``-report_type
no_counters -json_stats``: ``benchmark_report.json``) and the log of LiteRT's ``benchmark_model``.

Only the statistics the tool reports are kept: ``benchmark_app`` gives median, mean, min and max latency and
the throughput — no spread, so no confidence interval is made up; ``benchmark_model`` gives count, mean, min,
max and standard deviation of its timed runs, from which the t-based 95 % half-width follows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core import ci95_from_std

__all__ = [
    "VendorMeasurement",
    "VendorLogError",
    "parse_benchmark_app_json",
    "parse_benchmark_model_log",
    "read_vendor_log",
]


class VendorLogError(ValueError):
    """The file is not a report this reader understands (the text says what is missing)."""


@dataclass(frozen=True)
class VendorMeasurement:
    """What a vendor tool measured, in ms (NaN where the tool does not report the figure)."""

    source: str  # "openvino benchmark_app" / "litert benchmark_model"
    latency_mean_ms: float
    latency_median_ms: float = math.nan
    latency_min_ms: float = math.nan
    latency_max_ms: float = math.nan
    latency_std_ms: float = math.nan
    latency_ci95_ms: float = math.nan
    count: int | None = None
    throughput_fps: float = math.nan
    first_inference_ms: float = math.nan
    details: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["details"] = dict(self.details)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VendorMeasurement:
        """Inverse of ``to_dict`` (a stored document; unknown keys are ignored)."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "details"}
        details = d.get("details") or {}
        return cls(**known, details=tuple((str(k), str(v)) for k, v in dict(details).items()))


def _num(text: Any) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        return math.nan


def parse_benchmark_app_json(doc: Any) -> VendorMeasurement:
    """``benchmark_report.json`` of OpenVINO's ``benchmark_app`` (its ``execution_results`` section)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("execution_results"), dict):
        raise VendorLogError("not a benchmark_app JSON report: no 'execution_results' section")
    r = doc["execution_results"]
    median_key = next((k for k in r if str(k).startswith("latency (")), None)
    mean = _num(r.get("avg latency"))
    if not (math.isfinite(mean) and mean > 0):
        raise VendorLogError(
            "benchmark_app report without a positive 'avg latency' (a MULTI-device run reports "
            f"none); got {str(r.get('avg latency'))[:20]!r}"
        )
    iterations = _num(r.get("total number of iterations"))
    setup = doc.get("configuration_setup") or {}
    opts = doc.get("cmd_options") or {}
    details = tuple((str(k), str(v)) for k, v in {**opts, **setup}.items())[:40]
    return VendorMeasurement(
        "openvino benchmark_app",
        mean,
        _num(r.get(median_key)) if median_key else math.nan,
        _num(r.get("min latency")),
        _num(r.get("max latency")),
        count=int(iterations) if math.isfinite(iterations) else None,
        throughput_fps=_num(r.get("throughput")),
        first_inference_ms=_num(r.get("first inference time (ms)")),
        details=details,
    )


_STATS = re.compile(
    r"count=(\d+)\s+first=(\d+)\s+curr=(\d+)\s+min=(\d+)\s+max=(\d+)\s+avg=([\d.e+-]+)\s+"
    r"std=([\d.e+-]+)"
)
_TIMINGS = re.compile(r"Inference timings in us:.*?First inference:\s*([\d.e+-]+).*?Inference \(avg\):\s*([\d.e+-]+)")


def parse_benchmark_model_log(text: str) -> VendorMeasurement:
    """The log of LiteRT's (TensorFlow Lite's) ``benchmark_model``: the statistics line of the timed runs
    (``count= first= curr= min= max= avg= std=``, µs; the last one printed is the timed run, the one before it
    the warm-up) and the ``Inference timings in us`` summary."""
    stats = _STATS.findall(text)
    if not stats:
        raise VendorLogError("not a benchmark_model log: no 'count=… avg=… std=…' statistics line")
    count, _first, _curr, lo, hi, avg, std = stats[-1]
    n, mean_us, std_us = int(count), float(avg), float(std)
    if not (n >= 1 and math.isfinite(mean_us) and mean_us > 0 and math.isfinite(std_us) and std_us >= 0):
        raise VendorLogError(f"benchmark_model statistics out of range: count={count} avg={avg} std={std}")
    timing = _TIMINGS.search(text.replace("\n", " "))
    ci = ci95_from_std(std_us, n) / 1e3  # NaN for one run
    return VendorMeasurement(
        "litert benchmark_model",
        mean_us / 1e3,
        latency_min_ms=float(lo) / 1e3,
        latency_max_ms=float(hi) / 1e3,
        latency_std_ms=std_us / 1e3,
        latency_ci95_ms=ci,
        count=n,
        throughput_fps=1e6 / mean_us if mean_us > 0 else math.nan,
        first_inference_ms=float(timing.group(1)) / 1e3 if timing else math.nan,
    )


def read_vendor_log(path: str | Path) -> VendorMeasurement:
    """A ``benchmark_app`` JSON report or a ``benchmark_model`` log, recognised by its content."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise VendorLogError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    if len(text) > 50 << 20:
        raise VendorLogError(f"{str(p)!r} is over 50 MB: not a benchmark report")
    try:
        doc = json.loads(text)
    except ValueError:
        return parse_benchmark_model_log(text)
    return parse_benchmark_app_json(doc)
