"""Stage targets: measure the study's variants on the devices named in ``measure_on`` (each running
``edge-opt agent``), and compare the simulated device latency with what the device measured.

Each finished host point whose backend has an artifact a device runs (ONNX Runtime, OpenVINO, ExecuTorch)
is sent to every target: its files once (content-addressed), then a measurement with the study's rules and
the validation arrays for the accuracy there. A study scored by another metric than top1 asks the agent (protocol 2)
for the model's raw outputs on the validation inputs instead — bounded by the agent's ``MAX_OUTPUT_BYTES`` (64 MiB;
a point over it is skipped on that target, saying so) — and computes the metric here, as the host rows are scored
(the postprocess, the metric, the fp32 reference for a label-free one), so the target row has its ``metric`` beside
the accuracy. A target's result is its own row (``measured_on`` = the target,
key ``<point key>@<target>``), stored so a resume re-measures only what failed. An unreachable, hanging or
refusing target turns its points into error rows saying why (``connection refused``, ``timeout after N s``,
``401 unauthorized``); after two failures in a row the target's remaining points are not tried.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import StudyConfig, TargetConfig
from ..core import STATIC_BATCH_RUNTIMES, atomic
from ..device import AgentClient, AgentError, OutputsRefused, VendorMeasurement
from ..measure import LatencySamples, MeasurementRecord, Scoring, VariantResult, loader_targets, proxy_energy
from ..study import StudyStore, Sweep, VendorRow
from .artifact import artifact_files

__all__ = [
    "AGENT_BACKENDS",
    "TARGET_DIR",
    "TargetRun",
    "measure_on_targets",
    "simulation_gap",
    "target_key",
    "vendor_row",
]

TARGET_DIR = "targets"
AGENT_BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch", "litert": "litert"}
_FAILURES_BEFORE_GIVING_UP = 2


def target_key(host_key: str, target: str) -> str:
    """Store key of a point's measurement on a target."""
    return f"{host_key}@{target}"


@dataclass(frozen=True)
class TargetRun:
    """One target's rows and what the agent said about itself."""

    name: str
    results: tuple[VariantResult, ...]
    fingerprint: dict[str, Any]
    measured: int  # points measured in this run (the rest were stored, skipped or failed)


@dataclass(frozen=True)
class _Validation:
    """What the agents are sent and how their answers are scored: the validation inputs (and, for top1, the labels
    the agent computes its accuracy on), or why no point can be sent (``skip``). ``scoring``: the study's metric
    when it is not top1, with the host's ``targets`` it reads."""

    paths: tuple[Path, Path | None] | None
    scoring: Scoring | None = None
    targets: np.ndarray | None = None
    skip: str | None = None


def _validation_arrays(sweep: Sweep, out: Path) -> _Validation:
    """The normalised validation inputs (and labels for top1) the agents run (written once)."""
    folder = out / TARGET_DIR
    batches = list(sweep.data.val_loader)
    first = batches[0][0] if batches else None
    if isinstance(first, tuple | list):
        return _Validation(None, skip=f"an agent feeds a model one float32 input; this model takes {len(first)}")
    if first is not None and not np.issubdtype(np.asarray(first).dtype, np.floating):
        return _Validation(
            None, skip=f"an agent feeds a model float32 inputs; this model takes {np.asarray(first).dtype}"
        )
    x_path = folder / "validation_inputs.npy"
    xs = [np.asarray(b[0], dtype=np.float32) for b in batches]
    atomic.write_with(x_path, lambda t: np.save(t, np.concatenate(xs).astype(np.float32)))
    scoring = sweep.scoring
    if scoring is not None:  # the agent returns the outputs; the metric is computed here
        return _Validation((x_path, None), scoring, loader_targets(sweep.data.val_loader))
    y_path = folder / "validation_labels.npy"
    ys = [np.asarray(b[1]) for b in batches]
    atomic.write_with(y_path, lambda t: np.save(t, np.concatenate(ys).astype(np.int64)))
    return _Validation((x_path, y_path))


