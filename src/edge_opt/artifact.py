"""Export the recommended configuration as a deployable ONNX artifact with a manifest."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from . import atomic
from .data import DataBundle
from .env import package_versions
from .runtime import sha256_file
from .variants.backends import BuildContext, build_onnx_file, onnx_variant

MODEL_FILE = "model.onnx"


def export_artifact(out_dir: str | Path, parent_model: nn.Module, row: Mapping[str, Any], data: DataBundle,
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
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        ctx.workdir = Path(tmp)
        src, meta = build_onnx_file(parent_model, precision, ctx)
        variant = onnx_variant(src, precision, threads, meta)
        logits = np.concatenate([variant.predict(x) for x, _ in data.val_loader])
        artifact_acc = float((logits.argmax(1) == data.val_labels).mean())
        atomic.write_with(out / MODEL_FILE, lambda t: shutil.copyfile(src, t))
    atomic.write_with(out / "validation_inputs.npy", lambda t: np.save(t, data.val_images_raw.astype(np.float32)))
    atomic.write_with(out / "validation_labels.npy", lambda t: np.save(t, data.val_labels.astype(np.int64)))
    c, h, w = data.input_shape
    manifest = {
        "model_file": MODEL_FILE,
        "sha256": sha256_file(out / MODEL_FILE),
        "size_bytes": (out / MODEL_FILE).stat().st_size,
        "config_point": dict(config_point),
        "precision": precision,
        "kernel_precision": variant.kernel_precision,
        "measured_backend": row.get("backend"),
        "export": meta,
        "metrics": {k: row.get(k) for k in ("accuracy", "latency_ms", "latency_ci95_ms", "latency_p95_ms",
                                            "batch_latency_ms", "throughput_sps", "memory_mb", "energy_proxy_j",
                                            "energy_source", "device_latency_ms", "accuracy_drop",
                                            "speedup_vs_baseline")},
        "artifact_accuracy": artifact_acc,
        "artifact_accuracy_note": "accuracy of this ONNX file under onnxruntime on validation_inputs.npy",
        "goals_met": bool(goals_met),
        "failed_goals": list(failed_goals),
        "input": {"name": "input", "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW",
                  "range": "[0, 1] before normalisation"},
        "output": {"name": "logits", "shape": ["batch", data.num_classes], "dtype": "float32"},
        "normalisation": {"mean": data.mean, "std": data.std, "formula": "(x - mean) / std"},
        "num_classes": data.num_classes,
        "data_source": data.source,
        "session_options": variant.metadata.get("session_options", {}),
        "package_versions": package_versions(),
        "validation_files": {"inputs": "validation_inputs.npy", "labels": "validation_labels.npy"},
    }
    atomic.write_json(out / "manifest.json", manifest)
    return manifest
