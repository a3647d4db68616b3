"""Pipeline: orchestrates a study from config to report. Nothing below imports it."""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import torch

from . import atomic
from .config import ConfigError, StudyConfig, load_config
from .data import DATASETS, DataBundle, load_data
from .deploy import deployment_rows, deployment_simulation
from .env import environment, git_commit, package_versions
from .html_report import write_html_report
from .hardware import (add_layer_roofline, rebuild_hardware_plots, estimate_layerwise_stats, machine_calibration, precision_tradeoff_table,
                       save_hardware_artifacts, summarize_hardware)
from .models import MODELS, create_model, model_param_errors
from .pareto import pareto_frontier
from .reporting import build_summary, write_csv, write_outputs, write_plots
from .store import StudyStore
from .sweep import (ConfigPoint, Sweep, StudyInterrupted, baseline_fingerprint, best_effort, finalize_rows,
                    parent_key, point_key, recommend, stable_hash, sweep_points)
from .training import resolve_device, set_deterministic, train_model
from .variants.backends import BACKENDS, PRECISIONS, BuildContext, build_variant
from .variants.prune import load_checkpoint, save_checkpoint

EventFn = Callable[..., None]


def registry_errors(cfg: StudyConfig) -> list[str]:
    """Config values that name unknown registry entries (model, params, dataset, backends, precisions)."""
    errors = []
    if cfg.model.name not in MODELS:
        errors.append(f"The 'model.name' parameter must be one of {MODELS.names()}. Got {cfg.model.name!r} instead.")
    else:
        errors += model_param_errors(cfg.model.name, cfg.model.params)
    if cfg.dataset not in DATASETS:
        errors.append(f"The 'dataset' parameter must be one of {DATASETS.names()}. Got {cfg.dataset!r} instead.")
    bad_b = [b for b in cfg.backends if b not in BACKENDS]
    if bad_b:
        errors.append(f"The 'backends' parameter must contain names from {BACKENDS.names()}. Got {bad_b} instead.")
    bad_p = [p for p in cfg.precisions if p not in PRECISIONS]
    if bad_p:
        errors.append(f"The 'precisions' parameter must contain names from {PRECISIONS.names()}. Got {bad_p} instead.")
    from .tracking import check_tracking

    errors += check_tracking(cfg)
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            errors.append("The 'executor' parameter 'ray' needs Ray: pip install 'edge-opt[ray]'. Got 'ray' with Ray "
                          "not installed.")
    return errors


