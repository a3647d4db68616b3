"""Deployment scenarios run by MLPerf LoadGen, then scaled to a slower simulated CPU clock.

Scenarios (``edge_opt.deploy.loadgen`` drives them; every number comes from LoadGen's logs, kept under
``OUTPUT_DIR/deployment/<model>/<scenario>/``):

- ``single_stream``: one-sample queries back to back; LoadGen's p50/p90 (MLPerf's metric)/p95/p99/mean,
  QPS and early-stopping estimates, and its VALID/INVALID verdict with the reason.
- ``multi_stream``: queries of ``multi_stream_samples_per_query`` samples; per-query p99 (MLPerf's metric).
- ``server``: LoadGen's Poisson arrivals at ``server_target_qps`` (default: half the single-stream
  capacity) with a latency bound (``latency_budget_ms`` scaled to the host, else 5 × the single-stream
  p90); and the highest rate whose run meets the bound, by bisection, each step a LoadGen run.
- ``offline``: all samples at once, run in batches of ``offline_batch_size``; samples/s.
- ``batch``: the reference's batch latency/throughput at the loader's batch size and a stream of
  128 single items (``batch_latency_ms`` …), timed with ``torch.utils.benchmark``.
- accuracy: ``loadgen_accuracy`` runs LoadGen's AccuracyOnly mode on a variant and computes the
  accuracy from its accuracy log — or, for a study scored by another metric, that metric from the raw outputs
  the SUT answered with (``_artifact_accuracy``: on the exported artifact, next to the manifest's).

These are not official MLPerf runs: durations are short and LoadGen's early stopping judges them.

Slower CPU: the device runs at ``s = cpu_frequency_scale`` × the host clock.
``latency_model="linear"`` stretches all time by 1/s; ``"roofline"`` stretches only the
compute-bound share of the model's roofline time (from the layer analysis) and leaves the
memory-bound share. The device figures are LoadGen's host figures × that factor (QPS ÷ it),
labelled ``simulated``. Energy: RAPL when readable (package-wide), else ``power_watts × busy
time`` labelled ``proxy``; on the device, power is assumed to scale as ``power_watts × s``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer

from ..config import SCENARIO_NAMES, StudyConfig
from ..core import atomic, batch_len, batch_map, batch_slice
from ..measure import (
    ConfigPoint,
    ModelLike,
    RaplReader,
    Scoring,
    as_variant,
    loader_targets,
    measure_energy,
    torch_threads,
)
from ..study import StudyStore, Sweep, point_key, stable_hash
from ..variants import Variant, VariantBuildError, build_variant
from .loadgen import LoadGenRun, LoadGenSettings, run_loadgen
from .results import ArtifactAccuracy, DeploymentResult, SimulationError, TargetSimulation

__all__ = [
    "SCENARIOS",
    "DeploymentSettings",
    "DeploymentTarget",
    "deployment_cache_key",
    "deployment_rows",
    "deployment_simulation",
    "device_latency_factor",
    "loadgen_accuracy",
    "scale_layer_times",
    "simulate_deployment",
]

SCENARIOS = SCENARIO_NAMES


def device_latency_factor(
    cpu_frequency_scale: float, latency_model: str = "linear", compute_bound_fraction: float | None = None
) -> float:
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
    raise ValueError(
        f"The 'latency_model' parameter must be one of ['linear', 'roofline']. Got {latency_model!r} instead."
    )


def scale_layer_times(layer_df: pd.DataFrame, cpu_frequency_scale: float) -> pd.DataFrame:
    """Per-layer device time under the roofline model: compute-bound layers stretch by 1/s, memory-bound ones do not.

    ``layer_df`` needs ``roofline_time_ms`` and ``bound_regime`` (see ``hardware.add_layer_roofline``).
    """
    df = layer_df.copy()
    stretch = np.where(df["bound_regime"] == "compute-bound", 1.0 / cpu_frequency_scale, 1.0)
    df["device_time_ms"] = df["roofline_time_ms"] * stretch
    return df


def _samples(loader: Iterable) -> Any:
    """Every input of the loader, concatenated: one tensor, or a tuple of them (one per model input)."""
    xs = [batch[0] for batch in loader]
    if not xs:
        raise ValueError("No batches in the loader: the deployment simulation needs evaluation data.")
    if isinstance(xs[0], (tuple, list)):
        return tuple(torch.cat([x[k] for x in xs]) for k in range(len(xs[0])))
    return torch.cat(xs)


@dataclass(frozen=True)
class DeploymentSettings:
    """How the scenarios run (see ``deployment_simulation``)."""

    min_queries: int = 64
    min_duration_s: float = 1.0
    latency_budget_ms: float | None = None
    server_target_qps: float | None = None
    server_search_steps: int = 5
    latency_model: str = "linear"
    compute_bound_fraction: float | None = None
    power_watts: float = 15.0
    seed: int = 0
    threads: int = 1
    offline_batch_size: int = 256
    stream_items: int = 128
    multi_stream_samples_per_query: int = 8
    performance_sample_count: int = 1024
    log_dir: Path | None = None  # where LoadGen's logs go (None: a temporary folder)
    # time budget (s) of one model's scenarios: a scenario whose planned length (from the model's measured latency)
    # does not fit in what is left is skipped with its reason, and the server's rate search stops early; None: none
    max_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_s is not None and not (math.isfinite(self.max_s) and self.max_s > 0):
            raise ValueError(f"The 'max_s' parameter must be None or a positive number. Got {self.max_s!r} instead.")


@dataclass(frozen=True, eq=False)
class _Run:
    """One simulation's fixed inputs."""

    variant: Variant
    data: Any  # every sample: one tensor, or a tuple of them (one per model input)
    singles: list[Any]
    factor: float
    scale: float
    s: DeploymentSettings
    reader: RaplReader
    log_dir: Path
    deadline: float | None  # time.perf_counter() at which the model's budget (settings.max_s) is spent; None: never
    expected_ms: float  # a first estimate of one query's latency (LoadGen's expected latency / QPS hints)

    def left_s(self) -> float:
        """Seconds left in the model's budget (infinite without one)."""
        return math.inf if self.deadline is None else self.deadline - time.perf_counter()


