"""Artifact stage: the recommended configuration as a deployable ONNX file with a manifest."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..config import StudyConfig
from ..core import (
    STATIC_BATCH_RUNTIMES,
    ArtifactError,
    artifact_runner,
    atomic,
    batch_map,
    class_scores,
    package_versions,
    sha256_file,
)
from ..inputs import DataBundle, onnx_model_files
from ..measure import ConfigPoint, Scoring, loader_targets
from ..study import MANIFEST_COLUMNS, Selection, Sweep
from ..variants import (
    BACKEND_KINDS,
    BuildContext,
    Variant,
    build_onnx_file,
    build_variant,
    get_precision,
    onnx_input_name,
    onnx_variant,
    parent_onnx_layers,
    recovered_parent,
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
# beside the model's files (validation_inputs.npz: a model with several inputs, one array per input name)
_OWN_FILES = ("manifest.json", "validation_inputs.npy", "validation_inputs.npz", "validation_labels.npy")


@dataclass(frozen=True)
class _Built:
    """What a runtime's artifact writer built in a temporary folder."""

    files: dict[str, Path]  # name in the model folder → built file (the first is the one the runtime loads)
    variant: Variant
    runtime: str
    runtime_version: str
    meta: dict[str, Any]
    source: Path | None = None  # the float ONNX file the build starts from: the user's own, or this tool's export


def _onnx_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    import onnxruntime as ort

    src, meta = build_onnx_file(parent, precision, ctx)
    layers = parent_onnx_layers(parent, ctx) if get_precision(precision).quantized else None
    variant = onnx_variant(
        src, precision, threads, meta, layers=layers, must_be_float=meta.get("requested_float_layers", ())
    )
    source = build_onnx_file(parent, "fp32", ctx)[0]
    return _Built(_shipped_onnx(src), variant, "onnxruntime", ort.__version__, meta, source)


def _shipped_onnx(model: Path) -> dict[str, Path]:
    """An ONNX model as an artifact ships it: ``model.onnx``, then each external data file its tensors name, under
    the name (path relative to the model's folder) the model refers to it by — the file is renamed, its data
    files are not, so the model finds them beside it.

    Raises:
        FileNotFoundError: a data file the model names is not beside it.
        ValueError: a data file named like one of the artifact's own files (``manifest.json`` …).
    """
    files = onnx_model_files(model)
    folder = files[0].resolve().parent
    out = {MODEL_FILE: files[0]}
    for data in files[1:]:
        name = data.relative_to(folder).as_posix()
        if name in (MODEL_FILE, *_OWN_FILES):
            raise ValueError(
                f"The ONNX file {str(model)!r} keeps its weights in {name!r}, a name the artifact folder gives its "
                f"own {'model file' if name == MODEL_FILE else 'file'}; save the model with another data file name."
            )
        out[name] = data
    return out


def _openvino_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    variant = build_variant("openvino", parent, precision, replace(ctx, threads=threads))
    xml = ctx.workdir / "openvino" / variant.metadata["ir_file"]
    return _Built(
        {"model.xml": xml, "model.bin": xml.with_suffix(".bin")},
        variant,
        "openvino",
        variant.metadata["openvino_version"],
        {"inference_precision_hint": variant.metadata["inference_precision_hint"]},
        build_onnx_file(parent, "fp32", ctx)[0],  # OpenVINO reads the float ONNX file
    )


def _executorch_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    variant = build_variant("executorch", parent, precision, replace(ctx, threads=threads, batch_sizes=(1,)))
    pte = ctx.workdir / "executorch" / variant.metadata["pte_files"]["1"]
    return _Built(
        {"model.pte": pte}, variant, "executorch", variant.metadata["executorch_version"], {"static_batch": 1}
    )


def _litert_artifact(parent: nn.Module | None, precision: str, ctx: BuildContext, threads: int) -> _Built:
    variant = build_variant("litert", parent, precision, replace(ctx, threads=threads, batch_sizes=(1,)))
    meta = variant.metadata
    return _Built(
        {"model.tflite": ctx.workdir / "litert" / meta["tflite_files"]["1"]},
        variant,
        "litert",
        meta["ai_edge_litert_version"],
        {  # the .tflite's own inputs/outputs: an int8 one with the scale and zero point to (de)quantize with
            "static_batch": 1,
            "tflite_inputs": meta["inputs"],
            "tflite_outputs": meta["outputs"],
            "flash_bytes": meta["flash_bytes"],
            "peak_ram_bytes": meta["peak_ram_bytes"],
        },
    )