def load_study_config(path: str | Path, overrides: Optional[dict] = None) -> StudyConfig:
    """Load a YAML study config and check it against the registries.

    Raises:
        ConfigError: one message per invalid key.
    """
    cfg = load_config(path, overrides)
    errors = registry_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def check_output_dir(path: str | Path, create: bool = True) -> Path:
    """Prove the output folder is writable (creating it when ``create``), before any training starts.

    With ``create=False`` nothing is written: a missing folder is checked through its nearest
    existing parent.

    Raises:
        ConfigError: naming the folder when it cannot be created or written.
    """
    out = Path(path)

    def fail(reason: str) -> ConfigError:
        return ConfigError([f"The 'output_dir' parameter must name a writable folder. Got {str(path)!r} "
                            f"instead ({reason})."])

    if not create:
        probe = out
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise fail(f"{str(probe)!r} is not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise fail(f"{str(probe)!r} is not writable")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write_probe_{os.getpid()}"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        raise fail(str(exc.strerror or exc)) from None
    return out


@dataclass
class StudyResult:
    """What a finished (or interrupted) study produced."""

    output_dir: Path
    sweep: pd.DataFrame
    summary: dict[str, Any]
    reused: int = 0
    computed: int = 0
    interrupted: bool = False
    recommended: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _cached_manifest(model_dir: Path, point: dict[str, Any], goals_met: bool, failed: list[str]) -> Optional[dict[str, Any]]:
    """The existing artifact's manifest when it was exported for the same config point and is intact."""
    import json

    from .runtime import ArtifactError, load_manifest

    try:
        manifest = load_manifest(model_dir)  # checks the SHA-256 of model.onnx
    except (ArtifactError, OSError, ValueError, KeyError):
        return None
    same = json.loads(json.dumps(manifest.get("config_point"))) == json.loads(json.dumps(point, default=str))
    if not same or manifest.get("goals_met") != goals_met or manifest.get("failed_goals") != list(failed):
        return None
    return manifest


def _fewer_threads_run(cfg: StudyConfig, backend: str, model: torch.nn.Module, precision: str, ctx: BuildContext,
                       data: DataBundle, host: dict[str, Any]) -> dict[str, Any]:
    """Measured (not modelled) slow-down: single-stream with round(threads × cpu_frequency_scale) threads."""
    fewer = max(1, int(round(cfg.threads * cfg.cpu_frequency_scale)))
    if fewer >= cfg.threads:
        return {"skipped": f"threads={cfg.threads}: no fewer threads to run with on this host"}
    ctx.threads = fewer
    variant = build_variant(backend, model, precision, ctx)
    res = deployment_simulation(variant, data.val_loader, "cpu", 1.0, ["single_stream"], min_queries=256,
                                min_duration_s=min(cfg.deployment.min_duration_s, 2.0), power_watts=cfg.power_watts,
                                threads=fewer)
    ss = res["scenarios"]["single_stream"]["host"]
    base = host.get("scenarios", {}).get("single_stream", {}).get("host", {})
    return {"threads": fewer, "host_threads": cfg.threads, "p50_ms": ss["p50_ms"], "p90_ms": ss["p90_ms"],
            "measured_slowdown_p90": ss["p90_ms"] / base["p90_ms"] if base.get("p90_ms") else None,
            "modelled_factor": host.get("device_latency_factor")}


def _stage(timings: dict[str, float], name: str, start: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - start
    return now


def _model_factory(cfg: StudyConfig, data: DataBundle) -> Callable[[], torch.nn.Module]:
    """Builds a fresh, unpruned model of the study (checkpoints are loaded into it)."""
    return lambda: create_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.params)


def _baseline(cfg: StudyConfig, data: DataBundle, out: Path, device: torch.device, on_event: EventFn) -> tuple[torch.nn.Module, bool]:
    factory = _model_factory(cfg, data)
    ckpt = out / "checkpoints" / f"baseline_{baseline_fingerprint(cfg)}.pt"
    if ckpt.exists():
        model, _ = load_checkpoint(ckpt, factory())
        return model, True
    torch.manual_seed(cfg.seed)
    model = factory()
    on_event("stage", name="baseline training", detail=f"{cfg.model.name}, {cfg.epochs} epochs")
    train_model(model, data.train_loader, epochs=cfg.epochs, learning_rate=cfg.learning_rate, device=device,
                seed=cfg.seed)
    model.to("cpu")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, ckpt, {"fingerprint": baseline_fingerprint(cfg)})
    return model, False


def _layer_table(model: torch.nn.Module, precision: str, batch: int, input_shape: tuple) -> pd.DataFrame:
    bytes_per_value = {"fp32": 4, "fp16": 2, "int8": 1}.get(precision, 4)
    return estimate_layerwise_stats(model, batch, input_shape, activation_bytes_per_value=bytes_per_value)


def _param_scale(precision: str, df: pd.DataFrame) -> pd.DataFrame:
    """Parameter bytes of a float parent re-expressed at the variant's precision."""
    df = df.copy()
    df["parameter_bytes"] = (df["parameter_bytes"] * {"fp32": 1, "fp16": 0.5, "int8": 0.25}.get(precision, 1)).astype(int)
    return df


