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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer

from . import atomic
from .config import SCENARIO_NAMES, StudyConfig
from .energy import RaplReader, measure_energy
from .metrics import ModelLike, as_variant
from .results import ConfigPoint
from .runner import Sweep, point_key, stable_hash
from .store import StudyStore
from .variants.backends import Variant, VariantBuildError, build_variant

__all__ = [
    "SCENARIOS", "DeploymentSettings", "DeploymentTarget", "deployment_cache_key", "deployment_rows",
    "deployment_simulation", "device_latency_factor", "max_rate_within", "scale_layer_times",
    "simulate_deployment", "simulate_server",
]

SCENARIOS = SCENARIO_NAMES


def _pcts(lat_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(lat_ms, dtype=float)
    if a.size == 0:
        return {k: math.nan for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")}
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def simulate_server(service_ms: Sequence[float] | np.ndarray, rate_qps: float, seed: int = 0) -> np.ndarray:
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
                          compute_bound_fraction: float | None = None) -> float:
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


@dataclass(frozen=True)
class DeploymentSettings:
    """How the scenarios run (see ``deployment_simulation``)."""

    min_queries: int = 1024
    min_duration_s: float = 10.0
    latency_budget_ms: float | None = None
    server_target_qps: float | None = None
    server_search_steps: int = 8
    latency_model: str = "linear"
    compute_bound_fraction: float | None = None
    power_watts: float = 15.0
    seed: int = 0
    threads: int = 1
    offline_batch_size: int = 256
    stream_items: int = 128


@dataclass(frozen=True, eq=False)
class _Run:
    """One simulation's fixed inputs."""

    variant: Variant
    data: torch.Tensor
    singles: list[Any]
    factor: float
    scale: float
    s: DeploymentSettings
    reader: RaplReader


def _single_stream(run: _Run) -> tuple[dict[str, Any], list[float]]:
    service: list[float] = []
    s, fn = run.s, run.variant.run

    def stream() -> int:
        start = time.perf_counter()
        i = 0
        while i < s.min_queries or time.perf_counter() - start < s.min_duration_s:
            t0 = time.perf_counter()  # scheduled = issued right after the previous completion
            fn(run.singles[i % len(run.singles)])
            service.append((time.perf_counter() - t0) * 1e3)
            i += 1
        return i

    energy, elapsed, n = measure_energy(stream, power_watts=s.power_watts, reader=run.reader)
    host = {**_pcts(service), "queries": n, "duration_s": elapsed, "qps": n / elapsed,
            "energy_per_query_j": energy.joules, "energy_source": energy.source}
    proxy = energy.source == "proxy"
    dev = {**_pcts([v * run.factor for v in service]), "queries": n, "qps": n / (elapsed * run.factor),
           "energy_per_query_j": energy.joules * run.scale * run.factor if proxy else math.nan,
           "energy_source": energy.source if proxy else "not modelled"}
    return {"host": host, "device": dev}, service


def _server(run: _Run, service: list[float]) -> dict[str, Any]:
    s = run.s
    bound, bound_src = s.latency_budget_ms, "latency_budget_ms"
    if bound is None:
        bound = 5 * _pcts(service)["p90_ms"] * run.factor
        bound_src = "5 × device single-stream p90 (no latency_budget_ms configured)"
    res: dict[str, Any] = {}
    for label, svc in (("host", service), ("device", [v * run.factor for v in service])):
        cap = 1e3 / float(np.mean(svc))
        rate = s.server_target_qps if s.server_target_qps else 0.5 * cap
        lat = simulate_server(svc, rate, s.seed)
        search = max_rate_within(svc, bound, s.server_search_steps, s.seed)
        res[label] = {**_pcts(list(lat)), "target_qps": rate, "achieved_qps": len(lat) / max(len(svc) / rate, 1e-12),
                      "capacity_qps": cap, "queries": len(lat), "fraction_over_bound": float(np.mean(lat > bound)),
                      "busy_fraction": min(1.0, rate / cap), **{f"search_{k}": v for k, v in search.items()}}
    res["latency_bound_ms"] = bound
    res["latency_bound_source"] = bound_src
    return res


def _offline(run: _Run) -> dict[str, Any]:
    s, fn, n = run.s, run.variant.run, len(run.data)
    batches = [run.variant.prepare(run.data[i:i + s.offline_batch_size]) for i in range(0, n, s.offline_batch_size)]
    fn(batches[0])

    def offline() -> int:
        for b in batches:
            fn(b)
        return 1

    energy, elapsed, _ = measure_energy(offline, power_watts=s.power_watts, reader=run.reader)
    sps = n / elapsed
    proxy = energy.source == "proxy"
    return {"host": {"samples": n, "batch_size": s.offline_batch_size, "duration_s": elapsed, "throughput_sps": sps,
                     "energy_per_sample_j": energy.joules / n, "energy_source": energy.source},
            "device": {"throughput_sps": sps / run.factor,
                       "energy_per_sample_j": energy.joules * run.scale * run.factor / n if proxy else math.nan}}


def _batch(run: _Run, first: torch.Tensor) -> dict[str, Any]:
    fn, k = run.variant.run, run.factor
    xb = run.variant.prepare(first)
    m = Timer("run(x)", globals={"run": fn, "x": xb}, num_threads=run.s.threads).blocked_autorange(min_run_time=0.2)
    batch_ms = m.median * 1e3
    t0 = time.perf_counter()
    for i in range(run.s.stream_items):
        fn(run.singles[i % len(run.singles)])
    stream_ms = (time.perf_counter() - t0) * 1e3 / run.s.stream_items
    figures = {}
    for where, f in (("host", 1.0), ("device", k)):
        figures[where] = {"batch_size": len(first), "batch_latency_ms": batch_ms * f,
                          "batch_throughput_sps": len(first) / (batch_ms * f / 1e3),
                          "stream_avg_latency_ms": stream_ms * f, "stream_throughput_sps": 1e3 / (stream_ms * f)}
    return figures


def deployment_simulation(model_or_variant: ModelLike, loader: Iterable, device: Any = "cpu",
                          cpu_frequency_scale: float = 1.0, scenarios: Sequence[str] = SCENARIOS,
                          settings: DeploymentSettings | None = None, *, rapl: RaplReader | None = None,
                          **setting_kwargs: Any) -> dict[str, Any]:
    """Simulate deployment scenarios for a model or variant on this host and on the slower device.

    Args:
        model_or_variant: torch module (run as it is: fp32, ``.half()`` or quantized) or a backend ``Variant``.
        loader: evaluation data (queries cycle through its samples).
        device: device of a plain torch module (CPU measurements).
        cpu_frequency_scale: s in (0, 1]: device clock / host clock.
        scenarios: any of single_stream, server, offline, batch.
        settings: ``DeploymentSettings``; or give its fields as keywords: min_queries / min_duration_s
            (single-stream minimum run, both must be met), latency_budget_ms (server latency bound,
            default 5 × single-stream p90 on the device, labelled), server_target_qps (default half the
            single-worker capacity), server_search_steps, latency_model ("linear" or "roofline", which
            needs compute_bound_fraction), power_watts, seed, threads, offline_batch_size, stream_items.
    Returns:
        dict with ``scenarios`` (per scenario: ``host`` and ``device`` figures), the reference's
        batch keys at top level, the latency model and factor, energy source.
    Raises:
        ValueError: empty loader ("No batches"), unknown scenario, bad scale.
    """
    s = settings if settings is not None else DeploymentSettings(**setting_kwargs)
    unknown = [x for x in scenarios if x not in SCENARIOS]
    if unknown:
        raise ValueError(f"The 'scenarios' parameter must contain names from {list(SCENARIOS)}. Got {unknown} instead.")
    data = _samples(loader)
    factor = device_latency_factor(cpu_frequency_scale, s.latency_model, s.compute_bound_fraction)
    variant = as_variant(model_or_variant, None, [(data[:2], None)], device)
    prev = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    out: dict[str, Any] = {"backend": variant.backend, "precision": variant.precision,
                           "kernel_precision": variant.kernel_precision, "cpu_frequency_scale": cpu_frequency_scale,
                           "latency_model": s.latency_model, "device_latency_factor": factor,
                           "compute_bound_fraction": s.compute_bound_fraction, "threads": s.threads,
                           "device_power_w": s.power_watts * cpu_frequency_scale,
                           "power_assumption": "device power = power_watts × cpu_frequency_scale", "scenarios": {}}
    try:
        singles = [variant.prepare(data[i:i + 1]) for i in range(min(len(data), 256))]
        run = _Run(variant, data, singles, factor, cpu_frequency_scale, s, rapl if rapl is not None else RaplReader())
        for x in singles[:8]:
            variant.run(x)
        out["scenarios"] = _run_scenarios(run, scenarios, loader)
        if "batch" in out["scenarios"]:
            out.update(out["scenarios"]["batch"]["device"])  # the reference's top-level keys: the device's figures
    finally:
        torch.set_num_threads(prev)
    return out


def _run_scenarios(run: _Run, scenarios: Sequence[str], loader: Iterable) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if any(x in scenarios for x in ("single_stream", "server")):
        stream, service = _single_stream(run)
        if "single_stream" in scenarios:
            res["single_stream"] = stream
        if "server" in scenarios:
            res["server"] = _server(run, service)
    if "offline" in scenarios:
        res["offline"] = _offline(run)
    if "batch" in scenarios:
        res["batch"] = _batch(run, next(iter(loader))[0])
    return res


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


@dataclass(frozen=True)
class DeploymentTarget:
    """A variant to run the scenarios on: a label (baseline / recommended), its point and hardware summary."""

    label: str
    point: ConfigPoint
    hardware: dict[str, Any]


def _settings(cfg: StudyConfig, cbf: float | None, threads: int) -> DeploymentSettings:
    d = cfg.deployment
    # the roofline clock model needs the layer analysis; without one (an ONNX model) the linear model runs,
    # and the result says so (latency_model)
    model = d.latency_model if cbf is not None else "linear"
    return DeploymentSettings(min_queries=d.min_queries, min_duration_s=d.min_duration_s,
                              latency_budget_ms=cfg.latency_budget_ms, server_target_qps=d.server_target_qps,
                              server_search_steps=d.server_search_steps, latency_model=model,
                              compute_bound_fraction=cbf, power_watts=cfg.power_watts, seed=cfg.seed,
                              threads=threads, offline_batch_size=d.offline_batch_size)


def _fewer_threads_run(sweep: Sweep, target: DeploymentTarget, host: dict[str, Any]) -> dict[str, Any]:
    """Measured (not modelled) slow-down: single-stream with round(threads × cpu_frequency_scale) threads."""
    cfg = sweep.cfg
    fewer = max(1, int(round(cfg.threads * cfg.cpu_frequency_scale)))
    if fewer >= cfg.threads:
        return {"skipped": f"threads={cfg.threads}: no fewer threads to run with on this host"}
    p = target.point
    try:
        variant = build_variant(p.backend, sweep.parent(p.pruning_level), p.precision,
                                sweep.build_context(p.pruning_level, threads=fewer, calibration=p.calibration))
    except VariantBuildError as exc:  # e.g. a runtime whose thread pool is fixed per process
        return {"skipped": f"{p.backend} with {fewer} threads: {exc}"}
    settings = DeploymentSettings(min_queries=256, min_duration_s=min(cfg.deployment.min_duration_s, 2.0),
                                  power_watts=cfg.power_watts, threads=fewer)
    ss = deployment_simulation(variant, sweep.data.val_loader, "cpu", 1.0, ["single_stream"],
                               settings)["scenarios"]["single_stream"]["host"]
    base = host.get("scenarios", {}).get("single_stream", {}).get("host", {})
    return {"threads": fewer, "host_threads": cfg.threads, "p50_ms": ss["p50_ms"], "p90_ms": ss["p90_ms"],
            "measured_slowdown_p90": ss["p90_ms"] / base["p90_ms"] if base.get("p90_ms") else None,
            "modelled_factor": host.get("device_latency_factor")}


def deployment_cache_key(cfg: StudyConfig, target: DeploymentTarget) -> str:
    """Store key of a target's simulation: everything that shapes its numbers."""
    cbf = target.hardware.get("compute_bound_fraction") or 0
    return "deployment:" + stable_hash({
        "label": target.label, "point": point_key(cfg, target.point), "deployment": cfg.deployment.model_dump(),
        "scale": cfg.cpu_frequency_scale, "budget": cfg.latency_budget_ms, "cbf": round(float(cbf), 6),
        "seed": cfg.seed})


def _simulate_target(sweep: Sweep, target: DeploymentTarget) -> dict[str, Any]:
    cfg, p = sweep.cfg, target.point
    variant = build_variant(p.backend, sweep.parent(p.pruning_level), p.precision,
                            sweep.build_context(p.pruning_level, calibration=p.calibration))
    res = deployment_simulation(variant, sweep.data.val_loader, "cpu", cfg.cpu_frequency_scale,
                                cfg.deployment.scenarios,
                                _settings(cfg, target.hardware.get("compute_bound_fraction"), cfg.threads))
    res["hardware"] = target.hardware
    res["measured_fewer_threads"] = _fewer_threads_run(sweep, target, res)
    return res


def simulate_deployment(sweep: Sweep, targets: Sequence[DeploymentTarget], store: StudyStore | None,
                        out: Path) -> tuple[dict[str, Any], list[str]]:
    """Stage: the scenarios for each target (reused from the store when the same study ran them),
    written to ``deployment.csv``.

    Returns:
        ({label: simulation result or {"error": …}}, warnings)
    """
    results: dict[str, Any] = {}
    warnings: list[str] = []
    for target in targets:
        if sweep.should_stop():  # a stop asked for: the targets not yet simulated are left out
            warnings.append(f"deployment simulation stopped before {target.label}")
            break
        key = deployment_cache_key(sweep.cfg, target)
        cached = store.get_meta(key) if store is not None else None
        if cached is not None:
            results[target.label] = cached
            continue
        try:
            results[target.label] = _simulate_target(sweep, target)
        except Exception as exc:  # noqa: BLE001 — a failed simulation is reported, the study outputs still land
            results[target.label] = {"error": f"{type(exc).__name__}: {exc}"}
            warnings.append(f"deployment simulation of {target.label} failed: {exc}")
            continue
        if store is not None:
            store.set_meta(key, results[target.label])  # a re-run of the same study reuses the simulation
    frame = deployment_rows({k: v for k, v in results.items() if "scenarios" in v})
    if len(frame):
        atomic.write_with(out / "deployment.csv", lambda t: frame.to_csv(t, index=False, encoding="utf-8"))
    return results, warnings