# The runtime a measured backend ships with: its own files when it has them, else ONNX for onnxruntime.
ARTIFACT_WRITERS = {"openvino": _openvino_artifact, "executorch": _executorch_artifact, "litert": _litert_artifact}


def artifact_files(
    parent_model: nn.Module | None, backend: str, precision: str, ctx: BuildContext, threads: int = 1
) -> tuple[dict[str, Path], str, dict[str, Any]]:
    """The files a runtime loads for a point of ``backend`` (in ``ctx.workdir``; the first one is the model file),
    the runtime's name and its build settings (e.g. OpenVINO's precision hint)."""
    writer = ARTIFACT_WRITERS.get(backend, _onnx_artifact)
    if get_precision(precision).quantized:  # the point's recovery (cle: the equalized parent) for every writer
        parent_model, ctx, _ = recovered_parent(parent_model, ctx, precision, BACKEND_KINDS.get(backend))
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
    scoring: Scoring | None = None,
) -> dict[str, Any]:
    """Write what the row's runtime loads + ``manifest.json`` (+ the validation images and labels, un-normalised).

    A row measured on OpenVINO ships its IR (``model.xml`` + ``model.bin``), on ExecuTorch its ``.pte``
    (static batch 1), on LiteRT its ``model.tflite`` (static batch 1; ``export`` names its inputs and outputs with
    an int8 one's scale and zero point); torch and ONNX Runtime rows ship ONNX built with ONNX Runtime's tools
    (the torch backend's own int8 kernels do not export to ONNX); an ONNX model ships with the external data files
    it names, under the names it refers to them by. The files are written to a staging folder beside ``out_dir``, loaded
    from there by their runtime alone and run on the validation set (the manifest's ``artifact_accuracy`` is that
    of the files shipped), then moved into place with ``manifest.json`` written last: a model that does not load
    or run raises ``ArtifactError`` naming the file and the runtime's reason, and leaves nothing behind. The
    manifest's ``files`` lists every file of the model with its SHA-256 and size. The manifest's
    ``provenance`` says what the files derive from (the user's ONNX file when ``parent_model`` is None, its
    ONNX ``producer_name``/``producer_version``) and what the study applied; ``export.exporter`` is None when
    no PyTorch model was exported.

    ``scoring``: the study's metric when it is not top-1 (its fp32 reference set for a label-free one). The shipped
    files' outputs are then scored by it (postprocess, then the metric) and the manifest records ``metric``
    ``{name, display_name, higher_is_better, value, study_value}`` (``value``: these files'; ``study_value``: the
    row's), ``outputs`` (name and per-sample shape of each) and ``artifact_accuracy`` only when top-1 applies
    (None otherwise); the validation targets are saved as the data holds them (none for a label-free metric).

    Returns:
        The manifest.
    """
    out = Path(out_dir)
    precision = str(row["precision"])
    writer = ARTIFACT_WRITERS.get(str(row.get("backend")), _onnx_artifact)
    built = writer(parent_model, precision, ctx, threads)  # in ctx.workdir: the study's build cache is reused
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{atomic.TEMP_PREFIX}{out.name}.{secrets.token_hex(4)}"  # removed by a later run if killed
    staging.mkdir()
    try:
        for name, src in built.files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staging / name)
        outputs, names = _shipped_outputs(staging, built, data)
        scored = _scored(outputs, names, data, row, scoring)
        artifact_acc = scored.pop("artifact_accuracy")
        validation = _save_validation(staging, data, scoring)
        manifest = _manifest(staging, built, row, data, config_point, outputs[0], artifact_acc, parent_model is None)
        manifest.update(goals_met=bool(goals_met), failed_goals=list(failed_goals), **scored, **validation)
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic.write_json(out / "manifest.json", manifest)  # last: a folder without it is no artifact
    return manifest


def _shipped_outputs(folder: Path, built: _Built, data: DataBundle) -> tuple[list[np.ndarray], list[str]]:
    """Every validation output of the files as shipped (one array per output) and the outputs' names, loaded from
    ``folder`` by their runtime alone, as ``predict`` and the agent load them: a file the model needs and the artifact
    lacks fails here, named, before it ships."""
    model_file = next(iter(built.files))
    stub = {
        "runtime": built.runtime,
        "model_file": model_file,
        "session_options": _session_options(built.variant),
        "export": built.meta,
    }
    run = artifact_runner(folder, stub, all_outputs=True)  # ArtifactError naming the file and the runtime's reason
    step = 1 if built.runtime in STATIC_BATCH_RUNTIMES else None  # a .pte / .tflite has a static batch of 1
    chunks: list[list[np.ndarray]] = []
    try:
        for x, *_ in data.val_loader:
            parts = batch_map(x, _runtime_array)
            n = len(parts[0]) if isinstance(parts, tuple) else len(parts)
            for i in range(0, n, step or n):
                part = batch_map(parts, lambda a: a[i : i + (step or n)])  # noqa: B023 — used at once
                chunks.append([np.asarray(o, dtype=np.float32) for o in run(part)])
    except Exception as exc:  # noqa: BLE001 — a runtime's own error while running the shipped file
        raise ArtifactError(
            f"{built.runtime} fails to run the exported {model_file}: {type(exc).__name__}: {exc}"
        ) from None
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))], list(run.output_names)


