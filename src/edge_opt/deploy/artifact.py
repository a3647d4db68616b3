"""Artifact stage: the recommended configuration as a deployable ONNX file with a manifest."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..config import StudyConfig
from ..core import atomic, package_versions, sha256_file
from ..inputs import DataBundle
from ..measure import ConfigPoint
from ..study import MANIFEST_COLUMNS, Selection, Sweep
from ..variants import (
    BuildContext,
    Variant,
    build_onnx_file,
    build_variant,
    get_precision,
    onnx_input_name,
    onnx_variant,
    parent_onnx_layers,
)

__all__ = [
    "ARTIFACT_WRITERS",
    "MANIFEST_METRICS",
    "MODEL_FILE",
    "ExportedArtifact",
    "artifact_files",
    "export_artifact",
    "export_recommended",
]

MODEL_FILE = "model.onnx"
MANIFEST_METRICS = MANIFEST_COLUMNS  # columns of the measured row copied into the manifest


@dataclass(frozen=True)
class _Built:
    """What a runtime's artifact writer built in a temporary folder."""

    files: dict[str, Path]  # name in the model folder → built file (the first is the one the runtime loads)
    variant: Variant
    runtime: str
    runtime_version: str
    meta: dict[str, Any]


def _onnx_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    import onnxruntime as ort

    src, meta = build_onnx_file(parent, precision, ctx)
    layers = parent_onnx_layers(parent, ctx) if get_precision(precision).quantized else None
    variant = onnx_variant(
        src, precision, threads, meta, layers=layers, must_be_float=meta.get("requested_float_layers", ())
    )
    return _Built({MODEL_FILE: src}, variant, "onnxruntime", ort.__version__, meta)


def _openvino_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    variant = build_variant("openvino", parent, precision, replace(ctx, threads=threads))
    xml = ctx.workdir / "openvino" / variant.metadata["ir_file"]
    return _Built(
        {"model.xml": xml, "model.bin": xml.with_suffix(".bin")},
        variant,
        "openvino",
        variant.metadata["openvino_version"],
        {"inference_precision_hint": variant.metadata["inference_precision_hint"]},
    )


def _executorch_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    variant = build_variant("executorch", parent, precision, replace(ctx, threads=threads, batch_sizes=(1,)))
    pte = ctx.workdir / "executorch" / variant.metadata["pte_files"]["1"]
    return _Built(
        {"model.pte": pte}, variant, "executorch", variant.metadata["executorch_version"], {"static_batch": 1}
    )


# The runtime a measured backend ships with: its own files when it has them, else ONNX for onnxruntime.
ARTIFACT_WRITERS = {"openvino": _openvino_artifact, "executorch": _executorch_artifact}


def artifact_files(
    parent_model: nn.Module | None, backend: str, precision: str, ctx: BuildContext, threads: int = 1
) -> tuple[dict[str, Path], str, dict[str, Any]]:
    """The files a runtime loads for a point of ``backend`` (in ``ctx.workdir``; the first one is the model file),
    the runtime's name and its build settings (e.g. OpenVINO's precision hint)."""
    writer = ARTIFACT_WRITERS.get(backend, _onnx_artifact)
    built = writer(parent_model, precision, ctx, threads)
    return dict(built.files), built.runtime, dict(built.meta)