_KEYS = {
    "p50_ms": "50.00 percentile latency (ns)",
    "p90_ms": "90.00 percentile latency (ns)",
    "p95_ms": "95.00 percentile latency (ns)",
    "p99_ms": "99.00 percentile latency (ns)",
    "mean_ms": "Mean latency (ns)",
    "early_stopping_p90_ms": "Early stopping 90.0th percentile estimate",
    "early_stopping_p99_ms": "Early stopping 99.0th percentile estimate",
}


def _lg_settings(run: _Run, **over: Any) -> LoadGenSettings:
    s = run.s
    base = {
        "min_query_count": s.min_queries,
        "min_duration_ms": int(s.min_duration_s * 1e3),
        "seed": s.seed,
        "multi_stream_samples_per_query": s.multi_stream_samples_per_query,
        "offline_batch_size": s.offline_batch_size,
        "performance_sample_count": s.performance_sample_count,
        "expected_latency_ms": 0.8 * run.expected_ms,
    }
    return LoadGenSettings(**{**base, **over})


def _loadgen(run: _Run, scenario: str, settings: LoadGenSettings, sub: str = "") -> tuple[LoadGenRun, Any]:
    """One LoadGen run with its energy (RAPL or proxy); logs in ``run.log_dir/<scenario>[/<sub>]``."""
    folder = run.log_dir / scenario / sub if sub else run.log_dir / scenario
    held: dict[str, LoadGenRun] = {}

    def test() -> int:
        held["run"] = run_loadgen(run.variant, run.data, scenario, settings, folder)
        return held["run"].samples_run

    _note_logs(folder)
    energy, _, _ = measure_energy(test, power_watts=run.s.power_watts, reader=run.reader)  # joules per sample
    return held["run"], energy


LOADGEN_LOGS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json", "mlperf_log_trace.json")


def _note_logs(folder: Path) -> None:
    """LoadGen writes its own files: they join the study's outputs, noted before they are written (a kill
    mid-run leaves nothing the output journal does not list)."""
    for name in LOADGEN_LOGS:
        atomic.note_written(folder / name)