def _runtime_array(x: Any) -> np.ndarray:
    """One model input as the runtime takes it: float32 for floating inputs, integers as they are."""
    a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.ascontiguousarray(a if a.dtype.kind in "iub" else a.astype(np.float32))


def _scored(
    outputs: list[np.ndarray], names: list[str], data: DataBundle, row: Mapping[str, Any], scoring: Scoring | None
) -> dict[str, Any]:
    """The manifest's scoring keys: ``artifact_accuracy`` (top-1 of the shipped outputs; None when top-1 does not
    apply), and with a metric other than top-1 ``metric`` and ``outputs``."""
    logits = class_scores(outputs[0])  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
    if scoring is None:
        return {"artifact_accuracy": float((logits.argmax(1) == data.val_labels).mean())}
    targets = loader_targets(data.val_loader)
    top1 = logits.ndim == 2 and targets is not None and targets.shape == (len(logits),) and targets.dtype.kind in "iu"
    value = scoring.score(outputs, targets)
    study_value = row.get("metric")
    return {
        "artifact_accuracy": float((logits.argmax(1) == targets).mean()) if top1 and targets is not None else None,
        "metric": {
            "name": scoring.metric.name,
            "display_name": scoring.metric.display_name,
            "higher_is_better": scoring.metric.higher_is_better,
            "value": float(value),
            "study_value": float(study_value) if isinstance(study_value, (int, float)) else None,
            "note": "value: the metric of these files on the validation inputs; study_value: the sweep's row",
        },
        "outputs": [{"name": n, "shape": ["batch", *o.shape[1:]], "dtype": "float32"} for n, o in zip(names, outputs)],
    }


def _save_validation(folder: Path, data: DataBundle, scoring: Scoring | None) -> dict[str, Any]:
    """``validation_inputs`` (raw, un-normalised: ``.npy``, or ``.npz`` keyed by input name for several inputs) and
    ``validation_labels.npy`` (class ids as int64; with a metric other than top-1 the targets as the data holds
    them, none when it holds none); with a metric, the manifest's ``validation_files`` saying which were written."""
    raw = data.val_images_raw
    inputs = "validation_inputs.npy"
    if isinstance(raw, np.ndarray):
        np.save(folder / inputs, raw.astype(np.float32))
    elif len(raw.arrays) == 1:
        np.save(folder / inputs, raw.arrays[0])  # as the model takes it: its own dtype
    else:
        inputs = "validation_inputs.npz"
        arrays: dict[str, Any] = dict(zip(raw.names, raw.arrays))
        np.savez(folder / inputs, **arrays)
    if scoring is None:
        np.save(folder / "validation_labels.npy", data.val_labels.astype(np.int64))
        return (
            {}
            if inputs.endswith(".npy")
            else {"validation_files": {"inputs": inputs, "labels": "validation_labels.npy"}}
        )
    targets = data.val_targets
    labels = targets is not None and isinstance(targets, np.ndarray) and targets.dtype.kind in "iufb"
    if targets is not None and labels:
        np.save(folder / "validation_labels.npy", targets)
    return {"validation_files": {"inputs": inputs, "labels": "validation_labels.npy" if labels else None}}


def _replace_folder(staging: Path, out: Path) -> None:
    """Put the staged files in ``out``, file by file: each synced to disk and noted in the output journal, then
    renamed into place; the files of an earlier artifact (its manifest's, and the manifest itself) that this one
    does not ship are removed. Other files in ``out`` are the user's and stay."""
    staged = sorted(p for p in staging.rglob("*") if p.is_file())
    for path in staged:
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
        atomic.note_written(out / path.relative_to(staging))
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        out.unlink()
    earlier = _artifact_files(out)
    out.mkdir(parents=True, exist_ok=True)
    for path in staged:
        target = out / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shipped = {path.relative_to(staging).as_posix() for path in staged}
    for rel in sorted(earlier - shipped):
        (out / rel).unlink(missing_ok=True)