def _top1_hits(first: np.ndarray, targets: np.ndarray | None) -> tuple[bool, ...]:
    """Per-sample ``argmax == class id`` when the first output is (N, C) class scores and the targets class ids —
    the rule of the host rows' ``accuracy`` (kept private to ``measure``, hence restated here); empty (the accuracy
    is NaN) otherwise."""
    if targets is None or first.ndim != 2 or targets.shape != (first.shape[0],):
        return ()
    if not np.issubdtype(targets.dtype, np.integer):
        return ()
    return tuple(bool(c) for c in (first.argmax(1) == targets))


def _scored(
    rec: MeasurementRecord, outputs: list[np.ndarray], scoring: Scoring, targets: np.ndarray | None
) -> MeasurementRecord:
    """``rec`` with the study's metric computed here from the outputs the agent returned."""
    return replace(
        rec,
        correct=_top1_hits(outputs[0], targets),
        logits_finite=all(bool(np.isfinite(o).all()) for o in outputs if np.issubdtype(o.dtype, np.floating)),
        metric=scoring.score(outputs, targets),
        metric_name=scoring.metric.display_name,
    )


def _settings(cfg: StudyConfig, protocol: int) -> dict[str, Any]:
    """The agent's timing settings from the study's; ``benchmark_max_s`` goes to agents of protocol 3 and later
    (an earlier agent refuses a setting it does not know, and is bounded by its own request limit only)."""
    budget = {"max_s": cfg.benchmark_max_s} if cfg.benchmark_max_s is not None and protocol >= 3 else {}
    return {
        "warmup": cfg.benchmark_warmup,
        "trials": cfg.benchmark_trials,
        "repeats": max(cfg.benchmark_repeats, 2),
        "min_sample_ms": cfg.benchmark_min_sample_ms,
        "target_rel_ci": cfg.benchmark_target_rel_ci,
        "interrupted_factor": cfg.benchmark_interrupted_factor,
        **budget,
    }


def _agent_record(
    cfg: StudyConfig, host: VariantResult, target: TargetConfig, batch: int, ans: dict[str, Any]
) -> MeasurementRecord:
    """The measurement record of the agent's answer ``ans``: its latency samples, per-sample hits and a proxy
    energy, with the host record's kernel precision and parameter bytes."""
    p, rec = host.point, host.measurement
    assert rec is not None
    lat = LatencySamples(
        batch,
        tuple(float(v) for v in ans["samples_ms"]),
        int(ans["runs_per_sample"]),
        int(ans.get("rounds", 1)),
        tuple(float(v) for v in ans.get("interrupted_ms") or ()),
        budget_hit=bool(ans.get("budget_hit", False)),  # protocol 3 (an earlier agent has no time budget)
        spent_s=float(ans["latency_measure_s"]) if ans.get("latency_measure_s") is not None else None,
    )
    return MeasurementRecord(
        backend=p.backend,
        precision=p.precision,
        kernel_precision=rec.kernel_precision,
        parameter_bytes=rec.parameter_bytes,
        latency=lat,
        batch_latency=LatencySamples(batch, ()),
        correct=tuple(c == "1" for c in ans.get("correct", "")),
        energy=proxy_energy(cfg.power_watts, lat.mean / 1e3),
        environment={
            **ans.get("fingerprint", {}),
            "measured_on": target.name,
            "agent_url": target.url,
            "load_s": ans.get("load_s"),
            "measure_s": ans.get("measure_s"),
        },
        latency_multiplier=1.0,
    )