def run_study(cfg: StudyConfig, *, fresh: bool = False, on_event: Optional[EventFn] = None,
              should_stop: Optional[Callable[[], bool]] = None, command: Optional[list[str]] = None) -> StudyResult:
    """Run (or resume) a study and write every output into ``cfg.output_dir``.

    Args:
        cfg: validated config (see ``load_study_config``).
        fresh: discard stored points and cached checkpoints first.
        on_event: progress callback ``on_event(kind, **info)``.
        should_stop: checked between variants; when it returns True the outputs for the finished
            points are written and ``StudyInterrupted`` is raised.
        command: the command line, for reproducibility.json.
    Returns:
        ``StudyResult``.
    """
    on_event = on_event or (lambda kind, **info: None)
    should_stop = should_stop or (lambda: False)
    errors = registry_errors(cfg)
    if errors:
        raise ConfigError(errors)
    check_output_dir(cfg.output_dir, create=False)
    timings: dict[str, float] = {}
    warnings_: list[str] = []
    t = time.perf_counter()
    on_event("stage", name="data", detail=cfg.dataset)
    # Data errors (missing/corrupt files) surface before anything is written.
    data = load_data(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size, batch_size=cfg.batch_size,
                     dataloader_seed=cfg.dataloader_seed, val_fraction=cfg.val_fraction,
                     train_subset=cfg.train_subset, val_subset=cfg.val_subset, num_workers=cfg.num_workers)
    out = check_output_dir(cfg.output_dir)
    if fresh:
        for name in ("study.sqlite", "study.sqlite-wal", "study.sqlite-shm"):
            (out / name).unlink(missing_ok=True)
        for sub in ("checkpoints", "onnx", "variants", "model"):
            shutil.rmtree(out / sub, ignore_errors=True)
    store = StudyStore(out / "study.sqlite")
    try:
        device, dev_warning = resolve_device(cfg.device)
        if dev_warning:
            warnings_.append(dev_warning)
        set_deterministic(cfg.seed)
        t = _stage(timings, "data", t)
        baseline, cached = _baseline(cfg, data, out, device, on_event)
        if cached:
            on_event("log", message="baseline checkpoint reused")
        t = _stage(timings, "training", t)
        sweep = Sweep(baseline, data, cfg, out, store, model_factory=_model_factory(cfg, data), on_event=on_event, should_stop=should_stop)
        points = sweep_points(cfg)
        base_point = ConfigPoint(0.0, "fp32", "torch")
        interrupted = False
        on_event("stage", name="variants", detail=f"{len(points)} config points")
        try:
            if cfg.executor == "ray":
                from .executors import run_points_ray

                run_points_ray(sweep, points if base_point in points else [*points, base_point], on_event)
            else:
                sweep.run(points)
                if base_point not in points:
                    sweep.run_point(base_point)
        except StudyInterrupted:
            interrupted = True
        t = _stage(timings, "variants", t)
        result = _finish(cfg, out, store, sweep, data, baseline, points, base_point, warnings_, timings, on_event,
                         command, interrupted)
        result.reused, result.computed = sweep.reused, sweep.computed
        if cfg.tracking.mlflow is not None and not interrupted:
            from .tracking import log_study_mlflow

            on_event("stage", name="tracking", detail=f"MLflow {cfg.tracking.mlflow.uri}")
            try:
                result.summary["mlflow_run_id"] = log_study_mlflow(cfg, result.sweep, result.summary, out)
            except Exception as exc:  # noqa: BLE001 — tracking must never lose the study's own outputs
                result.warnings.append(f"MLflow logging failed: {type(exc).__name__}: {exc}")
        result.timings.update({f"variants.{k}": v for k, v in sweep.timings.items()})
        if interrupted:
            raise StudyInterrupted(result)
        return result
    finally:
        store.close()