def _artifact_files(folder: Path) -> set[str]:
    """The files an artifact folder's manifest says are the artifact's (its model files, validation files and the
    manifest itself); none when there is no readable manifest."""
    try:
        doc = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return set()
    files = doc.get("files") if isinstance(doc, dict) else None
    names = {str(f.get("path")) for f in files if isinstance(f, dict)} if isinstance(files, list) else set()
    if isinstance(files, dict):  # manifests before the list form: {name: sha256}
        names = {str(k) for k in files}
    if isinstance(doc, dict) and isinstance(doc.get("model_file"), str):
        names.add(doc["model_file"])
    inside = {n for n in names if n and not Path(n).is_absolute() and ".." not in Path(n).parts}
    return inside | set(_OWN_FILES)


def _manifest(
    out: Path,
    built: _Built,
    row: Mapping[str, Any],
    data: DataBundle,
    config_point: Mapping[str, Any],
    first_output: np.ndarray,
    artifact_acc: float | None,
    from_onnx: bool,
) -> dict[str, Any]:
    model_file = next(iter(built.files))
    variant = built.variant
    return {
        "config_hash": config_point.get("config_hash"),
        "runtime": built.runtime,
        "runtime_version": built.runtime_version,
        "model_file": model_file,
        "sha256": sha256_file(out / model_file),
        "files": [
            {"path": name, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
            for name in built.files
        ],
        "size_bytes": sum((out / name).stat().st_size for name in built.files),
        "config_point": dict(config_point),
        "precision": str(row["precision"]),
        "kernel_precision": variant.kernel_precision,
        "float_layers": variant.metadata.get("float_layers"),
        "int8_mac_fraction": variant.metadata.get("int8_mac_fraction"),
        "measured_backend": row.get("backend"),
        "export": {**built.meta, "exporter": None} if from_onnx and "exporter" in built.meta else built.meta,
        "metrics": {k: row.get(k) for k in MANIFEST_METRICS},
        "artifact_accuracy": artifact_acc,
        "artifact_accuracy_note": f"accuracy of these files under {built.runtime} on validation_inputs.npy",
        **_input_keys(data, _input_name(out / model_file, built.runtime)),
        "output": {"shape": ["batch", *map(int, first_output.shape[1:])], "dtype": "float32"},
        "normalisation": data.preprocess.as_dict(),
        "model_source": row.get("model_source"),
        "model_sha256": row.get("model_sha256"),
        "provenance": _provenance(out / model_file, built, row, from_onnx),
        "num_classes": data.num_classes,
        "data_source": data.source,
        "session_options": _session_options(variant),
        "package_versions": package_versions(),
        "validation_files": {"inputs": "validation_inputs.npy", "labels": "validation_labels.npy"},
    }


def _input_keys(data: DataBundle, name: str) -> dict[str, Any]:
    """The manifest's ``input`` (one float NCHW image batch, normalised by ``normalisation``); for a model that takes
    its inputs as given (``InputArrays``: token ids, signals, several inputs) also ``inputs``, one
    ``{name, shape, dtype}`` per model input in its input order, which ``predict`` feeds as given."""
    raw = data.val_images_raw
    if isinstance(raw, np.ndarray):
        c, h, w = data.input_shape
        return {
            "input": {
                "name": name,
                "shape": ["batch", c, h, w],
                "dtype": "float32",
                "layout": "NCHW",
                "range": "raw values (as validation_inputs.npy); normalisation turns them into the model's input",
            }
        }
    inputs = [
        {"name": n, "shape": ["batch", *map(int, a.shape[1:])], "dtype": str(a.dtype)}
        for n, a in zip(raw.names, raw.arrays)
    ]
    note = "as the model takes it (as the validation inputs hold it): no normalisation"
    return {"input": {**inputs[0], "layout": None, "range": note}, "inputs": inputs}


def _provenance(model_file: Path, built: _Built, row: Mapping[str, Any], from_onnx: bool) -> dict[str, Any]:
    """Where the shipped file comes from: the input model's format, the producer that the float ONNX file it derives
    from names (the user's file as given, or this tool's export), the producer the shipped file names when it is
    ONNX, and what the study did to the input model, in order."""
    quantized = get_precision(str(row["precision"])).quantized
    steps = []
    if not from_onnx:
        steps += ["pruned"] if row.get("pruning_level") else []
        steps.append("exported")  # to ONNX (the exporter is in 'export') or to an ExecuTorch program
    changed = built.source is not None and sha256_file(built.source) != sha256_file(model_file)
    if built.runtime == "openvino" or (built.runtime == "onnxruntime" and changed and not quantized):
        steps.append("converted")  # ONNX → OpenVINO IR, or fp32 → fp16 ONNX
    if quantized:
        steps.append("quantized")
    return {
        "source_format": "onnx" if from_onnx else "pytorch",
        "source_producer": _onnx_producer(built.source) if built.source is not None else None,
        "model_file_producer": _onnx_producer(model_file) if built.runtime == "onnxruntime" else None,
        "transformation": steps,
    }


def _onnx_producer(path: Path) -> dict[str, str]:
    """``producer_name`` / ``producer_version`` as the ONNX file itself records them."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {"name": proto.producer_name, "version": proto.producer_version}


def _session_options(variant: Variant) -> dict[str, Any]:
    """ONNX Runtime's session options, or OpenVINO's / ExecuTorch's compile config, as the artifact is run with."""
    return dict(variant.metadata.get("session_options", variant.metadata.get("compile_config", {})))


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
    """The config point recorded in the manifest (and compared for reuse); ``recovery`` when not none."""
    choice = next((c for c in cfg.quantization.choices() if point.calibration and c.label == point.calibration), None)
    recovery = choice.recovery_method if choice is not None else "none"
    return {
        "pruning_level": point.pruning_level,
        "precision": point.precision,
        "backend": point.backend,
        **({"calibration": point.calibration} if point.calibration else {}),
        **({"recovery": recovery} if recovery != "none" else {}),
        "key": key,
        "model": cfg.model.model_dump(),
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "config_hash": cfg.config_hash,
    }


def cached_manifest(
    model_dir: Path, point: Mapping[str, Any], goals_met: bool, failed: Sequence[str], metric: str | None = None
) -> dict[str, Any] | None:
    """The existing artifact's manifest when it was exported for the same config point and is intact, and records
    the study's ``metric`` (its name; None for top1, whose manifest records none)."""
    from ..core import ArtifactError, load_manifest

    try:
        manifest = load_manifest(model_dir)  # checks the SHA-256 of model.onnx
    except (ArtifactError, OSError, ValueError, KeyError):
        return None
    same = json.loads(json.dumps(manifest.get("config_point"))) == json.loads(json.dumps(point, default=str))
    if (
        not same
        or "provenance" not in manifest
        or not isinstance(manifest.get("files"), list)  # written before every file of the model was listed
        or manifest.get("goals_met") != goals_met
        or manifest.get("failed_goals") != list(failed)
        or _recorded_metric(manifest) != metric  # e.g. written before the manifest recorded the metric
    ):
        return None
    return manifest


def _recorded_metric(manifest: Mapping[str, Any]) -> str | None:
    """The name of the metric a manifest records (None when it records none: top1)."""
    recorded = manifest.get("metric")
    return str(recorded.get("name")) if isinstance(recorded, dict) else None


def export_recommended(out: Path, selection: Selection, sweep: Sweep) -> ExportedArtifact | None:
    """Stage: export the chosen variant to ``out/model`` (reused when the same point was exported before)."""
    chosen = selection.chosen
    if chosen is None:
        return None
    point = artifact_point(sweep.cfg, chosen.point, chosen.result.key)
    failed = list(selection.failed_goals)
    scoring = sweep.scoring  # None for top1
    metric = scoring.metric.name if scoring is not None else None
    manifest = cached_manifest(out / "model", point, selection.goals_met, failed, metric)
    if manifest is not None:
        return ExportedArtifact(point, manifest)
    level = chosen.point.pruning_level
    own_file = level == 0 and sweep.cfg.model.kind == "onnx" and chosen.point.backend not in ("executorch", "litert")
    try:
        manifest = export_artifact(
            out / "model",
            None if own_file else sweep.parent(level),  # the user's ONNX file ships, not the module converted from it
            chosen.row(),
            sweep.data,
            sweep.build_context(level, calibration=chosen.point.calibration),
            goals_met=selection.goals_met,
            failed_goals=failed,
            config_point=point,
            threads=sweep.cfg.threads,
            scoring=scoring,
        )
    except Exception as exc:  # noqa: BLE001 — a failed export is reported, the study outputs still land
        _remove_stale(out / "model")  # an earlier artifact does not describe this run's choice
        return ExportedArtifact(point, None, f"artifact export failed: {type(exc).__name__}: {exc}")
    return ExportedArtifact(point, manifest)


def _remove_stale(folder: Path) -> None:
    """Remove an earlier artifact's own files (the user's other files in the folder stay)."""
    if folder.is_dir() and not folder.is_symlink():
        for rel in _artifact_files(folder):
            (folder / rel).unlink(missing_ok=True)
