"""Measure stage: config points, their keys, and the ``Sweep`` that builds and measures them.

Each config point has a stable key (a hash of everything that affects its numbers);
finished points go to the study store as soon as they are measured and are reused on the
next run. A variant that cannot be built or measured, or whose numbers are not finite, is a
``VariantResult`` with ``error`` set. Budgets and comparisons come later
(``edge_opt.study.selection``), so a change of budget never invalidates a measurement.

Executors: ``Sweep.run_point`` = ``lookup`` → ``compute`` → ``commit``. The local executor maps
it over the points here; the Ray executor (``edge_opt.study.executors``) runs ``compute`` in a task
and the same ``commit`` on the driver, so the store, the metadata files and the timings are
the same either way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import BudgetSettings, MeasureSettings, QuantizationConfig, StudyConfig, VariantSettings
from ..core import atomic, batch_map, batch_parts, batch_slice, call_user_code, concat_outputs, output_arrays
from ..inputs import (
    ONNX_CONVERTER,
    DataBundle,
    LossFn,
    ModelSource,
    check_loss,
    file_sha256,
    make_loss,
    onnxslim_label,
    source_digest,
    state_dict_sha256,
    train_model,
)
from ..measure import (
    BenchmarkSettings,
    ConfigPoint,
    MeasurementRecord,
    Scoring,
    VariantResult,
    check_metric_value,
    evaluate_outputs,
    loader_targets,
    measure_variants,
    scoring_for,
)
from ..variants import (
    BACKEND_KINDS,
    BIAS_CORRECTED,
    PRECISIONS,
    QAT_BUILDS,
    BuildContext,
    PruningIneffective,
    PruningReport,
    Variant,
    VariantNotApplicable,
    backend_supports,
    build_variant,
    load_checkpoint,
    prune_model,
    pruning_report,
    save_checkpoint,
)
from .selection import metric_higher_is_better
from .store import StudyStore

__all__ = [
    "MEASURE_VERSION",
    "UNTIMED_PREFIX",
    "BASELINE_POINT",
    "ONNX_BASELINE_POINT",
    "ConfigPoint",
    "PruningUnsupported",
    "baseline_point",
    "Executor",
    "LocalExecutor",
    "StudyInterrupted",
    "Sweep",
    "baseline_fingerprint",
    "benchmark_settings",
    "fine_tune_loss",
    "check_metric",
    "measure_point",
    "metadata_name",
    "model_factory",
    "parent_key",
    "folder_digest",
    "point_key",
    "quantization_choice",
    "runtime_versions",
    "stable_hash",
    "stored_results",
    "sweep_points",
    "train_baseline",
]

# Bump when the measuring code changes what a stored number means: invalidates stored points.
MEASURE_VERSION = "5"
# Store key prefix of a point a search built but did not time (its memory broke the active budget).
UNTIMED_PREFIX = "untimed:"
BASELINE_POINT = ConfigPoint(0.0, "fp32", "torch")
ONNX_BASELINE_POINT = ConfigPoint(0.0, "fp32", "onnxruntime")


def baseline_point(cfg: StudyConfig) -> ConfigPoint:
    """The point speed-ups and accuracy drops refer to: unpruned fp32 on torch (on ONNX Runtime for an ONNX model)."""
    return ONNX_BASELINE_POINT if cfg.model.torch_free else BASELINE_POINT


ONNX_FILE_KINDS = ("onnx", "openvino")  # backends whose unpruned variants are built from the ONNX file itself
TORCH_BUILDS = ("torch", "executorch", "litert")  # backends that build from the PyTorch module (torch.export)


class PruningUnsupported(RuntimeError):
    """Torch-Pruning cannot prune this model (its rows are skipped with the reason)."""


LOSS_NEEDED = (
    "pruned points need a fine-tuning loss: set loss: cross_entropy | mse | bce | package.module:function "
    "(the model arrives trained and the metric is not top1/top5)"
)


def fine_tune_loss(cfg: StudyConfig) -> str | None:
    """The loss pruned models are fine-tuned with: ``loss`` when given; else ``cross_entropy`` for a classifier
    study (metric top1 / top5) and for a model the study trains itself (a registry model, ``epochs`` > 0); else
    None: a model that arrives trained, scored by another metric, has no loss its task is known to train with,
    so its pruned points are skipped (``LOSS_NEEDED``)."""
    if cfg.loss is not None:
        return cfg.loss
    if cfg.metric in ("top1", "top5") or not cfg.model.trained or cfg.train_epochs > 0:
        return "cross_entropy"
    return None


def stable_hash(obj: Any) -> str:
    """16 hex digits of SHA-256 over canonical JSON: the key idiom of the store."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def baseline_fingerprint(cfg: StudyConfig) -> str:
    """Key of the trained baseline: model (and its file's SHA-256), data and training settings."""
    fields: dict[str, Any] = {
        "model": cfg.model.model_dump(exclude_none=True),
        "dataset": cfg.dataset,
        "data_dir": cfg.data_dir if cfg.dataset in ("mnist", "fashion-mnist", "image_folder") else None,
        "image_size": cfg.image_size,
        "val_fraction": cfg.val_fraction,
        "seed": cfg.seed,
        "dataloader_seed": cfg.dataloader_seed,
        "batch_size": cfg.batch_size,
        "epochs": cfg.train_epochs,
        "learning_rate": cfg.learning_rate,
        "train_subset": cfg.train_subset,
        "val_subset": cfg.val_subset,
    }
    extra = {
        "model_file": source_digest(cfg.model),
        "data_file": _data_digest(cfg),
        "layout": cfg.layout,
        "preprocess": cfg.preprocess.model_dump() if cfg.preprocess is not None else None,
        "calibration_data": cfg.calibration_data_path and file_sha256(cfg.calibration_data_path),
        "graph_transform": onnxslim_label() if cfg.model.simplify_graph else None,  # model.simplify
        "loss": cfg.loss if cfg.train_epochs > 0 else None,  # the baseline trained with it
    }
    fields.update({k: v for k, v in extra.items() if v not in (None, "auto", "")})  # earlier keys stay valid
    return stable_hash(fields)