def _finish(cfg: StudyConfig, out: Path, store: StudyStore, sweep: Sweep, data: DataBundle, baseline: torch.nn.Module,
            points: list[ConfigPoint], base_point: ConfigPoint, warnings_: list[str], timings: dict[str, float],
            on_event: EventFn, command: Optional[list[str]], interrupted: bool) -> StudyResult:
    t = time.perf_counter()
    # Regenerate from the store: outputs always describe every finished point of this config.
    rows = [r for r in (store.get(point_key(cfg, p)) for p in points) if r is not None]
    base_row = store.get(point_key(cfg, base_point))
    raw = pd.DataFrame(rows)
    df = finalize_rows(raw, cfg, base_row) if len(raw) else raw
    baseline_metrics = {k: base_row.get(k) for k in ("accuracy", "latency_ms", "latency_std_ms", "latency_p95_ms",
                                                     "latency_ci95_ms", "throughput_sps", "memory_mb",
                                                     "energy_proxy_j", "energy_source", "batch_latency_ms",
                                                     "kernel_precision", "error")} if base_row else {}
    baseline_metrics.update({"pruning_level": 0.0, "precision": "fp32", "backend": "torch"})
    frontier_lat = pareto_frontier(df, "latency_ms", cfg.pareto_use_ci) if len(df) else df
    frontier_en = pareto_frontier(df, "energy_proxy_j", cfg.pareto_use_ci) if len(df) else df
    rec_row, failed = (recommend(df, float(base_row["accuracy"]), cfg.max_accuracy_drop)
                       if len(df) and base_row and base_row.get("error") is None else (None, ["baseline failed"]))
    chosen = rec_row if rec_row is not None else (best_effort(df) if len(df) else None)
    if len(df):
        for _, r in df[df["slower_than_fp32"]].iterrows():
            warnings_.append(f"{r['backend']} {r['precision']} at pruning {r['pruning_level']:g} is slower than its fp32 "
                             f"parent ({r['latency_ms']:.4f} vs {r['latency_ms'] * r['speedup_vs_fp32']:.4f} ms)")
        for _, r in df[df["precision_mismatch"]].iterrows():
            warnings_.append(f"{r['backend']} {r['precision']} at pruning {r['pruning_level']:g} really computes in "
                             f"{r['kernel_precision']}")
        noisy = df[(df["latency_ci95_ms"] / df["latency_ms"]) > 0.05]
        for _, r in noisy.iterrows():
            warnings_.append(f"noisy latency: {r['backend']} {r['precision']} p{r['pruning_level']:g} "
                             f"±{100 * r['latency_ci95_ms'] / r['latency_ms']:.1f}% (95% CI)")
        nodes = df[df["error"].isna()][["hostname", "cpu_model"]].drop_duplicates() if "hostname" in df else []
        if len(nodes) > 1:
            warnings_.append(f"rows were measured on {len(nodes)} different nodes "
                             f"({', '.join(f'{h} [{c}]' for h, c in nodes.itertuples(index=False))}); latencies are "
                             "only compared within a node (speed-ups use the fp32 parent measured on the same node)")
        for _, r in df[df["error"].notna()].iterrows():
            warnings_.append(f"{r['backend']} {r['precision']} p{r['pruning_level']:g} failed: {r['error']}")
    recommendation: Optional[dict[str, Any]] = None
    manifest = None
    t = _stage(timings, "analysis", t)
    if chosen is not None and not interrupted:
        on_event("stage", name="artifact", detail=f"{chosen['backend']} {chosen['precision']} p{chosen['pruning_level']:g}")
        from .artifact import export_artifact

        parent = sweep.parent(float(chosen["pruning_level"]))
        ctx = BuildContext(calibration=sweep.calibration, example_input=sweep.example, workdir=out / "model",
                           parent_key=parent_key(cfg, float(chosen["pruning_level"])),
                           quantization_backend=cfg.quantization_backend, calibration_method=cfg.calibration_method,
                           threads=cfg.threads, cache=sweep.export_cache)
        point = {"pruning_level": float(chosen["pruning_level"]), "precision": chosen["precision"],
                 "backend": chosen["backend"], "key": chosen["key"], "model": cfg.model.model_dump(),
                 "dataset": cfg.dataset, "seed": cfg.seed}
        try:
            manifest = _cached_manifest(out / "model", point, rec_row is not None, failed)
            if manifest is None:
                manifest = export_artifact(out / "model", parent, chosen.to_dict(), data, ctx,
                                           goals_met=rec_row is not None, failed_goals=failed, config_point=point,
                                           threads=cfg.threads)
        except Exception as exc:  # noqa: BLE001 — a failed export is reported, the study outputs still land
            warnings_.append(f"artifact export failed: {type(exc).__name__}: {exc}")
        recommendation = {**point, "goals_met": rec_row is not None, "failed_goals": failed,
                          "accuracy": float(chosen["accuracy"]), "latency_ms": float(chosen["latency_ms"]),
                          "memory_mb": float(chosen["memory_mb"]), "accuracy_drop": float(chosen["accuracy_drop"]),
                          "speedup_vs_baseline": float(chosen["speedup_vs_baseline"]),
                          "kernel_precision": chosen["kernel_precision"],
                          "why": (f"lowest latency among rows meeting the budgets (memory ≤ {cfg.active_memory_budget_mb} MB"
                                  + (f", device latency ≤ {cfg.latency_budget_ms} ms" if cfg.latency_budget_ms else "")
                                  + f") with accuracy drop ≤ {cfg.max_accuracy_drop}; latencies that do not differ "
                                    "significantly are ties, won by kernels that really run the precision, then the "
                                    "least run-time memory") if rec_row is not None else
                          "best effort: " + "; ".join(failed),
                          "artifact": str(Path("model") / "model.onnx") if manifest else None,
                          "artifact_accuracy": manifest["artifact_accuracy"] if manifest else None}
    t = _stage(timings, "artifact", t)
    hardware: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    if not interrupted and base_row is not None and base_row.get("error") is None:
        on_event("stage", name="hardware analysis", detail="machine calibration + layer tables")
        machine = machine_calibration(out, cfg.threads, cfg.memory_bandwidth_gbps, cfg.peak_compute_gmacs)
        bw, peak = machine["memory_bandwidth_gbps"], machine["peak_compute_gmacs"]
        lb = cfg.latency_batch_size
        base_layers = add_layer_roofline(_layer_table(baseline, "fp32", lb, data.input_shape), bw, peak)
        hardware["baseline"] = summarize_hardware(base_layers, float(base_row["latency_ms"]), bw, peak)
        rec_layers = base_layers
        if chosen is not None:
            rp = sweep.parent(float(chosen["pruning_level"]))
            rec_layers = add_layer_roofline(_param_scale(chosen["precision"], _layer_table(
                rp, chosen["precision"], lb, data.input_shape)), bw, peak)
            hardware["recommended"] = summarize_hardware(rec_layers, float(chosen["latency_ms"]), bw, peak)
            # the recommended configuration at the loader's batch size (roofline efficiency at batch 128)
            big = add_layer_roofline(_param_scale(chosen["precision"], _layer_table(
                rp, chosen["precision"], int(chosen["batch_size"]), data.input_shape)), bw, peak)
            hardware["recommended_batch"] = summarize_hardware(big, float(chosen["batch_latency_ms"]), bw, peak)
        hardware["machine"] = machine
        points_rows = []
        layer_cache: dict[tuple, pd.DataFrame] = {}
        for _, r in df[df["error"].isna()].iterrows():
            k = (float(r["pruning_level"]), r["precision"])
            if k not in layer_cache:
                layer_cache[k] = _param_scale(r["precision"], _layer_table(sweep.parent(k[0]), r["precision"], lb,
                                                                           data.input_shape))
            s = summarize_hardware(layer_cache[k], float(r["latency_ms"]), bw, peak)
            points_rows.append({"backend": r["backend"], "precision": r["precision"], "pruning_level": k[0],
                                "arithmetic_intensity": s["arithmetic_intensity"], "achieved_gmacs": s["achieved_gmacs"]})
        ptable = precision_tradeoff_table(df) if len(df) else pd.DataFrame()
        hw_summary = {**hardware["recommended" if chosen is not None else "baseline"],
                      "bandwidth_source": machine["bandwidth_source"], "peak_source": machine["peak_source"],
                      "peak_compute_gmacs_int8": machine.get("peak_compute_gmacs_int8")}
        save_hardware_artifacts(out, rec_layers, ptable, hw_summary, pd.DataFrame(points_rows))
        t = _stage(timings, "hardware", t)
        on_event("stage", name="deployment simulation", detail=f"cpu_frequency_scale={cfg.cpu_frequency_scale}")
        d = cfg.deployment
        targets = {"baseline": (baseline, "fp32", "torch", base_layers, hardware["baseline"])}
        if chosen is not None:
            targets["recommended"] = (sweep.parent(float(chosen["pruning_level"])), chosen["precision"],
                                      chosen["backend"], rec_layers, hardware["recommended"])
        for label, (model, precision, backend, layers, hw) in targets.items():
            dkey = "deployment:" + stable_hash({"label": label, "point": point_key(cfg, ConfigPoint(
                0.0 if label == "baseline" else float(chosen["pruning_level"]), precision, backend)),
                "deployment": d.model_dump(), "scale": cfg.cpu_frequency_scale, "budget": cfg.latency_budget_ms,
                "cbf": round(float(hw.get("compute_bound_fraction") or 0), 6), "seed": cfg.seed})
            cached_dep = store.get_meta(dkey)
            if cached_dep is not None:
                deployment[label] = cached_dep
                continue
            try:
                ctx = BuildContext(calibration=sweep.calibration, example_input=sweep.example, workdir=out / "onnx",
                                   parent_key=parent_key(cfg, 0.0 if label == "baseline" else float(chosen["pruning_level"])),
                                   quantization_backend=cfg.quantization_backend,
                                   calibration_method=cfg.calibration_method, threads=cfg.threads,
                                   cache=sweep.export_cache)
                variant = build_variant(backend, model, precision, ctx)
                res = deployment_simulation(
                    variant, data.val_loader, "cpu", cfg.cpu_frequency_scale, d.scenarios,
                    min_queries=d.min_queries, min_duration_s=d.min_duration_s, latency_budget_ms=cfg.latency_budget_ms,
                    server_target_qps=d.server_target_qps, server_search_steps=d.server_search_steps,
                    latency_model=d.latency_model, compute_bound_fraction=hw.get("compute_bound_fraction"),
                    power_watts=cfg.power_watts, seed=cfg.seed, threads=cfg.threads,
                    offline_batch_size=d.offline_batch_size)
                res["hardware"] = hw
                res["measured_fewer_threads"] = _fewer_threads_run(cfg, backend, model, precision, ctx, data, res)
                deployment[label] = res
                store.set_meta(dkey, res)  # a re-run of the same study reuses the simulation
            except Exception as exc:  # noqa: BLE001
                deployment[label] = {"error": f"{type(exc).__name__}: {exc}"}
                warnings_.append(f"deployment simulation of {label} failed: {exc}")
        if deployment:
            write_csv(out / "deployment.csv", deployment_rows({k: v for k, v in deployment.items() if "scenarios" in v}))
        t = _stage(timings, "deployment", t)
    on_event("stage", name="report", detail=str(out))
    if deployment:
        # the reference's top-level batch keys, from the recommended (else baseline) simulation
        main = deployment.get("recommended", deployment.get("baseline", {}))
        for k in ("batch_latency_ms", "batch_throughput_sps", "stream_avg_latency_ms", "stream_throughput_sps"):
            if k in main:
                deployment[k] = main[k]
        deployment["hardware_summary"] = hardware.get("recommended", hardware.get("baseline"))
    summary = build_summary(
        baseline_metrics, cfg.memory_budgets_mb, cfg.active_memory_budget_mb, cfg.cpu_frequency_scale,
        cfg.latency_multiplier, df if len(df) else pd.DataFrame({"accepted": []}), deployment,
        recommended=recommendation, slower_than_fp32=df[df["slower_than_fp32"]][
            ["backend", "precision", "pruning_level", "latency_ms", "speedup_vs_fp32"]].to_dict("records")
        if len(df) else [],
        precision_mismatches=df[df["precision_mismatch"]][["backend", "precision", "pruning_level", "kernel_precision"]]
        .to_dict("records") if len(df) else [],
        hardware={k: v for k, v in hardware.items()}, warnings=sorted(set(warnings_)),
        latency_note="latency_ms columns are host measurements (batch of latency_batch_size, torch.utils.benchmark); "
                     "device_latency_ms = latency_ms × latency_multiplier (linear clock model)",
        finished_points=len(rows), total_points=len(points), interrupted=interrupted,
    )
    write_outputs(out, df, frontier_lat, frontier_en, summary)
    if len(df):
        write_plots(out, df, frontier_lat, frontier_en, recommended_key=chosen["key"] if chosen is not None else None)
    atomic.write_json(out / "reproducibility.json", {
        "command": command or sys.argv, "git_commit": git_commit(Path(__file__).parent),
        "seeds": {"seed": cfg.seed, "dataloader_seed": cfg.dataloader_seed}, "config": cfg.model_dump(),
        "environment": environment(cfg.threads), "package_versions": package_versions(),
        "torch_threads_measurement": cfg.threads, "torch_threads_training": torch.get_num_threads(),
        "data": {"source": data.source, "n_train": data.n_train, "n_val": data.n_val,
                 "input_shape": list(data.input_shape), "mean": data.mean, "std": data.std},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    write_html_report(out)
    _stage(timings, "report", t)
    return StudyResult(out, df, summary, interrupted=interrupted, recommended=rec_row is not None,
                       warnings=sorted(set(warnings_)), timings=timings)


def rebuild_report(output_dir: str | Path) -> Path:
    """Rebuild every table, plot and the HTML of a finished study from its store, re-running nothing.

    The sweep rows, frontiers, plots and precision table are recomputed from ``study.sqlite``
    with the config recorded in ``reproducibility.json``; deployment and hardware results are
    taken from the existing ``summary.json``.

    Raises:
        ConfigError: the folder holds no finished study.
    """
    import json

    from .sweep import load_stored_study

    out = Path(output_dir)
    cfg, rows, base_row = load_stored_study(out)
    try:
        old = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{str(out)!r} holds no finished study (summary.json): {exc}"]) from None
    df = finalize_rows(pd.DataFrame(rows), cfg, base_row) if rows else pd.DataFrame({"accepted": []})
    frontier_lat = pareto_frontier(df, "latency_ms", cfg.pareto_use_ci) if rows else df
    frontier_en = pareto_frontier(df, "energy_proxy_j", cfg.pareto_use_ci) if rows else df
    fresh = build_summary(old.get("baseline", {}), cfg.memory_budgets_mb, cfg.active_memory_budget_mb,
                          cfg.cpu_frequency_scale, cfg.latency_multiplier, df, old.get("deployment", {}))
    summary = {**old, **fresh}
    write_outputs(out, df, frontier_lat, frontier_en, summary)
    if rows:
        rec = summary.get("recommended") or {}
        write_plots(out, df, frontier_lat, frontier_en, recommended_key=rec.get("key"))
        ptable = precision_tradeoff_table(df)
        atomic.write_with(out / "precision_tradeoffs.csv", lambda t: ptable.to_csv(t, index=False, encoding="utf-8"))
    rebuild_hardware_plots(out)
    return write_html_report(out)
