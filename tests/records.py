"""Synthetic measurement records for tests of the analyse and report stages (no model runs)."""

from __future__ import annotations

from edge_opt.measure.energy import EnergyEstimate
from edge_opt.measure.metrics import LatencySamples, MeasurementRecord
from edge_opt.measure.records import ConfigPoint, VariantResult


def fake_result(
    key: str,
    level: float,
    precision: str,
    backend: str,
    *,
    accuracy: float,
    latency_ms: list[float],
    memory_mb: float,
    kernel: str | None = None,
    runtime_mb: float | None = None,
    hostname: str = "h",
    error: str | None = None,
    n: int = 200,
) -> VariantResult:
    """A result whose raw samples give exactly the requested accuracy, latencies and memory."""
    correct = tuple(i < round(accuracy * n) for i in range(n))
    mean = sum(latency_ms) / len(latency_ms)
    rec = MeasurementRecord(
        backend=backend,
        precision=precision,
        kernel_precision=kernel or precision,
        parameter_bytes=int(round(memory_mb * 1e6)),
        latency=LatencySamples(1, tuple(latency_ms), 10),
        batch_latency=LatencySamples(64, (mean * 10,), 1),
        correct=correct,
        energy=EnergyEstimate(15.0 * mean / 1e3, "proxy"),
        environment={"hostname": hostname, "cpu_model": "cpu"},
    )
    return VariantResult(
        ConfigPoint(level, precision, backend),
        key,
        rec,
        error,
        runtime_parameter_bytes=int(round((runtime_mb or memory_mb) * 1e6)),
    )