def _data_digest(cfg: StudyConfig) -> str | None:
    if cfg.dataset == "npz" and cfg.data_path and Path(cfg.data_path).is_file():
        return file_sha256(cfg.data_path)
    if cfg.dataset == "image_folder" and Path(cfg.data_dir).is_dir():
        return folder_digest(str(Path(cfg.data_dir).resolve()))
    return None


@functools.lru_cache(maxsize=8)
def folder_digest(folder: str) -> str:
    """Hash of an image folder's file names, sizes and times. Every point key needs it, so it is walked once per
    study: ``run_study`` clears this cache when it starts."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return stable_hash([(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def parent_key(cfg: StudyConfig, level: float) -> str:
    """Key of the pruned (and fine-tuned) float parent of a pruning level."""
    ft = cfg.fine_tune_epochs if level > 0 else 0
    fields: dict[str, Any] = {"baseline": baseline_fingerprint(cfg), "level": level, "fine_tune_epochs": ft}
    if ft and cfg.loss is not None:  # the default loss leaves earlier keys valid
        fields["loss"] = cfg.loss
    return stable_hash(fields)


def point_key(cfg: StudyConfig, point: ConfigPoint) -> str:
    """Key of a config point: everything that affects its measured numbers (the precision adds its own fields)."""
    return stable_hash(
        {
            "parent": parent_key(cfg, point.pruning_level),
            "precision": point.precision,
            "backend": point.backend,
            **_precision_key_fields(cfg, point),
            "threads": cfg.threads,
            "bench": [
                cfg.benchmark_repeats,
                cfg.benchmark_trials,
                cfg.benchmark_warmup,
                cfg.latency_batch_size,
                cfg.benchmark_min_sample_ms,
                cfg.benchmark_target_rel_ci,
                cfg.benchmark_interrupted_factor,
                cfg.benchmark_instances,
            ],
            "power_watts": cfg.power_watts,
            "measure_version": MEASURE_VERSION,
            "runtimes": runtime_versions(),
            **({"onnx_exporter": cfg.onnx_exporter} if _reads_onnx(cfg, point) else {}),
            **({"onnx_converter": ONNX_CONVERTER} if _converted_onnx(cfg, point) else {}),
            **_metric_key_fields(cfg),
        }
    )


def _metric_key_fields(cfg: StudyConfig) -> dict[str, Any]:
    """What a point's stored figures depend on of the metric (nothing for the default top1 study, whose keys stay
    those of earlier releases)."""
    if cfg.metric == "top1" and cfg.postprocess is None and not cfg.metric_drop_relative:
        return {}
    return {
        "metric": [cfg.metric, cfg.metric_higher_is_better, cfg.metric_name, cfg.postprocess, cfg.metric_drop_relative]
    }


def _reads_onnx(cfg: StudyConfig, point: ConfigPoint) -> bool:
    """Whether the point's build starts from the parent's ONNX export (not a torch/ExecuTorch build, and not
    an unpruned ONNX model, which is its own export)."""
    torch_build = BACKEND_KINDS.get(point.backend) in TORCH_BUILDS
    return not torch_build and (cfg.model.kind != "onnx" or point.pruning_level > 0)


def _converted_onnx(cfg: StudyConfig, point: ConfigPoint) -> bool:
    """Whether the point of an ONNX model is built from the PyTorch module converted from the file (the torch and
    ExecuTorch backends, pruned parents): the converter's version is part of its key."""
    return cfg.model.kind == "onnx" and (point.pruning_level > 0 or BACKEND_KINDS.get(point.backend) in TORCH_BUILDS)


def _precision_key_fields(cfg: StudyConfig, point: ConfigPoint) -> dict[str, Any]:
    # an unknown precision has no fields of its own: its build fails and it becomes an error result
    if point.precision not in PRECISIONS:
        return {"calibration": None}
    return PRECISIONS.get(point.precision).key_fields(
        quantization_choice(cfg.part(VariantSettings), point), cfg.metric_budget
    )


def quantization_choice(cfg: VariantSettings, point: ConfigPoint) -> QuantizationConfig:
    """The single int8 option set a point is built with (its ``calibration`` label picks it when the config
    lists several)."""
    choices = cfg.quantization.choices()
    if not point.calibration:
        return choices[0]
    for choice in choices:
        if choice.label == point.calibration:
            return choice
    raise ValueError(
        f"The config point's calibration {point.calibration!r} is not one of {[c.label for c in choices]}."
    )


@functools.lru_cache(maxsize=1)
def runtime_versions() -> tuple[tuple[str, str | None], ...]:
    """Versions whose kernels shape the numbers: a new torch or onnxruntime re-measures every point."""
    from importlib import metadata

    out: list[tuple[str, str | None]] = []
    for name in ("torch", "onnxruntime", "torch-pruning", "onnx"):
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def sweep_points(cfg: VariantSettings) -> list[ConfigPoint]:
    """The study grid in run order (pruning level outermost, so each parent is built once)."""
    choices = [q.label for q in cfg.quantization.choices()] if cfg.quantization.labelled else [""]

    def labels(precision: str) -> list[str]:
        return choices if precision in PRECISIONS and PRECISIONS.get(precision).quantized else [""]

    return [
        ConfigPoint(float(lv), p, b, c)
        for lv in cfg.pruning_levels
        for p in cfg.precisions
        for c in labels(p)
        for b in cfg.backends
    ]