def export_artifact(
    out_dir: str | Path,
    parent_model: nn.Module | None,
    row: Mapping[str, Any],
    data: DataBundle,
    ctx: BuildContext,
    *,
    goals_met: bool,
    failed_goals: Sequence[str],
    config_point: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """Write what the row's runtime loads + ``manifest.json`` (+ the validation images and labels, un-normalised).

    A row measured on OpenVINO ships its IR (``model.xml`` + ``model.bin``), on ExecuTorch its ``.pte``
    (static batch 1); torch and ONNX Runtime rows ship ONNX built with ONNX Runtime's tools (the torch
    backend's own int8 kernels do not export to ONNX). The artifact is run by its runtime on the
    validation set: the manifest's ``artifact_accuracy`` is that of the files shipped.

    Returns:
        The manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    precision = str(row["precision"])
    writer = ARTIFACT_WRITERS.get(str(row.get("backend")), _onnx_artifact)
    built = writer(parent_model, precision, ctx, threads)  # in ctx.workdir: the study's build cache is reused
    logits = np.concatenate([built.variant.predict(x) for x, _ in data.val_loader])
    artifact_acc = float((logits.argmax(1) == data.val_labels).mean())
    for name, src in built.files.items():
        atomic.write_with(out / name, _copy_from(src))
    atomic.write_with(out / "validation_inputs.npy", lambda t: np.save(t, data.val_images_raw.astype(np.float32)))
    atomic.write_with(out / "validation_labels.npy", lambda t: np.save(t, data.val_labels.astype(np.int64)))
    manifest = _manifest(out, built, row, data, config_point, int(logits.shape[1]), artifact_acc)
    manifest.update(goals_met=bool(goals_met), failed_goals=list(failed_goals))
    atomic.write_json(out / "manifest.json", manifest)
    return manifest


def _manifest(
    out: Path,
    built: _Built,
    row: Mapping[str, Any],
    data: DataBundle,
    config_point: Mapping[str, Any],
    classes: int,
    artifact_acc: float,
) -> dict[str, Any]:
    model_file = next(iter(built.files))
    c, h, w = data.input_shape
    variant = built.variant
    return {
        "config_hash": config_point.get("config_hash"),
        "runtime": built.runtime,
        "runtime_version": built.runtime_version,
        "model_file": model_file,
        "sha256": sha256_file(out / model_file),
        "files": {name: sha256_file(out / name) for name in built.files},
        "size_bytes": sum((out / name).stat().st_size for name in built.files),
        "config_point": dict(config_point),
        "precision": str(row["precision"]),
        "kernel_precision": variant.kernel_precision,
        "float_layers": variant.metadata.get("float_layers"),
        "int8_mac_fraction": variant.metadata.get("int8_mac_fraction"),
        "measured_backend": row.get("backend"),
        "export": built.meta,
        "metrics": {k: row.get(k) for k in MANIFEST_METRICS},
        "artifact_accuracy": artifact_acc,
        "artifact_accuracy_note": f"accuracy of these files under {built.runtime} on validation_inputs.npy",
        "input": {
            "name": _input_name(out / model_file, built.runtime),
            "shape": ["batch", c, h, w],
            "dtype": "float32",
            "layout": "NCHW",
            "range": "raw values (as validation_inputs.npy); normalisation turns them into the model's input",
        },
        "output": {"shape": ["batch", classes], "dtype": "float32"},
        "normalisation": data.preprocess.as_dict(),
        "model_source": row.get("model_source"),
        "model_sha256": row.get("model_sha256"),
        "num_classes": data.num_classes,
        "data_source": data.source,
        "session_options": variant.metadata.get("session_options", variant.metadata.get("compile_config", {})),
        "package_versions": package_versions(),
        "validation_files": {"inputs": "validation_inputs.npy", "labels": "validation_labels.npy"},
    }


def _copy_from(src: Path) -> Callable[[Path], Any]:
    return lambda target: shutil.copyfile(src, target)


def _input_name(path: Path, runtime: str) -> str:
    return onnx_input_name(path) if runtime == "onnxruntime" else "input"


@dataclass(frozen=True)
class ExportedArtifact:
    """What the artifact stage produced: the config point, the manifest (None when export failed) and why not."""

    point: dict[str, Any]
    manifest: dict[str, Any] | None
    error: str | None = None

    @property
    def path(self) -> str | None:
        """The model file relative to the output folder."""
        return str(Path("model") / self.manifest["model_file"]) if self.manifest else None


def artifact_point(cfg: StudyConfig, point: ConfigPoint, key: str) -> dict[str, Any]:
    """The config point recorded in the manifest (and compared for reuse)."""
    return {
        "pruning_level": point.pruning_level,
        "precision": point.precision,
        "backend": point.backend,
        **({"calibration": point.calibration} if point.calibration else {}),
        "key": key,
        "model": cfg.model.model_dump(),
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "config_hash": cfg.config_hash,
    }


def cached_manifest(
    model_dir: Path, point: Mapping[str, Any], goals_met: bool, failed: Sequence[str]
) -> dict[str, Any] | None:
    """The existing artifact's manifest when it was exported for the same config point and is intact."""
    from ..core import ArtifactError, load_manifest

    try:
        manifest = load_manifest(model_dir)  # checks the SHA-256 of model.onnx
    except (ArtifactError, OSError, ValueError, KeyError):
        return None
    same = json.loads(json.dumps(manifest.get("config_point"))) == json.loads(json.dumps(point, default=str))
    if not same or manifest.get("goals_met") != goals_met or manifest.get("failed_goals") != list(failed):
        return None
    return manifest


def export_recommended(out: Path, selection: Selection, sweep: Sweep) -> ExportedArtifact | None:
    """Stage: export the chosen variant to ``out/model`` (reused when the same point was exported before)."""
    chosen = selection.chosen
    if chosen is None:
        return None
    point = artifact_point(sweep.cfg, chosen.point, chosen.result.key)
    failed = list(selection.failed_goals)
    manifest = cached_manifest(out / "model", point, selection.goals_met, failed)
    if manifest is not None:
        return ExportedArtifact(point, manifest)
    level = chosen.point.pruning_level
    try:
        manifest = export_artifact(
            out / "model",
            sweep.parent(level),
            chosen.row(),
            sweep.data,
            sweep.build_context(level, calibration=chosen.point.calibration),
            goals_met=selection.goals_met,
            failed_goals=failed,
            config_point=point,
            threads=sweep.cfg.threads,
        )
    except Exception as exc:  # noqa: BLE001 — a failed export is reported, the study outputs still land
        return ExportedArtifact(point, None, f"artifact export failed: {type(exc).__name__}: {exc}")
    return ExportedArtifact(point, manifest)