def _figures(r: LoadGenRun, energy: Any, run: _Run, rate_key: str) -> dict[str, Any]:
    """Host figures from the LoadGen run's summary, and the simulated device's (× the clock factor)."""
    host: dict[str, Any] = {k: r.ns_to_ms(v) for k, v in _KEYS.items()}
    rate = r.number(rate_key)
    host.update(
        {
            "qps": rate,
            "loadgen_verdict": r.verdict,
            "loadgen_reason": r.reason,
            "loadgen_log": str(r.log_dir),
            "loadgen_metric": rate_key,
        }
    )
    proxy = energy.source == "proxy"
    per_query = energy.joules  # per sample processed in the LoadGen run
    host.update(energy_per_query_j=per_query, energy_source=energy.source)
    device = {k: host[k] * run.factor for k in _KEYS}
    device.update(
        {
            "qps": rate / run.factor,
            "loadgen_verdict": r.verdict,
            "simulated": True,
            "energy_per_query_j": per_query * run.scale * run.factor if proxy else math.nan,
            "energy_source": energy.source if proxy else "not modelled",
        }
    )
    return {"host": host, "device": device}


def _single_stream(run: _Run) -> dict[str, Any]:
    r, energy = _loadgen(run, "single_stream", _lg_settings(run))
    return _figures(r, energy, run, "QPS w/ loadgen overhead")


def _multi_stream(run: _Run) -> dict[str, Any]:
    k = run.s.multi_stream_samples_per_query
    batch = run.variant.prepare(batch_slice(run.data, 0, k))
    times = _bounded_calls(run.variant.run, [batch], most=8, least=2, within_s=0.1)
    per_sample_ms = math.fsum(times) * 1e3 / (len(times) * k)  # LoadGen scales the expected latency by k
    r, energy = _loadgen(run, "multi_stream", _lg_settings(run, expected_latency_ms=0.8 * per_sample_ms))
    out = _figures(r, energy, run, "")
    for part, f in (("host", 1.0), ("device", run.factor)):
        out[part]["qps"] = 1e3 / out[part]["mean_ms"] if out[part]["mean_ms"] > 0 else math.nan  # queries/s
        out[part].update(samples_per_query=k, p99_per_query_ms=r.ns_to_ms("99.0th percentile latency (ns)") * f)
    return out


def _server_bound(run: _Run, single: dict[str, Any] | None) -> tuple[float, str]:
    """The server's latency bound on the device: the latency budget, else 5 × the device single-stream p90."""
    if run.s.latency_budget_ms is not None:
        return run.s.latency_budget_ms, "latency_budget_ms"
    p90 = single["device"]["p90_ms"] if single else run.expected_ms * run.factor
    return 5 * p90, "5 × device single-stream p90 (no latency_budget_ms configured)"


def _server(run: _Run, single: dict[str, Any] | None) -> dict[str, Any]:
    bound, source = _server_bound(run, single)
    host_bound = bound / run.factor  # the device at rate q / factor behaves as the host at rate q, times the factor
    capacity = 1e3 / (single["host"]["mean_ms"] if single else run.expected_ms)
    target = run.s.server_target_qps or 0.5 * capacity
    cap = int(2 * capacity * run.s.min_duration_s) + run.s.min_queries  # twice what the host could serve
    r, energy = _loadgen(
        run,
        "server",
        _lg_settings(run, server_target_qps=target, server_target_latency_ms=host_bound, max_server_queries=cap),
    )
    out = _figures(r, energy, run, "Completed samples per second")
    search = _max_valid_rate(run, capacity, host_bound)
    for part, f in (("host", 1.0), ("device", run.factor)):
        out[part].update(
            target_qps=target / f,
            capacity_qps=capacity / f,
            latency_bound_ms=host_bound * f,
            search_max_rate_qps=search["max_rate_qps"] / f,
            search_steps=search["steps"],
        )
    out["latency_bound_ms"], out["latency_bound_source"] = bound, source
    return out


def _max_valid_rate(run: _Run, capacity: float, host_bound_ms: float) -> dict[str, Any]:
    """Bisection over the target QPS for the highest rate whose LoadGen server run meets the latency bound; a step
    that would not fit in the model's budget (``min_queries`` at its rate) is not run (``steps``: those run; the
    rate NaN when none was)."""
    lo, hi = 0.0, capacity
    steps = 0
    short = max(200, int(run.s.min_duration_s * 1e3 / 2))
    for i in range(run.s.server_search_steps):
        mid = (lo + hi) / 2 if lo > 0 else hi / 2
        if max(short / 1e3, run.s.min_queries / mid) > run.left_s():
            break
        steps += 1
        r, _ = _loadgen(
            run,
            "server",
            _lg_settings(
                run,
                server_target_qps=mid,
                server_target_latency_ms=host_bound_ms,
                min_duration_ms=short,
                max_server_queries=int(4 * mid * short / 1e3) + run.s.min_queries,
            ),
            sub=f"search_{i}",
        )
        if r.summary.get("Performance constraints satisfied", "Yes").lower() == "yes":
            lo = mid
        else:
            hi = mid
    return {"max_rate_qps": lo if steps else math.nan, "steps": steps}