def benchmark_settings(cfg: MeasureSettings) -> BenchmarkSettings:
    """The config's measurement rules."""
    return BenchmarkSettings(
        repeats=cfg.benchmark_repeats,
        trials=cfg.benchmark_trials,
        warmup=cfg.benchmark_warmup,
        latency_batch_size=cfg.latency_batch_size,
        threads=cfg.threads,
        min_sample_ms=cfg.benchmark_min_sample_ms,
        target_rel_ci=cfg.benchmark_target_rel_ci,
        interrupted_factor=cfg.benchmark_interrupted_factor,
        instances=cfg.benchmark_instances,
        max_s=cfg.benchmark_max_s,
    )


class StudyInterrupted(Exception):
    """Raised between variants when a stop was requested (SIGINT/SIGTERM)."""


def measure_point(
    variant: Variant,
    point: ConfigPoint,
    key: str,
    data: DataBundle,
    cfg: StudyConfig,
    scoring: Scoring | None = None,
) -> tuple[VariantResult, dict[str, Any]]:
    """Measure one built variant (``scoring``: the study's metric with its reference, when not top1); returns the
    result and its metadata document."""
    rec = measure_variants(
        [variant],
        data.val_loader,
        benchmark_settings(cfg.part(MeasureSettings)),
        power_watts=cfg.power_watts,
        scoring=scoring,
    )[0]
    return point_result(variant, rec, point, key, cfg)


def _source_outputs(source: ModelSource, data: DataBundle) -> list[np.ndarray]:
    """The input model's outputs on the validation split, run as given (an ONNX file in a plain ONNX Runtime
    session, a module in fp32 torch): no build, no file written."""
    xs = [b[0] for b in data.val_loader]
    if source.onnx_path is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feeds = [dict(zip(names, (p.numpy() for p in batch_parts(x)), strict=True)) for x in xs]
        return concat_outputs([tuple(session.run(None, f)) for f in feeds])
    if source.module is None:
        raise ValueError(f"The model ({source.label}) has neither an ONNX file nor a PyTorch module to run.")
    module = source.module.eval()
    with torch.inference_mode():
        out = [call_user_code(f"The model ({source.label})", module, *_float_parts(x)) for x in xs]
    return concat_outputs([batch_map(o, lambda t: t.detach().float().numpy()) for o in out])


def _float_parts(x: Any) -> tuple[torch.Tensor, ...]:
    """A batch as a module's arguments: float inputs as float32, integer inputs as they are."""
    return tuple(p.float() if p.is_floating_point() else p for p in batch_parts(x))


def check_metric(cfg: StudyConfig, data: DataBundle, source: ModelSource) -> float | None:
    """The study's metric on the input model as given, checked before anything is built or written: a callable
    that does not import, raises, or returns a non-finite or non-scalar value fails here. None for top1.

    Raises:
        MetricError, UserCodeError, CallableImportError, UnknownNameError: naming the metric and the problem.
    """
    scoring = scoring_for(cfg.part(BudgetSettings), [cfg.config_dir])
    if scoring.is_top1:
        return None
    outputs = _source_outputs(source, data)
    scoring = scoring.with_reference(outputs)
    return check_metric_value(scoring.score(outputs, loader_targets(data.val_loader)), scoring.metric)


def point_result(
    variant: Variant, rec: MeasurementRecord, point: ConfigPoint, key: str, cfg: StudyConfig
) -> tuple[VariantResult, dict[str, Any]]:
    """The result and metadata document of a measured variant (non-finite figures make it an error row)."""
    m = rec.metrics
    scored = ("metric", m.metric) if rec.metric_name is not None else ("accuracy", m.accuracy)
    bad = [
        c
        for c, v in (
            scored,
            ("latency_ms", m.latency_ms),
            ("memory_mb", m.memory_mb),
            ("energy_proxy_j", m.energy_proxy_j),
        )
        if not math.isfinite(v)
    ]
    if not rec.logits_finite:
        bad.append("logits")
    result = VariantResult(
        point=point,
        key=key,
        measurement=rec,
        error=f"non-finite measurement: {', '.join(bad)}" if bad else None,
        runtime_parameter_bytes=variant.metadata.get("runtime_parameter_bytes", rec.parameter_bytes),
        threads=cfg.threads,
        float_layers=_tuple_or_none(variant.metadata.get("float_layers")),
        int8_mac_fraction=variant.metadata.get("int8_mac_fraction"),
        flash_bytes=variant.metadata.get("flash_bytes"),
        peak_ram_bytes=variant.metadata.get("peak_ram_bytes"),
    )
    meta = {
        "config_point": asdict(point),
        "key": key,
        "kernel_precision": rec.kernel_precision,
        "metadata": variant.metadata,
        "environment": rec.environment,
    }
    return result, meta


def _tuple_or_none(v: Any) -> tuple[str, ...] | None:
    return tuple(v) if v is not None else None


def metadata_name(point: ConfigPoint) -> str:
    """File name of a point's metadata document under ``variants/``."""
    calib = "_" + point.calibration.replace("/", "_") if point.calibration else ""
    return f"{point.backend}_{point.precision}_p{point.pruning_level:g}{calib}.json"


EventFn = Callable[..., None]


