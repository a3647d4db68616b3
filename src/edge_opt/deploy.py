"""Deployment simulation with MLPerf-LoadGen-style scenarios and a slower simulated CPU clock.

Scenarios (host measurements, then scaled to the simulated device):

- ``single_stream``: one-sample queries issued back to back until both ``min_queries`` and
  ``min_duration_s`` are reached; p50/p90 (MLPerf's metric)/p95/p99/mean and queries/s.
- ``server``: Poisson arrivals (seeded) into one worker; a query's latency includes its wait.
  Service times are the single-stream run's measured service times in order (the real model
  ran them; no distribution is sampled). Also searches the highest arrival rate whose p99
  stays within the latency bound.
- ``offline``: all evaluation samples in large batches; samples/s.
- ``batch``: the reference's batch latency/throughput at the loader's batch size and a
  stream of 128 single items (``batch_latency_ms`` …).

Slower CPU: the device runs at ``s = cpu_frequency_scale`` × the host clock.
``latency_model="linear"`` stretches all time by 1/s; ``"roofline"`` stretches only the
compute-bound share of the model's roofline time (from the layer analysis) and leaves the
memory-bound share. Energy: RAPL when readable (package-wide), else ``power_watts × busy
time`` labelled ``proxy``; on the device, power is assumed to scale as ``power_watts × s``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer

from .energy import RaplReader, measure_energy
from .metrics import ModelLike, _as_variant

SCENARIOS = ("single_stream", "server", "offline", "batch")


def _pcts(lat_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(lat_ms, dtype=float)
    if a.size == 0:
        return {k: math.nan for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")}
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def simulate_server(service_ms: Sequence[float], rate_qps: float, seed: int = 0) -> np.ndarray:
    """Latencies (ms) of a single-worker FIFO queue with Poisson arrivals at ``rate_qps``.

    Args:
        service_ms: measured service time of each query, in issue order.
        rate_qps: arrival rate.
        seed: seeds the arrival generator.
    Returns:
        Per-query latency = wait + service.
    """
    if rate_qps <= 0:
        raise ValueError(f"The 'rate_qps' parameter must be > 0. Got {rate_qps!r} instead.")
    service = np.asarray(service_ms, dtype=float)
    gaps = np.random.default_rng(seed).exponential(1e3 / rate_qps, size=service.size)
    arrivals = np.cumsum(gaps)
    lat = np.empty_like(service)
    free_at = 0.0
    for i, (arr, svc) in enumerate(zip(arrivals, service)):
        start = max(arr, free_at)
        free_at = start + svc
        lat[i] = free_at - arr
    return lat


def max_rate_within(service_ms: Sequence[float], bound_ms: float, steps: int = 8, seed: int = 0) -> dict[str, Any]:
    """Bisection (``steps`` rounds) for the highest Poisson rate whose p99 latency ≤ ``bound_ms``."""
    service = np.asarray(service_ms, dtype=float)
    capacity = 1e3 / service.mean()
    if np.percentile(service, 99) > bound_ms:
        return {"max_rate_qps": 0.0, "p99_at_max_ms": math.nan, "latency_bound_ms": bound_ms, "steps": 0}
    lo, hi = 0.0, capacity
    best_p99 = math.nan
    for _ in range(steps):
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        p99 = float(np.percentile(simulate_server(service, mid, seed), 99))
        if p99 <= bound_ms:
            lo, best_p99 = mid, p99
        else:
            hi = mid
    return {"max_rate_qps": lo, "p99_at_max_ms": best_p99, "latency_bound_ms": bound_ms, "steps": steps}


def device_latency_factor(cpu_frequency_scale: float, latency_model: str = "linear",
                          compute_bound_fraction: Optional[float] = None) -> float:
    """Host → device latency factor.

    linear: 1/s. roofline: c/s + (1 − c), with c the compute-bound share of the model's roofline time.
    """
    s = float(cpu_frequency_scale)
    if not 0 < s <= 1:
        raise ValueError(f"The 'cpu_frequency_scale' parameter must be in (0, 1]. Got {s!r} instead.")
    if latency_model == "linear":
        return 1.0 / s
    if latency_model == "roofline":
        c = compute_bound_fraction
        if c is None or not math.isfinite(c):
            raise ValueError("latency_model='roofline' needs the compute-bound fraction from the hardware analysis.")
        return c / s + (1.0 - c)
    raise ValueError(f"The 'latency_model' parameter must be one of ['linear', 'roofline']. Got {latency_model!r} instead.")


def scale_layer_times(layer_df: pd.DataFrame, cpu_frequency_scale: float) -> pd.DataFrame:
    """Per-layer device time under the roofline model: compute-bound layers stretch by 1/s, memory-bound ones do not.

    ``layer_df`` needs ``roofline_time_ms`` and ``bound_regime`` (see ``hardware.add_layer_roofline``).
    """
    df = layer_df.copy()
    stretch = np.where(df["bound_regime"] == "compute-bound", 1.0 / cpu_frequency_scale, 1.0)
    df["device_time_ms"] = df["roofline_time_ms"] * stretch
    return df


def _samples(loader: Iterable) -> torch.Tensor:
    xs = [x for x, _ in loader]
    if not xs:
        raise ValueError("No batches in the loader: the deployment simulation needs evaluation data.")
    return torch.cat(xs)


def deployment_simulation(model_or_variant: ModelLike, loader: Iterable, device: Any = "cpu",
                          cpu_frequency_scale: float = 1.0, scenarios: Sequence[str] = SCENARIOS, *,
                          min_queries: int = 1024, min_duration_s: float = 10.0,
                          latency_budget_ms: Optional[float] = None, server_target_qps: Optional[float] = None,
                          server_search_steps: int = 8, latency_model: str = "linear",
                          compute_bound_fraction: Optional[float] = None, power_watts: float = 15.0, seed: int = 0,
                          threads: int = 1, offline_batch_size: int = 256, stream_items: int = 128,
                          rapl: Optional[RaplReader] = None) -> dict[str, Any]:
    """Simulate deployment scenarios for a model or variant on this host and on the slower device.

    Args:
        model_or_variant: torch module (run as it is: fp32, ``.half()`` or quantized) or a backend ``Variant``.
        loader: evaluation data (queries cycle through its samples).
        device: device of a plain torch module (CPU measurements).
        cpu_frequency_scale: s in (0, 1]: device clock / host clock.
        scenarios: any of single_stream, server, offline, batch.
        min_queries / min_duration_s: single-stream minimum run (both must be met).
        latency_budget_ms: server latency bound (default: 5 × single-stream p90 on the host, labelled).
        server_target_qps: server arrival rate (default: half the single-worker capacity).
        latency_model: "linear" or "roofline" (needs ``compute_bound_fraction``).
        power_watts: host power for the energy proxy.
    Returns:
        dict with ``scenarios`` (per scenario: ``host`` and ``device`` figures), the reference's
        batch keys at top level, the latency model and factor, energy source.
    Raises:
        ValueError: empty loader ("No batches"), unknown scenario, bad scale.
    """
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"The 'scenarios' parameter must contain names from {list(SCENARIOS)}. Got {unknown} instead.")
    data = _samples(loader)
    factor = device_latency_factor(cpu_frequency_scale, latency_model, compute_bound_fraction)
    variant = _as_variant(model_or_variant, None, [(data[:2], None)], device)
    reader = rapl if rapl is not None else RaplReader()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    singles = [variant.prepare(data[i:i + 1]) for i in range(min(len(data), 256))]
    out: dict[str, Any] = {"backend": variant.backend, "precision": variant.precision,
                           "kernel_precision": variant.kernel_precision, "cpu_frequency_scale": cpu_frequency_scale,
                           "latency_model": latency_model, "device_latency_factor": factor,
                           "compute_bound_fraction": compute_bound_fraction, "threads": threads,
                           "device_power_w": power_watts * cpu_frequency_scale,
                           "power_assumption": "device power = power_watts × cpu_frequency_scale", "scenarios": {}}
    run = variant.run
    try:
        for x in singles[:8]:
            run(x)
        service: list[float] = []

        def stream() -> int:
            start = time.perf_counter()
            i = 0
            while i < min_queries or time.perf_counter() - start < min_duration_s:
                t0 = time.perf_counter()  # scheduled = issued right after the previous completion
                run(singles[i % len(singles)])
                service.append((time.perf_counter() - t0) * 1e3)
                i += 1
            return i

        need_stream = any(s in scenarios for s in ("single_stream", "server"))
        if need_stream:
            energy, elapsed, n = measure_energy(stream, power_watts=power_watts, reader=reader)
            host = {**_pcts(service), "queries": n, "duration_s": elapsed, "qps": n / elapsed,
                    "energy_per_query_j": energy.joules, "energy_source": energy.source}
            dev_lat = [v * factor for v in service]
            dev = {**_pcts(dev_lat), "queries": n, "qps": n / (elapsed * factor),
                   "energy_per_query_j": (energy.joules * cpu_frequency_scale * factor) if energy.source == "proxy"
                   else math.nan, "energy_source": energy.source if energy.source == "proxy" else "not modelled"}
            if "single_stream" in scenarios:
                out["scenarios"]["single_stream"] = {"host": host, "device": dev}
        if "server" in scenarios:
            bound = latency_budget_ms
            bound_src = "latency_budget_ms"
            if bound is None:
                bound = 5 * _pcts(service)["p90_ms"] * factor
                bound_src = "5 × device single-stream p90 (no latency_budget_ms configured)"
            res: dict[str, Any] = {}
            for label, svc in (("host", service), ("device", [v * factor for v in service])):
                cap = 1e3 / float(np.mean(svc))
                rate = server_target_qps if server_target_qps else 0.5 * cap
                lat = simulate_server(svc, rate, seed)
                dur = (len(svc) / rate)
                res[label] = {**_pcts(lat), "target_qps": rate, "achieved_qps": len(lat) / max(dur, 1e-12),
                              "capacity_qps": cap, "queries": len(lat),
                              "fraction_over_bound": float(np.mean(lat > bound)),
                              "busy_fraction": min(1.0, rate / cap),
                              **{f"search_{k}": v for k, v in max_rate_within(svc, bound, server_search_steps, seed).items()}}
            res["latency_bound_ms"] = bound
            res["latency_bound_source"] = bound_src
            out["scenarios"]["server"] = res
        if "offline" in scenarios:
            batches = [variant.prepare(data[i:i + offline_batch_size]) for i in range(0, len(data), offline_batch_size)]
            run(batches[0])

            def offline() -> int:
                for b in batches:
                    run(b)
                return 1

            energy, elapsed, _ = measure_energy(offline, power_watts=power_watts, reader=reader)
            sps = len(data) / elapsed
            out["scenarios"]["offline"] = {
                "host": {"samples": len(data), "batch_size": offline_batch_size, "duration_s": elapsed,
                         "throughput_sps": sps, "energy_per_sample_j": energy.joules / len(data),
                         "energy_source": energy.source},
                "device": {"throughput_sps": sps / factor,
                           "energy_per_sample_j": energy.joules * cpu_frequency_scale * factor / len(data)
                           if energy.source == "proxy" else math.nan},
            }
        if "batch" in scenarios:
            first = next(iter(loader))[0]
            xb = variant.prepare(first)
            m = Timer("run(x)", globals={"run": run, "x": xb}, num_threads=threads).blocked_autorange(min_run_time=0.2)
            batch_ms = m.median * 1e3
            t0 = time.perf_counter()
            for i in range(stream_items):
                run(singles[i % len(singles)])
            stream_ms = (time.perf_counter() - t0) * 1e3 / stream_items
            host = {"batch_size": len(first), "batch_latency_ms": batch_ms,
                    "batch_throughput_sps": len(first) / (batch_ms / 1e3), "stream_avg_latency_ms": stream_ms,
                    "stream_throughput_sps": 1e3 / stream_ms}
            dev = {"batch_size": len(first), "batch_latency_ms": batch_ms * factor,
                   "batch_throughput_sps": len(first) / (batch_ms * factor / 1e3),
                   "stream_avg_latency_ms": stream_ms * factor, "stream_throughput_sps": 1e3 / (stream_ms * factor)}
            out["scenarios"]["batch"] = {"host": host, "device": dev}
            out.update(dev)  # the reference's top-level keys carry the simulated device's figures
    finally:
        torch.set_num_threads(prev)
    return out


def deployment_rows(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Flatten {label: deployment_simulation result} into one row per label × scenario × (host|device)."""
    rows = []
    for label, res in results.items():
        for scen, parts in res.get("scenarios", {}).items():
            for where in ("host", "device"):
                if where in parts:
                    rows.append({"model": label, "scenario": scen, "where": where,
                                 "backend": res.get("backend"), "precision": res.get("precision"),
                                 "cpu_frequency_scale": res.get("cpu_frequency_scale"),
                                 "latency_model": res.get("latency_model"), **parts[where]})
    return pd.DataFrame(rows)
