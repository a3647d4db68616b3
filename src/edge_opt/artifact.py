"""Artifact stage: the recommended configuration as a deployable ONNX file with a manifest."""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from . import atomic
from .config import StudyConfig
from .data import DataBundle
from .env import package_versions
from .results import ConfigPoint
from .runner import Sweep
from .runtime import sha256_file
from .selection import MANIFEST_COLUMNS, Selection
from .variants.backends import BuildContext, build_onnx_file, onnx_variant, parent_onnx_layers
from .variants.onnx_tools import onnx_input_name
from .variants.precisions import get_precision

__all__ = ["MANIFEST_METRICS", "MODEL_FILE", "ExportedArtifact", "export_artifact", "export_recommended"]

MODEL_FILE = "model.onnx"
MANIFEST_METRICS = MANIFEST_COLUMNS  # columns of the measured row copied into the manifest


def export_artifact(out_dir: str | Path, parent_model: nn.Module | None, row: Mapping[str, Any], data: DataBundle,
                    ctx: BuildContext, *, goals_met: bool, failed_goals: Sequence[str], config_point: Mapping[str, Any],
                    threads: int = 1) -> dict[str, Any]:
    """Write ``model.onnx`` + ``manifest.json`` (+ the validation images and labels, un-normalised).

    The ONNX graph is built at the row's precision with ONNX Runtime's tools (the torch backend's
    own int8 kernels do not export to ONNX), then run with onnxruntime on the validation set:
    the manifest's ``artifact_accuracy`` is that of the file shipped, not of the measured row.

    Returns:
        The manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    precision = str(row["precision"])
    with tempfile.TemporaryDirectory(dir=out, prefix=atomic.TEMP_PREFIX) as tmp:
        build_ctx = replace(ctx, workdir=Path(tmp))
        src, meta = build_onnx_file(parent_model, precision, build_ctx)
        layers = parent_onnx_layers(parent_model, build_ctx) if get_precision(precision).quantized else None
        variant = onnx_variant(src, precision, threads, meta, layers=layers,
                               must_be_float=meta.get("requested_float_layers", ()))
        logits = np.concatenate([variant.predict(x) for x, _ in data.val_loader])
        artifact_acc = float((logits.argmax(1) == data.val_labels).mean())
        atomic.write_with(out / MODEL_FILE, lambda t: shutil.copyfile(src, t))
    atomic.write_with(out / "validation_inputs.npy", lambda t: np.save(t, data.val_images_raw.astype(np.float32)))
    atomic.write_with(out / "validation_labels.npy", lambda t: np.save(t, data.val_labels.astype(np.int64)))
    c, h, w = data.input_shape
    manifest = {
        "config_hash": config_point.get("config_hash"),
        "model_file": MODEL_FILE,
        "sha256": sha256_file(out / MODEL_FILE),
        "size_bytes": (out / MODEL_FILE).stat().st_size,
        "config_point": dict(config_point),
        "precision": precision,
        "kernel_precision": variant.kernel_precision,
        "float_layers": variant.metadata.get("float_layers"),
        "int8_mac_fraction": variant.metadata.get("int8_mac_fraction"),
        "measured_backend": row.get("backend"),
        "export": meta,
        "metrics": {k: row.get(k) for k in MANIFEST_METRICS},
        "artifact_accuracy": artifact_acc,
        "artifact_accuracy_note": "accuracy of this ONNX file under onnxruntime on validation_inputs.npy",
        "goals_met": bool(goals_met),
        "failed_goals": list(failed_goals),
        "input": {"name": onnx_input_name(out / MODEL_FILE), "shape": ["batch", c, h, w], "dtype": "float32",
                  "layout": "NCHW", "range": "raw values (as validation_inputs.npy); normalisation turns them into "
                                            "the model's input"},
        "output": {"shape": ["batch", int(logits.shape[1])], "dtype": "float32"},
        "normalisation": data.preprocess.as_dict(),
        "model_source": row.get("model_source"),
        "model_sha256": row.get("model_sha256"),
        "num_classes": data.num_classes,
        "data_source": data.source,
        "session_options": variant.metadata.get("session_options", {}),
        "package_versions": package_versions(),
        "validation_files": {"inputs": "validation_inputs.npy", "labels": "validation_labels.npy"},
    }
    atomic.write_json(out / "manifest.json", manifest)
    return manifest


@dataclass(frozen=True)
class ExportedArtifact:
    """What the artifact stage produced: the config point, the manifest (None when export failed) and why not."""

    point: dict[str, Any]
    manifest: dict[str, Any] | None
    error: str | None = None

    @property
    def path(self) -> str | None:
        """The model file relative to the output folder."""
        return str(Path("model") / MODEL_FILE) if self.manifest else None


def artifact_point(cfg: StudyConfig, point: ConfigPoint, key: str) -> dict[str, Any]:
    """The config point recorded in the manifest (and compared for reuse)."""
    return {"pruning_level": point.pruning_level, "precision": point.precision, "backend": point.backend,
            **({"calibration": point.calibration} if point.calibration else {}), "key": key,
            "model": cfg.model.model_dump(), "dataset": cfg.dataset, "seed": cfg.seed, "config_hash": cfg.config_hash}


def cached_manifest(model_dir: Path, point: Mapping[str, Any], goals_met: bool,
                    failed: Sequence[str]) -> dict[str, Any] | None:
    """The existing artifact's manifest when it was exported for the same config point and is intact."""
    from .runtime import ArtifactError, load_manifest

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
        manifest = export_artifact(out / "model", sweep.parent(level), chosen.row(), sweep.data,
                                   sweep.build_context(level, workdir=out / "model", calibration=chosen.point.calibration), goals_met=selection.goals_met,
                                   failed_goals=failed, config_point=point, threads=sweep.cfg.threads)
    except Exception as exc:  # noqa: BLE001 — a failed export is reported, the study outputs still land
        return ExportedArtifact(point, None, f"artifact export failed: {type(exc).__name__}: {exc}")
    return ExportedArtifact(point, manifest)