class Sweep:
    """Builds and measures config points for a trained baseline, reusing stored points and cached parents.

    Args:
        baseline: the trained float model.
        data: loaders and shapes.
        cfg: the study config.
        workdir: output folder (checkpoints/, onnx/, variants/ go below it).
        store: where finished points are committed (None: keep in memory only).
        model_factory: builds a fresh unpruned model (to reload pruned checkpoints).
        on_event: progress callback ``on_event(kind, **info)``.
        should_stop: checked between variants; True raises ``StudyInterrupted``.
        ort_op_types_to_quantize: restrict ORT's int8 op types (tests force an unquantized graph).
    """

    def __init__(
        self,
        baseline: nn.Module | None,
        data: DataBundle,
        cfg: StudyConfig,
        workdir: str | Path,
        store: StudyStore | None = None,
        model_factory: Callable[[], nn.Module] | None = None,
        on_event: EventFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        ort_op_types_to_quantize: Sequence[str] | None = None,
        source: ModelSource | None = None,
    ) -> None:
        self.baseline, self.data, self.cfg, self.source = baseline, data, cfg, source
        self.workdir = Path(workdir)
        self.store = store
        self.model_factory = model_factory
        self.on_event = on_event or (lambda kind, **info: None)
        self.should_stop = should_stop or (lambda: False)
        self.ort_op_types = tuple(ort_op_types_to_quantize) if ort_op_types_to_quantize is not None else None
        self.reused = 0
        self.computed = 0
        self.timings = {"pruning_and_fine_tuning": 0.0, "variant_building": 0.0, "measurement": 0.0}
        self._parents: dict[float, nn.Module | None] = {}
        self._pruning_errors: dict[float, str] = {}
        self.pruning: dict[float, PruningReport] = {}  # what each level really removed
        self._calibration: dict[int, list[torch.Tensor]] = {}
        self.calibration = self.calibration_for(cfg.quantization.choices()[0].batches)
        self.example = batch_slice(next(iter(data.val_loader))[0], 0, 2)
        self._validation: tuple[torch.Tensor, torch.Tensor] | None = None
        self._scoring: Scoring | None = None
        self._loss_fn: LossFn | None = None
        self.baseline_metric: float | None = None  # the metric of the fp32 baseline (prepare_scoring)
        self.export_cache: dict[Any, Any] = {}  # shared ONNX exports per parent (sweep, artifact, deployment)
        if source is not None and source.onnx_path is not None:  # an ONNX model is its own fp32 export
            self.export_cache[("onnx_fp32", parent_key(cfg, 0.0))] = source.onnx_path
            self.export_cache[("onnx_input", parent_key(cfg, 0.0))] = True  # not exported by torch: the user's
        self.model_source = source.label if source is not None else f"registry:{cfg.model.name}"
        self.graph_transform = source.graph_label if source is not None else ""
        self.model_sha256 = (
            source.file_sha256
            if source is not None and source.file_sha256
            else state_dict_sha256(baseline)
            if baseline is not None
            else None
        )

    def skip_reason(self, point: ConfigPoint) -> str | None:
        """Why ``point`` does not apply to this model (None when it does)."""
        if self.source is not None and self.source.torch_free:
            why = self.source.why_torch_free
            if BACKEND_KINDS.get(point.backend) == "torch":
                return f"the torch backends need a PyTorch model ({why})"
            if BACKEND_KINDS.get(point.backend) in ("executorch", "litert"):
                return f"the {point.backend} backend needs a PyTorch model for torch.export ({why})"
            if point.pruning_level > 0:
                return f"pruning needs a PyTorch model ({why})"
        if point.pruning_level > 0 and self.fine_tunes and fine_tune_loss(self.cfg) is None:
            return LOSS_NEEDED
        if (
            point.calibration
            and BACKEND_KINDS.get(point.backend) != "onnx"
            and quantization_choice(self.cfg.part(VariantSettings), point).method
            != self.cfg.quantization.choices()[0].method
        ):
            return (
                f"{point.backend} int8 calibrates with its own observers whatever the calibration_method; the "
                "method choices change onnxruntime builds only (it runs the first listed method's points)"
            )
        recovery = self._recovery_skip(point)
        if recovery is not None:
            return recovery
        if (
            self.cfg.model.kind == "exported"
            and BACKEND_KINDS.get(point.backend) == "torch"
            and point.precision in PRECISIONS
            and PRECISIONS.get(point.precision).quantized
        ):
            return (
                "torch.ao int8 quantization needs the model's nn modules and an exported program has none "
                "(ONNX Runtime int8 runs)"
            )
        if (
            point.precision in PRECISIONS
            and point.backend in BACKEND_KINDS
            and not backend_supports(point.backend, point.precision)
        ):
            able = [p for p in PRECISIONS.names() if backend_supports(point.backend, p)]
            return f"backend {point.backend!r} does not run precision {point.precision!r} (it runs {able})"
        return None

    def _recovery_skip(self, point: ConfigPoint) -> str | None:
        """Why the point's ``quantization.recovery`` does not apply to its precision and backend (None when it
        does)."""
        if not point.calibration or point.precision not in PRECISIONS:
            return None
        recovery = quantization_choice(self.cfg.part(VariantSettings), point).recovery_method
        kind = BACKEND_KINDS.get(point.backend)
        if recovery == "qat" and (point.precision, kind) not in QAT_BUILDS:
            return (
                "recovery 'qat' (PT2E) lowers to int8 kernels on executorch (XNNPACK) only here: torch.ao FX int8 "
                "cannot take a PT2E graph, and the QDQ ONNX export of a PT2E graph is not built"
            )
        if recovery == "qat" and self.data.train_loader is None:
            return "recovery 'qat' needs a training split (x_train, y_train) to train on"
        if recovery == "qat" and fine_tune_loss(self.cfg) is None:
            return "recovery 'qat' needs a training loss: set loss: cross_entropy | mse | bce | package.module:function"
        if recovery == "bias_correction" and (point.precision, BACKEND_KINDS.get(point.backend)) not in BIAS_CORRECTED:
            return (
                "recovery 'bias_correction' is NNCF's (int8 on onnxruntime and openvino); torch.ao FX, ExecuTorch and "
                "int8_mixed builds have no bias correction here"
            )
        return None

    @property
    def fine_tunes(self) -> bool:
        """Pruned models are fine-tuned (``fine_tune_epochs`` > 0 and the data has a training split)."""
        return bool(self.cfg.fine_tune_epochs) and self.data.train_loader is not None

    def fine_tune_loss_fn(self) -> LossFn | None:
        """The fine-tuning loss as a function (made once; None when pruned points are not fine-tuned)."""
        spec = fine_tune_loss(self.cfg)
        if spec is None or not self.fine_tunes:
            return None
        if self._loss_fn is None:
            self._loss_fn = make_loss(spec, [self.cfg.config_dir])
        return self._loss_fn

    def check_fine_tuning(self) -> None:
        """Before any variant is built: a given ``loss`` that does not import, or cannot train the baseline on the
        first training batch, is an error (``LossError``, ``CallableImportError``, ``UserCodeError``). The default
        loss is not run here, so a study without ``loss`` reads its loaders exactly as before."""
        loss_fn, loader = self.fine_tune_loss_fn(), self.data.train_loader
        if self.cfg.loss is None or loss_fn is None or loader is None or self.baseline is None:
            return
        if any(lv > 0 for lv in self.cfg.pruning_levels):
            check_loss(self.baseline, loader, loss_fn, str(fine_tune_loss(self.cfg)))

    @property
    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole validation split as (inputs, labels), made on first use (searching builds need it)."""
        if self._validation is None:
            xs, ys = zip(*[(b[0], b[1]) for b in self.data.val_loader])
            parts = [batch_parts(x) for x in xs]
            joined = tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
            self._validation = (joined[0] if len(joined) == 1 else joined, torch.cat(ys))  # type: ignore[assignment]
        return self._validation  # type: ignore[return-value]

    @property
    def scoring(self) -> Scoring | None:
        """The study's metric with the fp32 baseline's outputs as its reference (None for the default top1 study);
        made on first use by ``prepare_scoring``."""
        if self._scoring is None:
            self.prepare_scoring()
        return None if self._scoring is None or self._scoring.is_top1 else self._scoring

    def prepare_scoring(self) -> float | None:
        """Run the fp32 baseline on the validation split, keep its outputs as the metric's reference and check the
        metric's value on them (before any variant is built). Returns that value (None for top1).

        Raises:
            MetricError, UserCodeError, CallableImportError: the metric cannot score the baseline.
        """
        scoring = scoring_for(self.cfg.part(BudgetSettings), [self.cfg.config_dir])
        self._scoring = scoring  # set first: building the baseline asks for it
        if scoring.is_top1 and not self.cfg.metric_drop_relative:
            return None
        self.baseline_metric = math.nan  # being measured (a build context made meanwhile does not wait for it)
        built = self._build(baseline_point(self.cfg))
        if isinstance(built, VariantResult):
            raise ValueError(f"The fp32 baseline, the metric's reference, could not be built: {built.error}")
        outputs, targets, _ = evaluate_outputs(built[0], self.data.val_loader)
        self._scoring = scoring.with_reference(outputs)
        self.baseline_metric = check_metric_value(self._scoring.score(outputs, targets), scoring.metric)
        return None if scoring.is_top1 else self.baseline_metric

    def _search_budget(self) -> float:
        """The absolute budget of a searching build (int8_mixed): ``max_metric_drop`` × |the baseline's metric|
        when the budget is relative."""
        if not self.cfg.metric_drop_relative:
            return self.cfg.metric_budget
        if self.baseline_metric is None:
            self.prepare_scoring()
        return self.cfg.metric_budget * abs(self.baseline_metric if self.baseline_metric is not None else math.nan)

    def _validation_metric(self, logits: np.ndarray) -> float:
        """The study's metric of a searching build's outputs on the whole validation split (``validation``)."""
        scoring = self.scoring
        if scoring is None:
            raise ValueError("the study scores top1: a searching build judges the accuracy itself")
        return scoring.score(output_arrays(logits), loader_targets(self.data.val_loader))

    def calibration_for(self, batches: int) -> list[torch.Tensor]:
        """The first ``batches`` calibration batches (memoised)."""
        if batches not in self._calibration:
            self._calibration[batches] = self.data.calibration_batches(batches)
        return self._calibration[batches]

    def build_context(
        self, level: float, workdir: Path | None = None, threads: int | None = None, calibration: str = ""
    ) -> BuildContext:
        """The one place a ``BuildContext`` is made from the config (``calibration``: a point's choice label)."""
        q = quantization_choice(self.cfg.part(VariantSettings), ConfigPoint(level, "", "", calibration))
        return BuildContext(
            calibration=self.calibration_for(q.batches),
            example_input=self.example,
            workdir=workdir if workdir is not None else self.workdir / "onnx",
            parent_key=parent_key(self.cfg, level),
            quantization=q,
            threads=threads if threads is not None else self.cfg.threads,
            ort_op_types_to_quantize=self.ort_op_types,
            cache=self.export_cache,
            validation=self.validation,
            max_accuracy_drop=self._search_budget(),
            metric=None if self.scoring is None else self._validation_metric,
            metric_higher_is_better=metric_higher_is_better(self.cfg),
            metric_label=json.dumps(_metric_key_fields(self.cfg), sort_keys=True),
            max_float_mac_fraction=self.cfg.quantization.max_float_mac_fraction,
            sensitivity_dir=self.workdir / "sensitivity",
            batch_sizes=tuple(sorted({self.cfg.latency_batch_size, self.cfg.batch_size})),
            onnx_exporter=self.cfg.onnx_exporter,
            **self._qat_settings(q),
        )

    def _qat_settings(self, q: QuantizationConfig) -> dict[str, Any]:
        """What quantization-aware training reads (``recovery: qat``): the training split, the study's loss, step
        size and seed (nothing for the other recoveries, so their loss is never made)."""
        if q.recovery != "qat":
            return {}
        spec = fine_tune_loss(self.cfg)
        if spec is not None and self._loss_fn is None:
            self._loss_fn = make_loss(spec, [self.cfg.config_dir])
        return {
            "train_loader": self.data.train_loader,
            "loss": self._loss_fn,
            "learning_rate": self.cfg.learning_rate,
            "seed": self.cfg.seed,
        }

    def adopt_parent(self, level: float, model: nn.Module | None) -> None:
        """Use ``model`` as the float parent of ``level`` (a Ray task receives it from the driver)."""
        self._parents[level] = model

    def parent(self, level: float) -> nn.Module | None:
        """Pruned + fine-tuned float parent of ``level`` (from the checkpoint cache when present)."""
        if level in self._parents:
            return self._parents[level]
        if level in self._pruning_errors:
            raise PruningIneffective(self._pruning_errors[level])
        key = parent_key(self.cfg, level)
        ckpt = self.workdir / "checkpoints" / f"pruned_{key}.pt"
        if level == 0.0 or self.baseline is None:
            model = self.baseline
        elif ckpt.exists() and self.model_factory is not None:
            model = self._verified(level, load_checkpoint(ckpt, self.model_factory())[0])
        else:
            model = self._prune(level)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model, ckpt, {"pruning_level": level, "key": key})
        if model is not None and self.baseline is not None and level not in self.pruning:
            self.pruning[level] = pruning_report(self.baseline, model, level)
        self._parents[level] = model
        return model

    def _verified(self, level: float, model: nn.Module) -> nn.Module:
        """The pruned model when it really got ``level`` (else ``PruningIneffective``, remembered for the level)."""
        if self.baseline is None:
            return model
        report = pruning_report(self.baseline, model, level)
        problem = report.problem()
        if problem is not None:
            self._pruning_errors[level] = problem
            raise PruningIneffective(problem)
        self.pruning[level] = report
        return model

    def _pruning_info(self, level: float) -> dict[str, Any] | None:
        report = self.pruning.get(level)
        if report is None:
            return None
        return {"param_fraction": report.param_fraction, "kept_channels": report.label()}

    def _prune(self, level: float) -> nn.Module:
        self.on_event("prune", level=level)
        if self.baseline is None:
            why = self.source.why_torch_free if self.source is not None else "the model is an ONNX file"
            raise PruningUnsupported(f"pruning needs a PyTorch model ({why})")
        try:
            model = self._verified(level, prune_model(self.baseline, level, self.example))  # before fine-tuning
        except PruningIneffective:
            raise
        except Exception as exc:
            if self.cfg.model.kind == "name":
                raise
            if self.cfg.model.kind == "exported":
                raise PruningUnsupported(
                    "Torch-Pruning cannot trace this exported program: torch.export flattens "
                    "the nn.Conv2d / nn.Linear modules it prunes"
                ) from None
            raise PruningUnsupported(
                f"Torch-Pruning cannot prune this model ({type(exc).__name__}: {str(exc)[:300]})"
            ) from None
        loss_fn = self.fine_tune_loss_fn()
        if loss_fn is not None and self.data.train_loader is not None:
            train_model(
                model,
                self.data.train_loader,
                epochs=self.cfg.fine_tune_epochs,
                learning_rate=self.cfg.learning_rate,
                seed=self.cfg.seed,
                should_stop=self.should_stop,
                loss=loss_fn,
            )
        return model

    def lookup(self, point: ConfigPoint) -> VariantResult | None:
        """The stored result of ``point`` (counted as reused), or None."""
        doc = self.store.get(point_key(self.cfg, point)) if self.store is not None else None
        if doc is None:
            return None
        self.reused += 1
        return VariantResult.from_dict(doc)

    def compute(self, point: ConfigPoint) -> tuple[VariantResult, dict[str, Any]]:
        """Build and measure ``point`` (nothing stored); any failure is an error result, never a crash."""
        return self.compute_group([point])[0]

    def compute_group(
        self,
        points: Sequence[ConfigPoint],
        announce: Callable[[ConfigPoint], None] | None = None,
    ) -> list[tuple[VariantResult, dict[str, Any]]]:
        """Build every point (``announce(point)`` just before each build), then measure the built variants
        together (interleaved rounds, see ``measure_variants``); a point that cannot be built or measured is an
        error/skip result."""
        built = []
        for p in points:
            if announce is not None:
                announce(p)
            built.append(self._build(p))
        ready = [(p, b) for p, b in zip(points, built, strict=True) if isinstance(b, tuple)]
        if len(ready) > 1:
            self.on_event("log", message=f"measuring {len(ready)} built variants together in interleaved rounds")
        t0 = time.perf_counter()
        measured = self._measure_together([v for _, (v, _) in ready], [p for p, _ in ready])
        share = (time.perf_counter() - t0) / max(len(ready), 1)
        out: dict[ConfigPoint, tuple[VariantResult, dict[str, Any]]] = {}
        for (p, (_, timings)), (result, meta) in zip(ready, measured, strict=True):
            info = self._info(p) | (
                {"timings": {**timings, "measurement": share}, "pruning": self._pruning_info(p.pruning_level)}
                if meta
                else {}
            )
            out[p] = (result.with_info(**info), meta)
        return [out[p] if isinstance(b, tuple) else (b, {}) for p, b in zip(points, built, strict=True)]

    def _info(self, point: ConfigPoint) -> dict[str, Any]:
        return {
            "threads": self.cfg.threads,
            "model_source": self.model_source,
            "model_sha256": self.model_sha256,
            "graph_transform": self._graph_label(point),
        }

    def _graph_label(self, point: ConfigPoint) -> str:
        """The graph a row was built from: an ONNX model's normalised (or as-given) graph for its unpruned ONNX
        backends; for the points served by the module converted from it, that conversion."""
        source = self.source
        if source is None or source.kind != "onnx" or source.conversion is None:
            return self.graph_transform
        if point.pruning_level == 0.0 and BACKEND_KINDS.get(point.backend) in ONNX_FILE_KINDS:
            return self.graph_transform
        return f"torch.fx ({source.conversion.converter})"

    def _build(self, point: ConfigPoint) -> tuple[Variant, dict[str, float]] | VariantResult:
        key = point_key(self.cfg, point)
        reason = self.skip_reason(point)
        if reason is not None:
            return VariantResult.skip(point, key, reason, **self._info(point))
        try:
            t0 = time.perf_counter()
            model = self.parent(point.pruning_level)
            t1 = time.perf_counter()
            variant = build_variant(
                point.backend,
                model,
                point.precision,
                self.build_context(point.pruning_level, calibration=point.calibration),
            )
            return variant, {"pruning_and_fine_tuning": t1 - t0, "variant_building": time.perf_counter() - t1}
        except (PruningUnsupported, VariantNotApplicable) as exc:
            return VariantResult.skip(point, key, str(exc), **self._info(point))
        except Exception as exc:  # noqa: BLE001 — any failure becomes an error row, never a crash or a fake number
            return self._failed(point, exc)

    def _failed(self, point: ConfigPoint, exc: BaseException) -> VariantResult:
        return VariantResult.failed(
            point,
            point_key(self.cfg, point),
            f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=8),
            **self._info(point),
        )

    def _measure_together(
        self, variants: list[Variant], points: list[ConfigPoint]
    ) -> list[tuple[VariantResult, dict[str, Any]]]:
        """Measure the variants together; when that fails, each alone, so only the failing one is an error row."""
        if not variants:
            return []
        try:
            recs = measure_variants(
                variants,
                self.data.val_loader,
                benchmark_settings(self.cfg.part(MeasureSettings)),
                power_watts=self.cfg.power_watts,
                scoring=self.scoring,
            )
            return [
                point_result(v, r, p, point_key(self.cfg, p), self.cfg)
                for v, r, p in zip(variants, recs, points, strict=True)
            ]
        except Exception:  # noqa: BLE001 — isolate the variant that fails
            if len(variants) == 1:
                return [(self._failed(points[0], sys.exc_info()[1] or RuntimeError("measurement failed")), {})]
            return [m for v, p in zip(variants, points, strict=True) for m in self._measure_together([v], [p])]

    def commit(self, result: VariantResult, meta: dict[str, Any]) -> VariantResult:
        """Write the metadata file, store the result and count its timings (the same for every executor)."""
        if meta:
            name = metadata_name(result.point)
            atomic.write_json(self.workdir / "variants" / name, meta)
            result = result.with_info(metadata_file=str(Path("variants") / name))
        for stage, seconds in result.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.computed += 1
        if self.store is not None:
            self.store.put(result.key, result.to_dict())
        return result

    def run_point_within(self, point: ConfigPoint, memory_budget_mb: float | None) -> tuple[VariantResult, str]:
        """Stored result of ``point``, or build it and measure it only when its runtime memory fits
        ``memory_budget_mb``: a point over the budget is recorded (under ``UNTIMED_PREFIX``, so a grid still
        measures it) as skipped without being timed. Returns the result and how it was obtained: "stored",
        "measured", "untimed" (built, over the budget) or "not built" (skipped or failed while building)."""
        hit = self.lookup(point)
        if hit is None and self.store is not None:
            doc = self.store.get(UNTIMED_PREFIX + point_key(self.cfg, point))
            hit = VariantResult.from_dict(doc) if doc is not None else None
        if hit is not None:
            return hit, "stored"
        built = self._build(point)
        if isinstance(built, VariantResult):
            return self.commit(built, {}), "not built"
        variant, timings = built
        memory_mb = variant.metadata.get("runtime_parameter_bytes", variant.parameter_bytes) / 1e6
        if memory_budget_mb is not None and memory_mb > memory_budget_mb:
            result = VariantResult.skip(
                point,
                point_key(self.cfg, point),
                f"infeasible: runtime memory {memory_mb:.3f} MB breaks the active budget "
                f"{memory_budget_mb:g} MB (built, not timed)",
                timings={**timings, "measurement": 0.0},
                **self._info(point),
            )
            if self.store is not None:
                self.store.put(UNTIMED_PREFIX + result.key, result.to_dict(), kind="untimed")
            self.computed += 1
            return result, "untimed"
        t0 = time.perf_counter()
        result, meta = self._measure_together([variant], [point])[0]
        timings = {**timings, "measurement": time.perf_counter() - t0}
        info = self._info(point) | (
            {"timings": timings, "pruning": self._pruning_info(point.pruning_level)} if meta else {}
        )
        return self.commit(result.with_info(**info), meta), "measured"

    def run_point(self, point: ConfigPoint) -> VariantResult:
        """Stored result of ``point`` or a freshly built and measured one (committed to the store)."""
        hit = self.lookup(point)
        return hit if hit is not None else self.commit(*self.compute(point))

    def run(self, points: Sequence[ConfigPoint] | None = None) -> list[VariantResult]:
        """Run every point (default: the config's grid) with the local executor."""
        return LocalExecutor().map(
            self, list(points) if points is not None else sweep_points(self.cfg.part(VariantSettings))
        )