def _measure_one(
    sweep: Sweep, client: AgentClient, host: VariantResult, target: TargetConfig, validation: _Validation
) -> VariantResult:
    cfg, p = sweep.cfg, host.point
    t0 = time.perf_counter()
    files, runtime, meta = artifact_files(
        sweep.parent(p.pruning_level),
        p.backend,
        p.precision,
        sweep.build_context(p.pruning_level, calibration=p.calibration),
        cfg.threads,
    )
    batch = 1 if runtime in STATIC_BATCH_RUNTIMES else cfg.latency_batch_size
    ans = client.measure(
        runtime,
        files,
        next(iter(files)),
        (batch, *sweep.data.input_shape),
        _settings(cfg, int(client.info().get("protocol", 1))),
        cfg.threads,
        str(meta.get("inference_precision_hint", "f32")),
        validation.paths,
        outputs=validation.scoring is not None,
    )
    measured = _agent_record(cfg, host, target, batch, ans)
    if validation.scoring is not None:
        measured = _scored(measured, ans["output_arrays"], validation.scoring, validation.targets)
    return VariantResult(
        point=p,
        key=target_key(host.key, target.name),
        measurement=measured,
        runtime_parameter_bytes=host.runtime_parameter_bytes,
        threads=cfg.threads,
        model_source=host.model_source,
        model_sha256=host.model_sha256,
        graph_transform=host.graph_transform,
        measured_on=target.name,
        source="edge-opt agent",
        timings={"target_s": time.perf_counter() - t0},
    )


def _not_tried_reason(target: TargetConfig, token: str | None, down: str | None, failures: int) -> str | None:
    """Why a point is not sent to the target (no token, or the target gave up after failures), else None."""
    return (
        f"environment variable {target.token_env} (token_env) is not set"
        if token is None
        else f"{down} (not tried: the target failed {failures} times in a row)"
        if down
        else None
    )


def _skip_reason(host: VariantResult, validation: _Validation) -> str | None:
    """Why a point does not apply on any target (the model's inputs, or a backend an agent does not run)."""
    if validation.skip is not None:
        return validation.skip
    if host.point.backend not in AGENT_BACKENDS:
        return (
            f"the {host.point.backend} backend runs where torch does; an agent runs ONNX Runtime, OpenVINO and "
            "ExecuTorch artifacts"
        )
    return None


def _one_target(
    sweep: Sweep,
    store: StudyStore | None,
    hosts: Sequence[VariantResult],
    target: TargetConfig,
    validation: _Validation,
    should_stop: Callable[[], bool],
    on_event: Callable[..., None],
) -> TargetRun:
    token = os.environ.get(target.token_env)
    client = AgentClient(target.url, token or "", target.timeout_s)
    rows: list[VariantResult] = []
    failures, down, measured = 0, None, 0
    fingerprint: dict[str, Any] = {}
    for host in hosts:
        if should_stop():
            break
        key = target_key(host.key, target.name)
        doc = store.get(key) if store is not None else None
        if doc is not None:
            rows.append(VariantResult.from_dict(doc))
            if not fingerprint and rows[-1].measurement is not None:
                fingerprint = dict(rows[-1].measurement.environment)
            continue
        info = {"measured_on": target.name, "source": "edge-opt agent", "threads": sweep.cfg.threads}
        skip = _skip_reason(host, validation)
        if skip is not None:
            rows.append(VariantResult.skip(host.point, key, skip, **info))
            continue
        reason = _not_tried_reason(target, token, down, failures)
        if reason is None:
            try:
                result = _measure_one(sweep, client, host, target, validation)
            except OutputsRefused as exc:  # this point cannot be scored there: skipped, the target is fine
                rows.append(VariantResult.skip(host.point, key, f"{target.name}: {exc}", **info))
                continue
            except AgentError as exc:
                reason, failures = f"{target.name}: {exc}", failures + 1
                down = reason if failures >= _FAILURES_BEFORE_GIVING_UP else None
            except Exception as exc:  # noqa: BLE001 — building the files failed: an error row, never a crash
                reason = f"{target.name}: {type(exc).__name__}: {exc}"
            else:
                failures, measured = 0, measured + 1
                fingerprint = dict(result.measurement.environment) if result.measurement else fingerprint
                if store is not None:
                    store.put(key, result.to_dict(), kind="target")
                rows.append(result)
                on_event("target_point", target=target.name, point=host.point, row=result.row())
                continue
        rows.append(VariantResult.failed(host.point, key, reason, **info))  # not stored: a resume tries again
    return TargetRun(target.name, tuple(rows), fingerprint, measured)