def _offline(run: _Run, single: dict[str, Any] | None, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """LoadGen's offline run; its expected rate (how many samples its one query holds) from the batch scenario's
    measured throughput when it ran (a quarter above it: a rate set too low ends the run short, and it is run again),
    else 4 × the single-stream rate."""
    single_qps = single["host"]["qps"] if single else 1e3 / run.expected_ms
    expected = max(1.25 * batch["host"]["batch_throughput_sps"], single_qps) if batch else 4 * single_qps
    r, energy = _loadgen(run, "offline", _lg_settings(run, offline_expected_qps=expected))
    if r.summary.get("Min duration satisfied", "Yes").lower() == "no" and math.isfinite(r.number("Samples per second")):
        r, energy = _loadgen(
            run, "offline", _lg_settings(run, offline_expected_qps=1.2 * r.number("Samples per second"))
        )
    out = _figures(r, energy, run, "Samples per second")
    for part in ("host", "device"):
        out[part].update(throughput_sps=out[part]["qps"], batch_size=run.s.offline_batch_size)
    return out


def _batch(run: _Run, first: Any) -> dict[str, Any]:
    """The batch latency (``blocked_autorange`` for 0.2 s, or one timed call when a first call lasted that long) and
    a stream of ``stream_items`` single items (fewer, 16 at least, once ``_LOOP_S`` passed)."""
    fn, k = run.variant.run, run.factor
    xb = run.variant.prepare(first)
    if _bounded_calls(fn, [xb], most=1, least=1)[0] >= _BATCH_MIN_RUN_S:
        batch_ms = _bounded_calls(fn, [xb], most=1, least=1)[0] * 1e3
    else:
        timer = Timer("run(x)", globals={"run": fn, "x": xb}, num_threads=run.s.threads)
        batch_ms = timer.blocked_autorange(min_run_time=_BATCH_MIN_RUN_S).median * 1e3
    stream = _bounded_calls(fn, run.singles, most=run.s.stream_items, least=min(16, run.s.stream_items))
    stream_ms = math.fsum(stream) * 1e3 / len(stream)
    figures = {}
    for where, f in (("host", 1.0), ("device", k)):
        figures[where] = {
            "batch_size": batch_len(first),
            "batch_latency_ms": batch_ms * f,
            "batch_throughput_sps": batch_len(first) / (batch_ms * f / 1e3),
            "stream_avg_latency_ms": stream_ms * f,
            "stream_throughput_sps": 1e3 / (stream_ms * f),
        }
    return figures


def _header(variant: Variant, s: DeploymentSettings, cpu_frequency_scale: float, factor: float) -> dict[str, Any]:
    """The keys of a deployment simulation's result that describe the run (``scenarios`` still empty)."""
    return {
        "backend": variant.backend,
        "precision": variant.precision,
        "kernel_precision": variant.kernel_precision,
        "cpu_frequency_scale": cpu_frequency_scale,
        "latency_model": s.latency_model,
        "device_latency_factor": factor,
        "compute_bound_fraction": s.compute_bound_fraction,
        "threads": s.threads,
        "device_power_w": s.power_watts * cpu_frequency_scale,
        "driver": "mlperf_loadgen",
        "power_assumption": "device power = power_watts × cpu_frequency_scale",
        "scenarios": {},
    }


def deployment_simulation(
    model_or_variant: ModelLike,
    loader: Iterable,
    device: Any = "cpu",
    cpu_frequency_scale: float = 1.0,
    scenarios: Sequence[str] = SCENARIOS,
    settings: DeploymentSettings | None = None,
    *,
    rapl: RaplReader | None = None,
    **setting_kwargs: Any,
) -> dict[str, Any]:
    """Run the deployment scenarios for a model or variant with MLPerf LoadGen on this host, and scale them to
    the slower device.

    Args:
        model_or_variant: torch module (run as it is: fp32, ``.half()`` or quantized) or a backend ``Variant``.
        loader: evaluation data (LoadGen's Query Sample Library is built from its samples).
        device: device of a plain torch module (CPU measurements).
        cpu_frequency_scale: s in (0, 1]: device clock / host clock.
        scenarios: any of single_stream, multi_stream, server, offline, batch.
        settings: ``DeploymentSettings``; or give its fields as keywords: min_queries / min_duration_s
            (LoadGen's min_query_count / min_duration of each run), latency_budget_ms (server latency bound,
            default 5 × single-stream p90 on the device, labelled), server_target_qps (default half the
            single-stream capacity), server_search_steps, multi_stream_samples_per_query,
            performance_sample_count, latency_model ("linear" or "roofline", which needs
            compute_bound_fraction), power_watts, seed, threads, offline_batch_size, stream_items, log_dir.
    Returns:
        dict with ``scenarios`` (per scenario: ``host`` and simulated ``device`` figures, LoadGen's verdict
        and log folder), the reference's batch keys at top level, the latency model and factor, energy source.
    Raises:
        ValueError: empty loader ("No batches"), unknown scenario, bad scale.
    """
    s = settings if settings is not None else DeploymentSettings(**setting_kwargs)
    unknown = [x for x in scenarios if x not in SCENARIOS]
    if unknown:
        raise ValueError(f"The 'scenarios' parameter must contain names from {list(SCENARIOS)}. Got {unknown} instead.")
    data = _samples(loader)
    factor = device_latency_factor(cpu_frequency_scale, s.latency_model, s.compute_bound_fraction)
    variant = as_variant(model_or_variant, None, [(batch_slice(data, 0, 2), None)], device)
    out = _header(variant, s, cpu_frequency_scale, factor)
    with torch_threads(s.threads):
        with contextlib.ExitStack() as stack:
            log_dir = s.log_dir if s.log_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            singles = [variant.prepare(batch_slice(data, i, i + 1)) for i in range(min(batch_len(data), 256))]
            run = _Run(
                variant,
                data,
                singles,
                factor,
                cpu_frequency_scale,
                s,
                rapl if rapl is not None else RaplReader(),
                log_dir,
                None if s.max_s is None else time.perf_counter() + s.max_s,  # the warm-up below counts
                _warm_latency_ms(variant, singles),
            )
            out.update(_run_scenarios(run, scenarios, loader))
        if "batch" in out["scenarios"]:
            out.update(out["scenarios"]["batch"]["device"])  # the reference's top-level keys: the device's figures
    return out


_LOOP_S = 0.25  # the fixed-count loops (warm-up, the batch scenario's stream) stop after this, past their least count
_BATCH_MIN_RUN_S = 0.2  # the batch scenario's timed run


def _bounded_calls(fn: Any, inputs: Sequence[Any], most: int, least: int, within_s: float = _LOOP_S) -> list[float]:
    """The seconds of each call of ``fn`` on ``inputs`` in turn: ``most`` calls, fewer once ``least`` were made and
    ``within_s`` passed (a model of 17 ms a query made 64 warm-up calls, 1.1 s, where 15 tell the same)."""
    times: list[float] = []
    start = time.perf_counter()
    for i in range(most):
        t0 = time.perf_counter()
        fn(inputs[i % len(inputs)])
        times.append(time.perf_counter() - t0)
        if i + 1 >= least and time.perf_counter() - start >= within_s:
            break
    return times


def _warm_latency_ms(variant: Variant, singles: list[Any]) -> float:
    """Warm the variant up and give the median latency of one single-sample query after the first quarter of the
    calls (64, fewer once 8 ran for ``_LOOP_S``; LoadGen's hints start from it: LoadGen pre-generates its queries
    from the expected latency, so an estimate too high ends a run short)."""
    times = _bounded_calls(variant.run, singles, most=64, least=8)
    return max(float(np.median(times[len(times) // 4 :])) * 1e3, 1e-3)


def _planned_s(run: _Run, scenario: str, single: dict[str, Any] | None, batch_size: int) -> float:
    """About how long a scenario's LoadGen runs last, from the model's measured latency: ``min_queries`` queries at
    their rate, ``min_duration_s`` at least (the server's rate search is checked step by step)."""
    s, t = run.s, (single["host"]["mean_ms"] if single else run.expected_ms) / 1e3
    q, d = s.min_queries, s.min_duration_s
    server_qps = s.server_target_qps or 0.5 / t
    return {
        "single_stream": max(d, q * t),
        "multi_stream": max(d, q * s.multi_stream_samples_per_query * t),
        "server": max(d, q / server_qps),
        "offline": 1.1 * max(d, q * t),
        "batch": 3 * batch_size * t + _BATCH_MIN_RUN_S + min(s.stream_items * t, _LOOP_S),
    }[scenario]


def _run_scenarios(run: _Run, scenarios: Sequence[str], loader: Iterable) -> dict[str, Any]:
    """``scenarios``: the scenarios' figures (in the order of ``SCENARIOS``) and, when a scenario did not fit the
    budget, ``skipped_scenarios``: each with its reason. They run single-stream first (the others start from its
    figures), then batch, offline, multi-stream, server; one whose planned length does not fit in what is left of the
    budget is skipped."""
    first = next(iter(loader))[0]
    done: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def fits(name: str) -> bool:
        planned, left = _planned_s(run, name, done.get("single_stream"), batch_len(first)), run.left_s()
        if planned <= left:
            return True
        skipped[name] = (
            f"planned {planned:.1f} s (at {run.expected_ms:.3g} ms a query) but {max(left, 0.0):.1f} s of the "
            "model's deployment budget (deployment.max_s) was left"
        )
        return False

    if any(x in scenarios for x in ("single_stream", "server", "offline")) and fits("single_stream"):
        done["single_stream"] = _single_stream(run)
    single = done.get("single_stream")
    steps = {
        "batch": lambda: _batch(run, first),
        "offline": lambda: _offline(run, single, done.get("batch")),
        "multi_stream": lambda: _multi_stream(run),
        "server": lambda: _server(run, single),
    }
    for name, step in steps.items():
        if name in scenarios and fits(name):
            done[name] = step()
    if "single_stream" not in scenarios:  # run for the others' figures only
        done.pop("single_stream", None)
        skipped.pop("single_stream", None)
    out: dict[str, Any] = {"scenarios": {name: done[name] for name in SCENARIOS if name in done}}
    return {**out, "skipped_scenarios": skipped} if skipped else out


def loadgen_accuracy(
    variant: Variant, loader: Iterable, labels: Any, log_dir: Path, scoring: Scoring | None = None
) -> LoadGenRun:
    """LoadGen's AccuracyOnly run of ``variant`` over every sample; its accuracy (top-1, or with ``scoring`` the
    study's metric, from the raw outputs the SUT answered with) is read from LoadGen's accuracy log. ``labels``:
    the class ids, or with ``scoring`` the targets its metric reads (None for a label-free one)."""
    data = _samples(loader)
    _note_logs(log_dir)
    return run_loadgen(
        variant,
        data,
        "single_stream",
        LoadGenSettings(min_query_count=1, min_duration_ms=0, performance_sample_count=batch_len(data)),
        log_dir,
        mode="accuracy",
        labels=labels if scoring is not None else np.asarray(labels),
        scoring=scoring,
    )


def deployment_rows(result: DeploymentResult) -> pd.DataFrame:
    """``deployment.csv``'s table: one row per simulated target × scenario × (host|device)."""
    return pd.DataFrame([row.to_dict() for row in result.rows()])


@dataclass(frozen=True)
class DeploymentTarget:
    """A variant to run the scenarios on: a label (baseline / recommended), its point and hardware summary."""

    label: str
    point: ConfigPoint
    hardware: dict[str, Any]


def offline_batch(cfg: StudyConfig) -> int:
    """The offline scenario's batch: ``deployment.offline_batch_size`` when set, else its default (256) at most the
    study's ``batch_size`` — the largest batch the study has already run every variant at, so the deployment stage
    holds no more activation memory than the sweep did (256 MobileNetV2 images at 224² took ONNX Runtime ~5 GB)."""
    d = cfg.deployment
    return (
        d.offline_batch_size
        if "offline_batch_size" in d.model_fields_set
        else min(d.offline_batch_size, cfg.batch_size)
    )


def _settings(cfg: StudyConfig, cbf: float | None, threads: int, log_dir: Path | None = None) -> DeploymentSettings:
    d = cfg.deployment
    # the roofline clock model needs the layer analysis; without one (an ONNX model) the linear model runs,
    # and the result says so (latency_model)
    model = d.latency_model if cbf is not None else "linear"
    return DeploymentSettings(
        min_queries=d.min_queries,
        min_duration_s=d.min_duration_s,
        latency_budget_ms=cfg.latency_budget_ms,
        server_target_qps=d.server_target_qps,
        server_search_steps=d.server_search_steps,
        latency_model=model,
        compute_bound_fraction=cbf,
        power_watts=cfg.power_watts,
        seed=cfg.seed,
        threads=threads,
        offline_batch_size=offline_batch(cfg),
        multi_stream_samples_per_query=d.multi_stream_samples_per_query,
        performance_sample_count=d.performance_sample_count,
        log_dir=log_dir,
        max_s=d.max_s,
    )


def _fewer_threads_run(sweep: Sweep, target: DeploymentTarget, host: TargetSimulation) -> dict[str, Any]:
    """Measured (not modelled) slow-down: single-stream with round(threads × cpu_frequency_scale) threads."""
    cfg = sweep.cfg
    fewer = max(1, int(round(cfg.threads * cfg.cpu_frequency_scale)))
    if fewer >= cfg.threads:
        return {"skipped": f"threads={cfg.threads}: no fewer threads to run with on this host"}
    p = target.point
    try:
        variant = build_variant(
            p.backend,
            sweep.parent(p.pruning_level),
            p.precision,
            sweep.build_context(p.pruning_level, threads=fewer, calibration=p.calibration),
        )
    except VariantBuildError as exc:  # e.g. a runtime whose thread pool is fixed per process
        return {"skipped": f"{p.backend} with {fewer} threads: {exc}"}
    settings = DeploymentSettings(
        min_queries=256,
        min_duration_s=min(cfg.deployment.min_duration_s, 2.0),
        power_watts=cfg.power_watts,
        threads=fewer,
    )
    ss = deployment_simulation(variant, sweep.data.val_loader, "cpu", 1.0, ["single_stream"], settings)["scenarios"][
        "single_stream"
    ]["host"]
    single = host.scenario("single_stream")
    base = single.host if single is not None else {}
    return {
        "threads": fewer,
        "host_threads": cfg.threads,
        "p50_ms": ss["p50_ms"],
        "p90_ms": ss["p90_ms"],
        "measured_slowdown_p90": ss["p90_ms"] / base["p90_ms"] if base.get("p90_ms") else None,
        "modelled_factor": host.device_latency_factor,
    }


def deployment_cache_key(cfg: StudyConfig, target: DeploymentTarget) -> str:
    """Store key of a target's simulation: everything that shapes its numbers."""
    cbf = target.hardware.get("compute_bound_fraction") or 0
    return "deployment:" + stable_hash(
        {
            "label": target.label,
            "point": point_key(cfg, target.point),
            "deployment": cfg.deployment.model_dump(),
            "scale": cfg.cpu_frequency_scale,
            "budget": cfg.latency_budget_ms,
            "cbf": round(float(cbf), 6),
            "seed": cfg.seed,
        }
    )


def _simulate_target(sweep: Sweep, target: DeploymentTarget, out: Path) -> TargetSimulation:
    cfg, p = sweep.cfg, target.point
    variant = build_variant(
        p.backend,
        sweep.parent(p.pruning_level),
        p.precision,
        sweep.build_context(p.pruning_level, calibration=p.calibration),
    )
    settings = _settings(
        cfg, target.hardware.get("compute_bound_fraction"), cfg.threads, out / DEPLOYMENT_DIR / target.label
    )
    doc = deployment_simulation(
        variant, sweep.data.val_loader, "cpu", cfg.cpu_frequency_scale, cfg.deployment.scenarios, settings
    )
    sim = TargetSimulation.from_dict(target.label, {**doc, "hardware": target.hardware})
    return replace(sim, measured_fewer_threads=_fewer_threads_run(sweep, target, sim))


DEPLOYMENT_DIR = "deployment"  # LoadGen's logs: deployment/<model>/<scenario>/


def _logs_present(result: dict[str, Any]) -> bool:
    """A stored simulation is reused only with its LoadGen logs still in the folder."""
    logs = [parts.get("host", {}).get("loadgen_log") for parts in result.get("scenarios", {}).values()]
    return all(Path(log, "mlperf_log_summary.txt").is_file() for log in logs if log)


def simulate_deployment(
    sweep: Sweep, targets: Sequence[DeploymentTarget], store: StudyStore | None, out: Path
) -> DeploymentResult:
    """Stage: the LoadGen scenarios for each target (reused from the store when the same study ran them and
    their logs are still there), written to ``deployment.csv``; then LoadGen's accuracy run on the exported
    artifact (``out/model``), when there is one.

    Returns:
        The ``DeploymentResult``: per target its ``TargetSimulation`` (or ``SimulationError``), the artifact's
        ``ArtifactAccuracy`` (None without one) and the warnings.
    """
    results: list[TargetSimulation | SimulationError] = []
    warnings: list[str] = []
    for target in targets:
        if sweep.should_stop():  # a stop asked for: the targets not yet simulated are left out
            warnings.append(f"deployment simulation stopped before {target.label}")
            break
        key = deployment_cache_key(sweep.cfg, target)
        cached = store.get_meta(key) if store is not None else None
        if cached is not None and _logs_present(cached):
            results.append(TargetSimulation.from_dict(target.label, cached))
            continue
        try:
            sim = _simulate_target(sweep, target, out)
        except Exception as exc:  # noqa: BLE001 — a failed simulation is reported, the study outputs still land
            results.append(SimulationError(target.label, f"{type(exc).__name__}: {exc}"))
            warnings.append(f"deployment simulation of {target.label} failed: {exc}")
            continue
        results.append(sim)
        if store is not None:
            store.set_meta(key, sim.to_dict())  # a re-run of the same study reuses the simulation
    warnings += [
        f"deployment of {r.label}: {name} skipped: {why}"
        for r in results
        if isinstance(r, TargetSimulation)
        for name, why in r.skipped_scenarios.items()
    ]
    frame = deployment_rows(DeploymentResult(tuple(results)))
    if len(frame):
        atomic.write_with(out / "deployment.csv", lambda t: frame.to_csv(t, index=False, encoding="utf-8"))
    accuracy, warning = _artifact_accuracy(out, sweep)
    warnings += [warning] if warning else []
    return DeploymentResult(tuple(results), accuracy, tuple(warnings))


def _artifact_accuracy(out: Path, sweep: Sweep) -> tuple[ArtifactAccuracy | None, str | None]:
    """LoadGen's AccuracyOnly run on the exported artifact (its files, its runtime), vs the manifest's accuracy — and
    its metric, for a study scored by another metric than top-1 (vs the manifest's ``metric.value``)."""
    from ..core import artifact_runner, load_manifest

    model = out / "model"
    if sweep.should_stop() or not (model / "manifest.json").is_file():
        return None, None
    manifest: Any = None
    scoring = sweep.scoring  # None for top1
    try:
        manifest = load_manifest(model)
        runner = artifact_runner(model, manifest, all_outputs=scoring is not None)
        variant = Variant(
            backend=str(manifest.get("runtime", "onnxruntime")),
            precision=str(manifest["precision"]),
            kernel_precision=str(manifest.get("kernel_precision")),
            parameter_bytes=0,
            metadata={},
            prepare=lambda x: batch_map(x, _runtime_array),
            run=runner,
            to_logits=_float_outputs,
        )
        labels = loader_targets(sweep.data.val_loader) if scoring is not None else sweep.data.val_labels
        run = loadgen_accuracy(variant, sweep.data.val_loader, labels, out / DEPLOYMENT_DIR / "accuracy", scoring)
    except Exception as exc:  # noqa: BLE001 — a runtime's own error (ORT's Fail …) is a warning, never a traceback
        name = f"{model / str(manifest.get('model_file'))}" if isinstance(manifest, dict) else str(model)
        return None, f"LoadGen accuracy run on the artifact {name} failed: {type(exc).__name__}: {exc}"
    recorded = manifest.get("metric") if isinstance(manifest.get("metric"), dict) else {}
    return ArtifactAccuracy(
        accuracy=run.accuracy,
        manifest_accuracy=manifest.get("artifact_accuracy"),
        runtime=str(manifest.get("runtime", "onnxruntime")),
        samples=int(sweep.data.n_val),
        loadgen_log=str(run.log_dir),
        metric=run.metric,
        metric_name=scoring.metric.display_name if scoring is not None else None,
        manifest_metric=recorded.get("value") if scoring is not None else None,
    ), None


def _runtime_array(x: torch.Tensor) -> np.ndarray:
    """One model input as an artifact's runtime takes it: float32 for floating inputs, integers as they are."""
    return np.ascontiguousarray(x.numpy() if not torch.is_floating_point(x) else x.float().numpy())


def _float_outputs(out: Any) -> Any:
    """A runner's output(s) as float32: one array, or a tuple of them for several outputs."""
    if isinstance(out, (tuple, list)):
        arrays = tuple(np.asarray(o, dtype=np.float32) for o in out)
        return arrays[0] if len(arrays) == 1 else arrays
    return np.asarray(out, dtype=np.float32)