class Executor(Protocol):
    """Maps ``Sweep.run_point`` (lookup → compute → commit) over config points."""

    def map(self, sweep: Sweep, points: Sequence[ConfigPoint]) -> list[VariantResult]: ...


class LocalExecutor:
    """One point at a time in this process, so measurements never share cores."""

    def map(self, sweep: Sweep, points: Sequence[ConfigPoint]) -> list[VariantResult]:
        """Run the points in order, in groups of ``benchmark_group_size``: a group's new points are built, then
        measured together in interleaved rounds (host drift spreads over all of them), then stored; stops between
        groups when ``sweep.should_stop()`` (a crash loses at most one group's measurement)."""
        out: list[VariantResult] = []
        size = sweep.cfg.benchmark_group_size
        for start in range(0, len(points), size):
            group = list(points[start : start + size])
            if sweep.should_stop():
                raise StudyInterrupted(f"stopped after {len(out)} of {len(points)} variants")
            hits = {p: sweep.lookup(p) for p in group}
            todo = [p for p in group if hits[p] is None]

            def announce(p: ConfigPoint, first: int = start, members: list[ConfigPoint] = group) -> None:
                # the progress line names the variant being built
                sweep.on_event("variant", index=first + members.index(p) + 1, total=len(points), point=p)

            computed = dict(zip(todo, sweep.compute_group(todo, announce), strict=True)) if todo else {}
            for p in group:
                hit = hits[p]
                out.append(hit if hit is not None else sweep.commit(*computed[p]))
                sweep.on_event("variant_done", index=len(out), total=len(points), point=p, row=out[-1].row())
        return out


