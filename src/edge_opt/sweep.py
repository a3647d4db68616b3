"""Sweep: pruning levels × precisions × backends, one measured row per config point.

Each config point has a stable key (a hash of everything that affects its
numbers); finished points go to the study store as soon as they are measured and
are reused on the next run. A variant that cannot be built or measured, or whose
numbers are not finite, is a row with ``error`` set and ``accepted=False``.
Budgets, speed-ups and acceptance are applied afterwards (``finalize_rows``), so a
change of budget never invalidates a measurement.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
from torch import nn

from . import atomic
from .config import StudyConfig
from .data import DataBundle
from .metrics import PerfMetrics, latency_differs, measure_variant, memory_violations
from .store import StudyStore
from .training import train_model
from .variants.backends import BuildContext, build_variant
from .variants.prune import load_checkpoint, prune_model, save_checkpoint

# Bump when the measuring code changes what a stored number means: invalidates stored points.
MEASURE_VERSION = "1"

METRIC_COLUMNS = list(PerfMetrics.__dataclass_fields__)
COLUMN_ORDER = [
    "pruning_level", "precision", "backend", "kernel_precision", "accepted", "error", "rejected_reason",
    "accuracy", "accuracy_drop", "latency_ms", "latency_median_ms", "latency_std_ms", "latency_p95_ms",
    "latency_ci95_ms", "device_latency_ms", "batch_latency_ms", "throughput_sps", "memory_mb", "runtime_memory_mb",
    "energy_proxy_j", "energy_ci95_j", "energy_source", "active_budget_mb", "latency_budget_ms",
    "speedup_vs_fp32", "speedup_vs_baseline", "slower_than_fp32", "slower_than_fp32_p", "precision_mismatch",
]
RAW_COLUMNS = ["latency_samples_ms", "batch_latency_samples_ms"]  # kept in memory and the store, not in CSVs


def stable_hash(obj: Any) -> str:
    """16 hex digits of SHA-256 over canonical JSON: the key idiom of the store."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConfigPoint:
    """One cell of the study grid."""

    pruning_level: float
    precision: str
    backend: str


def baseline_fingerprint(cfg: StudyConfig) -> str:
    """Key of the trained baseline: model, data and training settings."""
    return stable_hash({
        "model": cfg.model.model_dump(), "dataset": cfg.dataset, "data_dir": cfg.data_dir if cfg.dataset in
        ("mnist", "fashion-mnist") else None, "image_size": cfg.image_size, "val_fraction": cfg.val_fraction,
        "seed": cfg.seed, "dataloader_seed": cfg.dataloader_seed, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate, "train_subset": cfg.train_subset, "val_subset": cfg.val_subset,
    })


def parent_key(cfg: StudyConfig, level: float) -> str:
    """Key of the pruned (and fine-tuned) float parent of a pruning level."""
    ft = cfg.fine_tune_epochs if level > 0 else 0
    return stable_hash({"baseline": baseline_fingerprint(cfg), "level": level, "fine_tune_epochs": ft})


def point_key(cfg: StudyConfig, point: ConfigPoint) -> str:
    """Key of a config point: everything that affects its measured numbers."""
    return stable_hash({
        "parent": parent_key(cfg, point.pruning_level), "precision": point.precision, "backend": point.backend,
        "calibration": [cfg.calibration_batches, cfg.calibration_method, cfg.quantization_backend]
        if point.precision == "int8" else None,
        "threads": cfg.threads, "bench": [cfg.benchmark_repeats, cfg.benchmark_trials, cfg.benchmark_warmup,
                                          cfg.latency_batch_size, cfg.benchmark_min_sample_ms,
                                          cfg.benchmark_target_rel_ci], "power_watts": cfg.power_watts,
        "measure_version": MEASURE_VERSION, "runtimes": _runtime_versions(),
    })


@functools.lru_cache(maxsize=1)
def _runtime_versions() -> tuple:
    """Versions whose kernels shape the numbers: a new torch or onnxruntime re-measures every point."""
    from importlib import metadata

    out = []
    for name in ("torch", "onnxruntime", "torch-pruning", "onnx"):
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def sweep_points(cfg: StudyConfig) -> list[ConfigPoint]:
    """The study grid in run order (pruning level outermost, so each parent is built once)."""
    return [ConfigPoint(float(lv), p, b) for lv in cfg.pruning_levels for p in cfg.precisions for b in cfg.backends]