def measure_on_targets(
    sweep: Sweep,
    store: StudyStore | None,
    hosts: Sequence[VariantResult],
    out: Path,
    should_stop: Callable[[], bool] = lambda: False,
    on_event: Callable[..., None] = lambda kind, **info: None,
) -> tuple[list[TargetRun], list[str]]:
    """Measure every measured host row on each target of ``measure_on``; returns the runs and warnings."""
    targets = sweep.cfg.agent_targets
    if not targets:
        return [], []
    validation = _validation_arrays(sweep, out)
    measurable = [h for h in hosts if h.ok and h.skipped is None and h.measurement is not None]
    runs, warnings = [], []
    for target in targets:
        on_event("stage", name="targets", detail=f"{target.name} ({target.url})")
        run = _one_target(sweep, store, measurable, target, validation, should_stop, on_event)
        errors = [r for r in run.results if r.error]
        if errors:
            warnings.append(
                f"target {target.name}: {len(errors)} of {len(run.results)} points failed "
                f"({errors[0].error}); run the study again to re-measure only those"
            )
        runs.append(run)
    return runs, warnings


def simulation_gap(cfg: StudyConfig, hosts: Sequence[VariantResult], run: TargetRun) -> dict[str, Any]:
    """How far the simulated device latency (host × ``latency_multiplier``) was from the target's measurement,
    per point both measured: ratio simulated / measured (1 = the simulation was right)."""
    host_by_point = {h.point: h for h in hosts if h.metrics is not None and h.error is None}
    pairs: list[dict[str, Any]] = []
    for r in run.results:
        h = host_by_point.get(r.point)
        if h is None or h.metrics is None or r.metrics is None or r.error is not None or not r.metrics.latency_ms > 0:
            continue
        simulated = h.metrics.latency_ms * cfg.latency_multiplier
        pairs.append(
            {
                "backend": r.point.backend,
                "precision": r.point.precision,
                "pruning_level": r.point.pruning_level,
                "calibration": r.point.calibration,
                "simulated_ms": simulated,
                "measured_ms": r.metrics.latency_ms,
                "ratio": simulated / r.metrics.latency_ms,
            }
        )
    ratios = [float(p["ratio"]) for p in pairs]
    return {
        "points": len(pairs),
        "median_ratio": float(np.median(ratios)) if ratios else math.nan,
        "min_ratio": min(ratios) if ratios else math.nan,
        "max_ratio": max(ratios) if ratios else math.nan,
        "per_point": pairs,
    }


def vendor_row(cfg: StudyConfig, host: VariantResult, m: VendorMeasurement, target: str) -> VendorRow:
    """A vendor tool's measurement of ``host``'s point on ``target`` as a record: the tool's statistics (NaN where
    it reports none), the host's accuracy and memory (the same model, not re-evaluated). The tool's details are
    kept in key order, as the study store keeps them."""
    hm = host.metrics
    return VendorRow(
        key=target_key(host.key, target),
        point=host.point,
        measured_on=target,
        source=m.source,
        accuracy=hm.accuracy if hm is not None else math.nan,
        latency_ms=m.latency_mean_ms,
        latency_median_ms=m.latency_median_ms,
        latency_std_ms=m.latency_std_ms,
        latency_ci95_ms=m.latency_ci95_ms,
        latency_samples=m.count,
        throughput_sps=m.throughput_fps,
        memory_mb=hm.memory_mb if hm is not None else math.nan,
        runtime_memory_mb=(host.runtime_parameter_bytes or 0) / 1e6 if host.runtime_parameter_bytes else math.nan,
        vendor=replace(m, details=tuple(sorted(m.details))),
    )