def model_factory(
    cfg: StudyConfig, data: DataBundle, source: ModelSource | None = None
) -> Callable[[], nn.Module] | None:
    """Builds a fresh, unpruned model of the study (checkpoints are loaded into it); None for an ONNX model."""
    if source is not None:
        return source.rebuild
    from ..inputs import create_model

    name = str(cfg.model.name)
    return lambda: create_model(name, data.input_shape, data.num_classes, **cfg.model.params)


def train_baseline(
    cfg: StudyConfig,
    data: DataBundle,
    out: Path,
    device: Any,
    on_event: EventFn,
    source: ModelSource | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[nn.Module | None, bool]:
    """Stage: the float baseline — the given model, trained for ``train_epochs`` (0 for a model that arrives
    trained), from its checkpoint when one exists; returns (model, reused). For an ONNX model: the module converted
    from it as it is (the file is the model: never trained), or None."""
    import torch

    if source is not None and (source.module is None or source.kind == "onnx"):
        return source.module, False
    model: nn.Module | None = None
    factory = model_factory(cfg, data, source)
    ckpt = out / "checkpoints" / f"baseline_{baseline_fingerprint(cfg)}.pt"
    if ckpt.exists() and factory is not None:
        model, _ = load_checkpoint(ckpt, factory())
        return model, True
    torch.manual_seed(cfg.seed)  # a model the study trains starts from seeded weights
    if source is not None and source.trained:
        model = source.module
    elif factory is not None:
        model = factory()
    if model is None:
        return None, False
    if cfg.train_epochs == 0:
        return model.eval(), False
    if data.train_loader is None:
        raise ValueError(
            f"The 'epochs' parameter asks for {cfg.train_epochs} epochs of training but the data has no training split."
        )
    on_event("stage", name="baseline training", detail=f"{cfg.model.kind} model, {cfg.train_epochs} epochs")
    train_model(
        model,
        data.train_loader,
        epochs=cfg.train_epochs,
        learning_rate=cfg.learning_rate,
        device=device,
        seed=cfg.seed,
        should_stop=should_stop,
        loss=make_loss(cfg.loss, [cfg.config_dir]) if cfg.loss is not None else None,
    )
    model.to("cpu")
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, ckpt, {"fingerprint": baseline_fingerprint(cfg)})
    return model, False


def stored_results(
    store: StudyStore, cfg: StudyConfig, points: Sequence[ConfigPoint], untimed: bool = False
) -> tuple[list[VariantResult], VariantResult | None]:
    """The stored results of ``points`` in grid order (missing ones left out) and the stored baseline;
    ``untimed``: a point a search built but did not time counts too."""

    def get(p: ConfigPoint) -> VariantResult | None:
        doc = store.get(point_key(cfg, p))
        if doc is None and untimed:
            doc = store.get(UNTIMED_PREFIX + point_key(cfg, p))
        return VariantResult.from_dict(doc) if doc is not None else None

    return [r for r in (get(p) for p in points) if r is not None], get(baseline_point(cfg))