class StudyInterrupted(Exception):
    """Raised between variants when a stop was requested (SIGINT/SIGTERM)."""


def _error_row(point: ConfigPoint, key: str, message: str) -> dict[str, Any]:
    row: dict[str, Any] = {"key": key, **asdict(point), "kernel_precision": None, "error": message}
    row.update({c: math.nan for c in METRIC_COLUMNS if c != "energy_source"})
    row.update({"energy_source": None, "parameter_bytes": math.nan, "latency_samples_ms": [],
                "batch_latency_samples_ms": []})
    return row


def measure_point(variant: Any, point: ConfigPoint, key: str, data: DataBundle, cfg: StudyConfig,
                  metadata_dir: Optional[Path] = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure one built variant; returns (row, raw record dict)."""
    rec = measure_variant(
        variant, data.val_loader, power_watts=cfg.power_watts, benchmark_repeats=cfg.benchmark_repeats,
        benchmark_trials=cfg.benchmark_trials, benchmark_warmup=cfg.benchmark_warmup,
        latency_batch_size=cfg.latency_batch_size, threads=cfg.threads, min_sample_ms=cfg.benchmark_min_sample_ms,
        target_rel_ci=cfg.benchmark_target_rel_ci,
    )
    m = rec.metrics
    row: dict[str, Any] = {"key": key, **asdict(point), "kernel_precision": rec.kernel_precision, "error": None}
    row.update(asdict(m))
    row.update({
        "parameter_bytes": rec.parameter_bytes,
        # What the weights occupy in the graph the runtime really executes (ORT may fold fp16 back to fp32).
        "runtime_memory_mb": variant.metadata.get("runtime_parameter_bytes", rec.parameter_bytes) / 1e6,
        "latency_batch_size": rec.latency.batch_size,
        "batch_size": rec.batch_latency.batch_size,
        "n_eval": len(rec.correct),
        "latency_samples": rec.latency.n,
        "calls_per_sample": rec.latency.runs_per_sample,
        "latency_samples_ms": list(rec.latency.samples_ms),
        "batch_latency_samples_ms": list(rec.batch_latency.samples_ms),
        "hostname": rec.environment.get("hostname"),
        "cpu_model": rec.environment.get("cpu_model"),
        "threads": cfg.threads,
    })
    bad = [c for c in ("accuracy", "latency_ms", "memory_mb", "energy_proxy_j") if not math.isfinite(row[c])]
    if not rec.logits_finite:
        bad.append("logits")
    if bad:
        row["error"] = f"non-finite measurement: {', '.join(bad)}"
    if metadata_dir is not None:
        name = f"{point.backend}_{point.precision}_p{point.pruning_level:g}.json"
        atomic.write_json(metadata_dir / name, {"config_point": asdict(point), "key": key,
                                                "kernel_precision": rec.kernel_precision,
                                                "metadata": variant.metadata, "environment": rec.environment})
        row["metadata_file"] = str(Path(metadata_dir.name) / name)
    return row, rec.to_dict()


class Sweep:
    """Runs the grid for a trained baseline, reusing stored points and cached parents.

    Args:
        baseline: the trained float model.
        data: loaders and shapes.
        cfg: the study config.
        workdir: output folder (checkpoints/, onnx/, variants/ go below it).
        store: where finished points are committed (None: keep in memory only).
        model_factory: builds a fresh unpruned model (to reload pruned checkpoints).
        on_event: progress callback ``on_event(kind, **info)``.
        should_stop: checked between variants; True raises ``StudyInterrupted``.
    """

    def __init__(self, baseline: nn.Module, data: DataBundle, cfg: StudyConfig, workdir: str | Path,
                 store: Optional[StudyStore] = None, model_factory: Optional[Callable[[], nn.Module]] = None,
                 on_event: Optional[Callable[..., None]] = None, should_stop: Optional[Callable[[], bool]] = None,
                 ort_op_types_to_quantize: Optional[list[str]] = None) -> None:
        self.baseline, self.data, self.cfg = baseline, data, cfg
        self.workdir = Path(workdir)
        self.store = store
        self.model_factory = model_factory
        self.on_event = on_event or (lambda kind, **info: None)
        self.should_stop = should_stop or (lambda: False)
        self.ort_op_types = ort_op_types_to_quantize
        self.reused = 0
        self.computed = 0
        self.timings = {"pruning_and_fine_tuning": 0.0, "variant_building": 0.0, "measurement": 0.0}
        self._parents: dict[float, nn.Module] = {}
        self.calibration = data.calibration_batches(cfg.calibration_batches)
        self.example = next(iter(data.val_loader))[0][:2]
        self.export_cache: dict = {}  # shared ONNX exports per parent (sweep, artifact, deployment)

    def parent(self, level: float) -> nn.Module:
        """Pruned + fine-tuned float parent of ``level`` (from the checkpoint cache when present)."""
        if level in self._parents:
            return self._parents[level]
        key = parent_key(self.cfg, level)
        ckpt = self.workdir / "checkpoints" / f"pruned_{key}.pt"
        if level == 0.0:
            model = self.baseline
        elif ckpt.exists() and self.model_factory is not None:
            model, _ = load_checkpoint(ckpt, self.model_factory())
        else:
            self.on_event("prune", level=level)
            model = prune_model(self.baseline, level, self.example)
            if self.cfg.fine_tune_epochs:
                train_model(model, self.data.train_loader, epochs=self.cfg.fine_tune_epochs,
                            learning_rate=self.cfg.learning_rate, seed=self.cfg.seed)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, ckpt, {"pruning_level": level, "key": key})
        self._parents[level] = model
        return model

    def run_point(self, point: ConfigPoint) -> dict[str, Any]:
        """Stored row of ``point`` or a freshly built and measured one (committed to the store)."""
        key = point_key(self.cfg, point)
        if self.store is not None:
            hit = self.store.get(key)
            if hit is not None:
                self.reused += 1
                return hit
        record = None
        try:
            t0 = time.perf_counter()
            model = self.parent(point.pruning_level)
            t1 = time.perf_counter()
            self.timings["pruning_and_fine_tuning"] += t1 - t0
            ctx = BuildContext(
                calibration=self.calibration, example_input=self.example, workdir=self.workdir / "onnx",
                parent_key=parent_key(self.cfg, point.pruning_level), quantization_backend=self.cfg.quantization_backend,
                calibration_method=self.cfg.calibration_method, threads=self.cfg.threads,
                ort_op_types_to_quantize=self.ort_op_types, cache=self.export_cache,
            )
            variant = build_variant(point.backend, model, point.precision, ctx)
            t2 = time.perf_counter()
            self.timings["variant_building"] += t2 - t1
            row, record = measure_point(variant, point, key, self.data, self.cfg, self.workdir / "variants")
            self.timings["measurement"] += time.perf_counter() - t2
        except Exception as exc:  # noqa: BLE001 — any failure becomes an error row, never a crash or a fake number
            row = _error_row(point, key, f"{type(exc).__name__}: {exc}".strip()[:2000])
            record = {"traceback": traceback.format_exc(limit=8)}
        self.computed += 1
        if self.store is not None:
            self.store.put(key, row, record)
        return row

    def run(self, points: Optional[Sequence[ConfigPoint]] = None) -> pd.DataFrame:
        """Run every point (default: the config's grid) and return the raw rows (no budgets applied)."""
        points = list(points) if points is not None else sweep_points(self.cfg)
        rows = []
        for i, point in enumerate(points):
            if self.should_stop():
                raise StudyInterrupted(f"stopped after {i} of {len(points)} variants")
            self.on_event("variant", index=i + 1, total=len(points), point=point)
            rows.append(self.run_point(point))
            self.on_event("variant_done", index=i + 1, total=len(points), point=point, row=rows[-1])
        return pd.DataFrame(rows)


def finalize_rows(df: pd.DataFrame, cfg: StudyConfig, baseline_row: Optional[dict[str, Any]] = None) -> pd.DataFrame:
    """Apply budgets, acceptance, speed-ups and the slower-than-fp32 flag to raw sweep rows.

    Adds: ``active_budget_mb``, ``violates_{b}mb``, ``device_latency_ms`` (host latency × latency_multiplier,
    the linear clock model), ``latency_budget_ms``, ``accepted``, ``rejected_reason``, ``energy_ci95_j``,
    ``precision_mismatch``, ``speedup_vs_fp32``, ``speedup_vs_baseline``, ``slower_than_fp32``,
    ``slower_than_fp32_p``, ``accuracy_drop``.
    """
    df = df.copy()
    if df.empty:
        return df
    if "error" not in df.columns:
        df["error"] = None
    df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    df["active_budget_mb"] = cfg.active_memory_budget_mb
    for b in cfg.memory_budgets_mb:
        df[f"violates_{b}mb"] = [bool(memory_violations(m, [b])[f"violates_{b}mb"]) if math.isfinite(m) else True
                                 for m in df["memory_mb"].astype(float)]
    df["device_latency_ms"] = df["latency_ms"].astype(float) * cfg.latency_multiplier
    df["latency_budget_ms"] = cfg.latency_budget_ms if cfg.latency_budget_ms is not None else math.nan
    df["energy_ci95_j"] = cfg.power_watts * df["latency_ci95_ms"].astype(float) / 1e3
    df["precision_mismatch"] = [bool(k is not None and not str(k).startswith(p)) for k, p in
                                zip(df["kernel_precision"], df["precision"])]
    reasons, accepted = [], []
    for _, r in df.iterrows():
        why = []
        if r["error"] is not None:
            why.append("error")
        else:
            if not float(r["memory_mb"]) <= cfg.active_memory_budget_mb:
                why.append(f"memory {float(r['memory_mb']):.3f} MB > budget {cfg.active_memory_budget_mb} MB")
            if cfg.latency_budget_ms is not None and not float(r["device_latency_ms"]) <= cfg.latency_budget_ms:
                why.append(f"device latency {float(r['device_latency_ms']):.3f} ms > budget {cfg.latency_budget_ms} ms")
        reasons.append("; ".join(why) or None)
        accepted.append(not why)
    df["accepted"] = accepted
    df["rejected_reason"] = reasons
    base_lat = float(baseline_row["latency_ms"]) if baseline_row else math.nan
    base_acc = float(baseline_row["accuracy"]) if baseline_row else math.nan
    df["speedup_vs_baseline"] = base_lat / df["latency_ms"].astype(float)
    df["accuracy_drop"] = base_acc - df["accuracy"].astype(float)
    sp, slow, slow_p = [], [], []
    for _, r in df.iterrows():
        parent = df[(df["pruning_level"] == r["pruning_level"]) & (df["backend"] == r["backend"])
                    & (df["precision"] == "fp32") & df["error"].isna()]
        if "hostname" in df.columns and r.get("hostname") is not None:  # never compare across nodes
            parent = parent[(parent["hostname"] == r["hostname"]) & (parent["cpu_model"] == r["cpu_model"])]
        if r["error"] is not None or parent.empty:
            sp.append(math.nan), slow.append(False), slow_p.append(math.nan)
            continue
        p = parent.iloc[0]
        sp.append(float(p["latency_ms"]) / float(r["latency_ms"]))
        if r["precision"] == "fp32":
            slow.append(False), slow_p.append(math.nan)
            continue
        ci_above = float(r["latency_ms"]) - float(r["latency_ci95_ms"]) > float(p["latency_ms"]) + float(p["latency_ci95_ms"])
        differs, pval = latency_differs(list(r.get("latency_samples_ms") or []), list(p.get("latency_samples_ms") or []))
        slow.append(bool(ci_above and (differs or not r.get("latency_samples_ms"))))
        slow_p.append(pval)
    df["speedup_vs_fp32"] = sp
    df["slower_than_fp32"] = slow
    df["slower_than_fp32_p"] = slow_p
    first = [c for c in COLUMN_ORDER if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def recommend(df: pd.DataFrame, baseline_accuracy: float, max_accuracy_drop: float) -> tuple[Optional[pd.Series], list[str]]:
    """The lowest-latency accepted row within ``max_accuracy_drop`` of the baseline accuracy.

    Rows whose latency is within the fastest row's 95 % interval, or not significantly different
    from it (``latency_differs``: Mann-Whitney U and a 3 % minimum effect), count as equally fast; among
    them rows whose kernels run the requested precision, then the least run-time memory, then
    the most accurate win.

    Returns:
        (row or None, failed goals) — the failed goals are empty when a row meets every goal.
    """
    ok = df[df["accepted"].astype(bool)] if "accepted" in df else df.iloc[0:0]
    if ok.empty:
        return None, ["no configuration meets the budgets"]
    within = ok[(baseline_accuracy - ok["accuracy"].astype(float)) <= max_accuracy_drop + 1e-12]
    if within.empty:
        return None, [f"no accepted configuration is within max_accuracy_drop={max_accuracy_drop}"]
    fastest = within.sort_values("latency_ms", kind="mergesort").iloc[0]
    # Latencies inside the fastest row's noise band are ties: prefer the smaller, then the more accurate model.
    ci = lambda r: float(r["latency_ci95_ms"]) if math.isfinite(float(r["latency_ci95_ms"])) else 0.0  # noqa: E731
    band = float(fastest["latency_ms"]) + ci(fastest)
    fast_samples = list(fastest.get("latency_samples_ms") or [])

    def tie(r: pd.Series) -> bool:
        if float(r["latency_ms"]) - ci(r) <= band:
            return True
        samples = list(r.get("latency_samples_ms") or [])
        return bool(samples and fast_samples and not latency_differs(fast_samples, samples)[0])

    tied = within[[tie(r) for _, r in within.iterrows()]]
    tied = tied.assign(_mismatch=tied.get("precision_mismatch", False),
                       _runtime_mb=tied.get("runtime_memory_mb", tied["memory_mb"]))
    # Prefer rows whose kernels really run the requested precision, then the least run-time memory.
    best = tied.sort_values(["_mismatch", "_runtime_mb", "memory_mb", "accuracy", "latency_ms"],
                            ascending=[True, True, True, False, True], kind="mergesort").drop(columns=["_mismatch", "_runtime_mb"])
    return best.iloc[0], []


def best_effort(df: pd.DataFrame) -> Optional[pd.Series]:
    """When nothing meets every goal: highest accuracy among memory-accepted rows, else overall (errors excluded)."""
    good = df[df["error"].isna()] if "error" in df else df
    if good.empty:
        return None
    mem_ok = good[good["memory_mb"].astype(float) <= good["active_budget_mb"].astype(float)] \
        if "active_budget_mb" in good else good.iloc[0:0]
    pool = mem_ok if not mem_ok.empty else good
    return pool.sort_values(["accuracy", "latency_ms"], ascending=[False, True], kind="mergesort").iloc[0]


def run_sweep(model: nn.Module, data: DataBundle, cfg: StudyConfig, workdir: str | Path = "outputs",
              store: Optional[StudyStore] = None, baseline_row: Optional[dict[str, Any]] = None,
              **kwargs: Any) -> pd.DataFrame:
    """Run the study grid for a trained model and return one finalized row per variant.

    Args:
        model: trained float baseline.
        data: the ``DataBundle``.
        cfg: study config (pruning_levels × precisions × backends, budgets, measurement settings).
        workdir: folder for checkpoints, ONNX files and per-variant metadata.
        store: optional study store for resume.
        baseline_row: the baseline's row (for speed-ups and accuracy drop); default: the
            unpruned fp32 torch row of the sweep when present.
        **kwargs: passed to ``Sweep`` (model_factory, on_event, should_stop, ort_op_types_to_quantize).
    Returns:
        DataFrame with pruning_level, precision, backend, accepted, error, active_budget_mb, every
        PerfMetrics field, violation flags and the derived columns of ``finalize_rows``.
    """
    raw = Sweep(model, data, cfg, workdir, store, **kwargs).run()
    if baseline_row is None:
        hit = raw[(raw["pruning_level"] == 0.0) & (raw["precision"] == "fp32") & (raw["backend"] == "torch")]
        baseline_row = hit.iloc[0].to_dict() if not hit.empty else None
    return finalize_rows(raw, cfg, baseline_row)


def load_stored_study(folder: str | Path) -> tuple[StudyConfig, list[dict[str, Any]], Optional[dict[str, Any]]]:
    """The config (from ``reproducibility.json``), the stored rows of its grid and the baseline row of a study folder.

    Raises:
        ConfigError: the folder holds no study (missing files).
    """
    from .config import ConfigError, config_from_dict

    out = Path(folder)
    try:
        repro = json.loads((out / "reproducibility.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{str(out)!r} holds no finished study (reproducibility.json): {exc}"]) from None
    if not (out / "study.sqlite").is_file():
        raise ConfigError([f"{str(out)!r} holds no study store (study.sqlite)."])
    cfg = config_from_dict(repro["config"])
    with StudyStore(out / "study.sqlite") as store:
        rows = [r for r in (store.get(point_key(cfg, p)) for p in sweep_points(cfg)) if r is not None]
        base_row = store.get(point_key(cfg, ConfigPoint(0.0, "fp32", "torch")))
    return cfg, rows, base_row
