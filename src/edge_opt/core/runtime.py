"""Run an exported artifact with its runtime alone: ``edge-opt predict``.

ONNX Runtime and OpenVINO artifacts run without importing torch; an ExecuTorch ``.pte`` runs in
``executorch.runtime`` (which passes torch tensors).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .scores import class_scores

__all__ = [
    "MANIFEST_KEYS",
    "RUNTIMES",
    "artifact_runner",
    "class_ids",
    "muted_native_stderr",
    "ArtifactError",
    "load_manifest",
    "normalise",
    "onnx_data_files",
    "predict",
    "predict_outputs",
    "ArtifactRunner",
    "sha256_file",
]


class ArtifactError(ValueError):
    """The artifact folder or the input file is not usable."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MANIFEST_KEYS = ("model_file", "sha256", "input", "normalisation")


def load_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read ``manifest.json``, check its keys, that its model file lies inside the folder, and the file's SHA-256.

    Raises:
        ArtifactError: missing files or keys, a model file outside the folder, a bad input shape, a bad
            normalisation (``scale`` not a positive number, ``mean``/``std`` neither one value nor one per input
            channel, a ``std`` not positive and finite), a hash mismatch.
    """
    d = Path(model_dir)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise ArtifactError(
            f"No manifest.json in {str(d)!r}: pass the folder written by 'edge-opt run' (outputs/model)."
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{str(mpath)!r} is not a JSON manifest ({exc}).") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{str(mpath)!r} must hold a JSON object. Got {type(manifest).__name__} instead.")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ArtifactError(f"{str(mpath)!r} lacks the key(s) {missing}; it needs {list(MANIFEST_KEYS)}.")
    model_file = _inside(d, manifest["model_file"])
    if not model_file.is_file():
        raise ArtifactError(f"Model file {str(model_file)!r} named in the manifest is missing.")
    if "inputs" in manifest:  # a model that takes its inputs as given (token ids, signals, several inputs)
        _check_inputs(manifest["inputs"])
    else:
        _check_input(manifest["input"])
        _check_normalisation(manifest["normalisation"], manifest["input"]["shape"][1])
    digest = sha256_file(model_file)
    if digest != manifest["sha256"]:
        raise ArtifactError(f"SHA-256 of {str(model_file)!r} is {digest}, the manifest says {manifest['sha256']}.")
    _check_files(d, manifest, model_file)
    return manifest


def _file_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's ``files``: ``[{path, sha256, bytes}]`` (an artifact written before sizes were recorded maps
    each name to its SHA-256)."""
    files = manifest.get("files") or []
    entries = [{"path": k, "sha256": v} for k, v in files.items()] if isinstance(files, dict) else files
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes", 0), int) for e in entries
    ):
        raise ArtifactError(
            "The manifest's 'files' must list the model's files as {path, sha256, bytes} objects. Got "
            f"{str(files)[:80]!r} instead."
        )
    return entries


def _check_files(folder: Path, manifest: dict[str, Any], model_file: Path) -> None:
    """Every file of the model the manifest lists (OpenVINO's weights next to its graph, an ONNX model's external
    data) is in the folder with its size and SHA-256; an ONNX model's external data files are all listed."""
    listed = {model_file}
    for entry in _file_entries(manifest):
        path = _inside(folder, entry.get("path"), "files")
        listed.add(path)
        if path == model_file:
            continue  # hashed already
        if not path.is_file():
            raise ArtifactError(
                f"The artifact file {str(path)!r} named in the manifest is missing: it belongs beside "
                f"{model_file.name!r} (copy the whole artifact folder)."
            )
        size = path.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise ArtifactError(
                f"The artifact file {str(path)!r} holds {size} bytes, the manifest says {entry['bytes']}."
            )
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise ArtifactError(f"SHA-256 of {str(path)!r} is {digest}, the manifest says {entry['sha256']}.")
    if manifest.get("runtime", "onnxruntime") == "onnxruntime":
        for name in onnx_data_files(model_file):
            if (model_file.parent / name).resolve() not in listed:
                raise ArtifactError(
                    f"{str(model_file)!r} keeps weights in {name!r}, which the manifest's 'files' does not list "
                    "(no SHA-256 to check it against); export the artifact again."
                )


def _inside(folder: Path, name: Any, key: str = "model_file") -> Path:
    """A file the manifest names (under ``key``), which must be a relative path of a file inside the model folder."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"The manifest's '{key}' must name a file. Got {str(name)[:80]!r} instead.")
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise ArtifactError(
            f"The manifest's '{key}' must name a file inside {str(folder)!r}. Got {name[:200]!r} "
            "instead; refusing to load a file from elsewhere."
        )
    return path


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph that may hold data: initializers (sparse ones too) and node attributes
    (``Constant`` values), in its control-flow subgraphs as well."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def onnx_data_files(model_path: str | Path) -> tuple[str, ...]:
    """The external data files an ONNX model's tensors name, as paths relative to the model's folder (each once,
    in the order first named; none when every weight is inside the file).

    Read here, below the stages and without torch, for the device agent and ``predict``; the study resolves the
    same files with ``edge_opt.inputs.onnx_model_files``.

    Raises:
        ArtifactError: the file is not ONNX, or a location is absolute or leaves the model's folder.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(model_path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 — anything onnx cannot parse (protobuf's DecodeError, OSError …)
        raise ArtifactError(f"{str(path)!r} is not an ONNX model ({type(exc).__name__}: {str(exc)[:200]}).") from None
    folder = path.resolve().parent
    names: dict[str, None] = {}
    for tensor in _onnx_tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or folder not in target.parents:
            raise ArtifactError(
                f"{str(path)!r} keeps tensor {tensor.name!r} in {location[:200]!r}, outside its own folder; "
                "refusing to read a file from elsewhere."
            )
        names[target.relative_to(folder).as_posix()] = None
    return tuple(names)


def _check_normalisation(norm: Any, channels: int) -> None:
    """``scale`` one positive number; ``mean`` one finite number or one per input channel; ``std`` alike, positive."""
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise ArtifactError(
            "The manifest's 'normalisation' must be an object with 'mean' and 'std' (and optional "
            f"'scale'). Got {str(norm)[:80]!r} instead."
        )
    scale = norm.get("scale", 1.0)
    if not (_finite_number(scale) and scale > 0):
        raise ArtifactError(
            f"The manifest's 'normalisation.scale' must be a positive number. Got {str(scale)[:80]!r} instead."
        )
    for key in ("mean", "std"):
        value = norm[key]
        values = value if isinstance(value, list) else [value]
        if not values or not all(_finite_number(v) for v in values):
            raise ArtifactError(
                f"The manifest's 'normalisation.{key}' must be a finite number or a list of them. "
                f"Got {str(value)[:80]!r} instead."
            )
        if len(values) not in (1, channels):
            raise ArtifactError(
                f"The manifest's 'normalisation.{key}' must hold 1 value or one per input channel (its "
                f"'input.shape' has {channels} input channel{'' if channels == 1 else 's'}). Got a list of "
                f"{len(values)} values instead: {str(value)[:80]}."
            )
        if key == "std" and not all(v > 0 for v in values):
            raise ArtifactError(
                f"The manifest's 'normalisation.std' must be positive. Got {str(value)[:80]!r} instead."
            )


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_input(spec: Any) -> None:
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[1:])):
        raise ArtifactError(
            "The manifest's 'input.shape' must be ['batch', C, H, W] with positive integers. Got "
            f"{str(shape)[:80]!r} instead."
        )


def _check_inputs(spec: Any) -> None:
    """``inputs``: one ``{name, shape: ['batch', ...], dtype}`` per model input, with a numeric dtype."""
    ok = isinstance(spec, list) and len(spec) > 0
    for entry in spec if ok else []:
        shape, dtype = (entry.get("shape"), entry.get("dtype")) if isinstance(entry, dict) else (None, None)
        ok = ok and isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(shape, list)
        try:
            ok = ok and isinstance(dtype, str) and np.dtype(dtype).kind in "iubf"
        except TypeError:
            ok = False
    if not ok:
        raise ArtifactError(
            "The manifest's 'inputs' must list each model input as {name, shape: ['batch', ...], dtype} with a "
            f"numeric dtype. Got {str(spec)[:80]!r} instead."
        )


def _as_float(images: Any, scale: float | None) -> np.ndarray:
    """Raw inputs as float32: integer arrays need an explicit ``scale`` (0-255 pixels are not [0, 1] values)."""
    x = np.asarray(images)
    if x.dtype.kind in "iub":
        if scale is None:
            raise ArtifactError(
                f"Input is {x.dtype} (values {x.min() if x.size else 0}..{x.max() if x.size else 0}); "
                "the model takes float values as validation_inputs.npy holds them. Convert the "
                "images, or pass --scale (e.g. --scale 0.00392156862745098 for 0-255 pixels)."
            )
        return x.astype(np.float32) * np.float32(scale)
    if x.dtype.kind != "f":
        raise ArtifactError(f"Input must be a numeric array. Got dtype {x.dtype} instead.")
    if scale is not None:
        raise ArtifactError("The '--scale' parameter applies to integer inputs only. Got a float input and --scale.")
    return x.astype(np.float32)


def normalise(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """``(x × scale − mean) / std`` as the manifest records it (per channel when mean/std are lists)."""

    def stat(v: Any) -> Any:
        return np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) if isinstance(v, list) else np.float32(v)

    scale = np.float32(norm.get("scale", 1.0))
    return ((x * scale - stat(norm["mean"])) / stat(norm["std"])).astype(np.float32)


def predict(
    model_dir: str | Path,
    images: np.ndarray,
    batch_size: int = 256,
    scale: float | None = None,
    labels: np.ndarray | None = None,
    labels_name: str = "The labels",
) -> np.ndarray:
    """Class ids for raw images (as ``validation_inputs.npy`` holds them: shape (N, C, H, W), (N, H, W) or one
    (C, H, W)/(H, W) image), from the artifact folder ``model_dir`` (or the model file in it).

    Every file of the model the manifest lists (an ONNX model's external data included) is checked against its
    SHA-256 before the model loads. The manifest's normalisation (scale, mean, std) is applied here, so callers pass
    raw pixels. Integer images (uint8 0-255 …) are refused unless ``scale`` says what one unit is worth.
    ``labels``, when given, must be one integer class id per image within the model's outputs (``labels_name``
    names them in the error, e.g. the file they came from): their shape is checked before the model runs, their
    values after. ``predict_outputs`` gives every output of a model that is not a classifier.

    Raises:
        ArtifactError: a bad folder or manifest, a file of the model missing or changed, a model its runtime cannot
            load or run, a wrong shape or dtype, NaN / infinite values, or bad labels.
    """
    model_dir, manifest = _artifact(model_dir)
    if "inputs" in manifest:  # the model takes its inputs as given: no image rules, no normalisation
        outputs, _ = predict_outputs(model_dir, images, batch_size, scale)
        return class_ids(next(iter(outputs.values())), labels, labels_name)
    x = _model_input(images, manifest, scale)
    if labels is not None and np.shape(labels) != (len(x),):
        raise ArtifactError(
            f"{labels_name} must hold {len(x)} labels, one per image (shape ({len(x)},)). Got shape "
            f"{np.shape(labels)} instead."
        )
    x = normalise(x, manifest["normalisation"])
    logits = _run_batches(artifact_runner(model_dir, manifest), (x,), manifest, model_dir, batch_size)[0]
    return class_ids(logits, labels, labels_name)


def class_ids(logits: np.ndarray, labels: np.ndarray | None = None, labels_name: str = "The labels") -> np.ndarray:
    """A classifier's class ids (argmax over its (N, C) output), with ``labels`` checked against them when given:
    one integer class id per sample in [0, C) (``labels_name`` names them in the error).

    Raises:
        ArtifactError: labels of another shape, or values that are no class ids of the model.
    """
    logits = class_scores(logits)  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
    if labels is not None and np.shape(labels) != (len(logits),):
        raise ArtifactError(
            f"{labels_name} must hold {len(logits)} labels, one per image (shape ({len(logits)},)). Got shape "
            f"{np.shape(labels)} instead."
        )
    if labels is not None and len(logits):
        _check_label_values(np.asarray(labels), int(logits.shape[1]), labels_name)
    return logits.argmax(1) if len(logits) else np.zeros((0,), dtype=np.int64)


def predict_outputs(
    model_dir: str | Path,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    batch_size: int = 256,
    scale: float | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every output of the artifact in ``model_dir``, keyed by the model's output names in its output order, and the
    artifact's manifest.

    ``inputs`` is one array for a one-input model, or a mapping of the model's input names to arrays, one per model
    input. An image model (the manifest's ``input`` is one float NCHW batch) takes raw images, checked and normalised
    as ``predict`` does; a model whose manifest lists ``inputs`` (token ids, signals, several inputs) gets each
    array as given, in the dtype and with the per-sample shape listed there (any array of a numeric dtype, as a float
    or as it is, when the manifest lists none).

    Raises:
        ArtifactError: as ``predict``; and a mapping that lacks a model input or names one the model does not
            have (both listed), arrays of different lengths, a dtype that does not convert without loss.
    """
    model_dir, manifest = _artifact(model_dir)
    run = artifact_runner(model_dir, manifest, all_outputs=True)
    names = list(run.input_names)
    if not isinstance(inputs, Mapping):
        inputs = {names[0]: inputs} if len(names) == 1 else {}
    missing, unknown = [n for n in names if n not in inputs], [n for n in inputs if n not in names]
    if missing or unknown:
        raise ArtifactError(
            f"The model's inputs are {names}: give one array for each (--input NAME=FILE.npy). Missing: "
            f"{missing or 'none'}; unknown: {unknown or 'none'}."
        )
    if len(names) == 1 and "inputs" not in manifest:  # one float image batch, normalised here
        x = normalise(_model_input(inputs[names[0]], manifest, scale), manifest["normalisation"])
        return dict(zip(run.output_names, _run_batches(run, (x,), manifest, model_dir, batch_size))), manifest
    if scale is not None:
        raise ArtifactError(
            "The '--scale' parameter applies to image inputs only; this model takes its inputs as given."
        )
    parts = _named_inputs(inputs, names, manifest)
    return dict(zip(run.output_names, _run_batches(run, parts, manifest, model_dir, batch_size))), manifest


def _named_inputs(inputs: Mapping[str, Any], names: Sequence[str], manifest: dict[str, Any]) -> tuple[Any, ...]:
    """The arrays of a several-input model, in its input order: each in the dtype the manifest's ``inputs`` lists for
    it (an integer input refuses fractions), finite, all of one length."""
    listed = {str(i.get("name")): i for i in manifest.get("inputs") or [] if isinstance(i, dict)}
    dtypes = {name: entry.get("dtype") for name, entry in listed.items()}
    parts = []
    for name in names:
        x = np.asarray(inputs[name])
        shape = listed.get(name, {}).get("shape")
        if isinstance(shape, list) and (
            x.ndim != len(shape) or any(isinstance(d, int) and d != n for d, n in zip(shape[1:], x.shape[1:]))
        ):
            raise ArtifactError(
                f"The input {name!r} must have shape {tuple(shape)} (None: any size). Got {x.shape} instead."
            )
        want = np.dtype(dtypes[name] if dtypes.get(name) else (np.float32 if x.dtype.kind == "f" else x.dtype))
        if x.dtype.kind not in "iubf":
            raise ArtifactError(f"The input {name!r} must be a numeric array. Got dtype {x.dtype} instead.")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ArtifactError(f"The input {name!r} holds NaN or infinite values; refusing to predict.")
        if want.kind in "iub" and x.dtype.kind == "f" and (x != np.round(x)).any():
            raise ArtifactError(f"The input {name!r} must hold whole numbers ({want} for the model). Got fractions.")
        parts.append(np.ascontiguousarray(x.astype(want, copy=False)))
    lengths = {name: len(p) for name, p in zip(names, parts)}
    if len(set(lengths.values())) > 1:
        raise ArtifactError(f"The inputs must hold as many samples each. Got {lengths}.")
    return tuple(parts)


def _run_batches(
    run: ArtifactRunner, parts: tuple[Any, ...], manifest: dict[str, Any], model_dir: Path, batch_size: int
) -> list[np.ndarray]:
    """The runner over the inputs in batches of ``batch_size`` (one sample for a ``.pte``), per output the batches
    concatenated (the first output alone for a runner made without ``all_outputs``)."""
    step = 1 if manifest.get("runtime") in STATIC_BATCH_RUNTIMES else batch_size  # a .pte / .tflite: static batch 1
    chunks: list[list[np.ndarray]] = []
    for i in range(0, len(parts[0]), step):
        try:
            out = run(tuple(np.ascontiguousarray(p[i : i + step]) for p in parts))
        except Exception as exc:  # noqa: BLE001 — a runtime's own error while running the model
            name = manifest["model_file"]
            raise ArtifactError(f"{name!r} in {str(model_dir)!r} fails to run: {type(exc).__name__}: {exc}") from None
        chunks.append(out if run.all_outputs else [out])
    if not chunks:
        return [np.zeros((0,), dtype=np.float32)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def _artifact(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The artifact folder ``path`` names (the folder, or the model file its manifest names) and its checked
    manifest."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    manifest = load_manifest(folder)
    if p.is_file() and _inside(folder, manifest["model_file"]) != p.resolve():
        raise ArtifactError(
            f"{str(p)!r} is not the model file of the artifact in {str(folder)!r} (its manifest names "
            f"{manifest['model_file']!r}); pass the artifact folder."
        )
    return folder, manifest


def _model_input(images: Any, manifest: dict[str, Any], scale: float | None) -> np.ndarray:
    """Raw images as a float32 (N, C, H, W) batch of the manifest's input shape, finite, not yet normalised."""
    c, h, w = manifest["input"]["shape"][1:]
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ArtifactError(f"The '--scale' parameter must be a positive number. Got {scale!r} instead.")
    x = _as_float(images, scale)
    if x.ndim == 2 and (h, w) == x.shape:
        x = x[None, None]
    elif x.ndim == 3 and x.shape == (c, h, w):
        x = x[None]
    elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ArtifactError(
            f"Input must have shape (N, {c}, {h}, {w}) (or (N, {h}, {w}) for one channel). "
            f"Got {tuple(np.shape(images))} instead."
        )
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise ArtifactError(f"Input holds NaN or infinite values in {bad} of {len(x)} images; refusing to predict.")
    return x


def _check_label_values(y: np.ndarray, classes: int, name: str) -> None:
    """Labels are integer class ids in [0, classes): integral floats pass, fractions, NaN and other dtypes do not."""
    allowed = f"integer class ids in [0, {classes}) (the model has {classes} outputs)"
    if y.dtype.kind not in "iuf":
        raise ArtifactError(f"{name} must hold {allowed}. Got dtype {y.dtype} instead.")
    with np.errstate(invalid="ignore"):
        bad = (y < 0) | (y >= classes)
        if y.dtype.kind == "f":
            bad |= ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        values = np.unique(y[bad]).tolist()
        shown = ", ".join(str(v) for v in values[:5]) + (", …" if len(values) > 5 else "")
        raise ArtifactError(f"{name} must hold {allowed}. Got {shown} ({int(bad.sum())} of {y.size} labels) instead.")


RUNTIMES = ("onnxruntime", "openvino", "executorch", "litert")
STATIC_BATCH_RUNTIMES = ("executorch", "litert")  # an artifact of these (.pte, .tflite) takes one sample at a time


@contextlib.contextmanager
def muted_native_stderr() -> Iterator[None]:
    """Keep what native code writes to file descriptor 2 (C++ runtime logs, CPU probes) off the console.

    What it wrote is dropped unless the block fails; then its tail is added to the exception as a note.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as exc:
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()[-1000:]
            if text:
                exc.add_note(f"native log: {text}")
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class ArtifactRunner:
    """A loaded artifact: called with one input batch (an array) or several (a tuple, one per model input in the
    model's input order), it returns the first output (a classifier's logits), or every output, one array each,
    when made with ``all_outputs=True``.

    Attributes:
        input_names: the model's input names, in its input order (the runtime's own names).
        output_names: the model's output names, in its output order.
    """

    def __init__(
        self, run: Any, input_names: Sequence[str], output_names: Sequence[str], all_outputs: bool = False
    ) -> None:
        self._run, self.all_outputs = run, all_outputs
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def __call__(self, x: Any) -> Any:
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if len(parts) != len(self.input_names):
            raise ArtifactError(
                f"The model takes {len(self.input_names)} input(s) {list(self.input_names)}. Got {len(parts)} instead."
            )
        outputs = [np.asarray(o) for o in self._run(parts)]
        return outputs if self.all_outputs else outputs[0]


def artifact_runner(
    model_dir: str | Path, manifest: dict[str, Any] | None = None, *, all_outputs: bool = False
) -> ArtifactRunner:
    """The artifact loaded with the runtime the manifest names and that runtime alone, as an ``ArtifactRunner``:
    (normalised float32 NCHW batch, or a tuple of batches for several inputs) → logits (the first output), or
    every output with ``all_outputs`` (an ExecuTorch ``.pte`` takes one sample at a time)."""
    model_dir = Path(model_dir)
    manifest = manifest if manifest is not None else load_manifest(model_dir)
    runtime = manifest.get("runtime", "onnxruntime")
    path = str(_inside(model_dir, manifest["model_file"]))
    options = manifest.get("session_options") or {}  # ORT's session options, or OpenVINO's compile config
    threads = int(options.get("intra_op_num_threads", options.get("INFERENCE_NUM_THREADS", 1)))
    loaders = {
        "onnxruntime": _ort_runner,
        "openvino": _openvino_runner,
        "executorch": _executorch_runner,
        "litert": _litert_runner,
    }
    if runtime not in loaders:
        raise ArtifactError(
            f"The manifest's 'runtime' must be one of {list(RUNTIMES)}. Got {str(runtime)[:80]!r} instead."
        )
    try:
        run, inputs, outputs = loaders[runtime](path, manifest, threads)
    except ImportError as exc:
        raise ArtifactError(
            f"The artifact needs the {runtime} runtime: pip install "
            f"{'ai-edge-litert' if runtime == 'litert' else repr(f'edge-opt[{runtime}]')} ({exc})."
        ) from None
    except Exception as exc:  # noqa: BLE001 — a runtime's own errors (ORT's Fail …) are no ValueErrors
        notes = "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))  # e.g. the native log's tail
        raise ArtifactError(f"{runtime} cannot load {path!r}: {type(exc).__name__}: {str(exc)[:500]}{notes}") from None
    return ArtifactRunner(run, inputs, outputs, all_outputs)


_Loaded = tuple[Any, list[str], list[str]]  # run(parts) -> outputs, the input names, the output names


def _ort_runner(path: str, manifest: dict[str, Any], threads: int) -> _Loaded:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return (
        lambda parts: sess.run(None, dict(zip(names, parts))),
        names,
        [o.name for o in sess.get_outputs()],
    )


def _openvino_runner(path: str, manifest: dict[str, Any], threads: int) -> _Loaded:
    import openvino as ov

    hint = manifest.get("export", {}).get("inference_precision_hint", "f32")
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(path),
        "CPU",
        # no pinning of its own: it would move the calling thread off the cores the agent pinned it to
        {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False},
    )
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(parts: tuple[Any, ...]) -> list[np.ndarray]:
        result = request.infer(dict(enumerate(parts)))
        return [np.array(result[o]) for o in outputs]

    return run, [i.get_any_name() for i in compiled.inputs], [_ov_name(o, k) for k, o in enumerate(outputs)]


def _ov_name(port: Any, index: int) -> str:
    """An OpenVINO port's name (a port may have none: ``output<index>`` then)."""
    names = port.get_names()
    return port.get_any_name() if names else f"output{index}"


def _executorch_runner(path: str, manifest: dict[str, Any], threads: int) -> _Loaded:
    import torch

    with muted_native_stderr():  # the runtime's C++ log (CPU probes) stays off the predictions' console
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")
    meta = method.metadata  # a .pte keeps no input or output names: the manifest's, else input<k> / output<k>
    inputs = [str(i.get("name")) for i in manifest.get("inputs") or [] if isinstance(i, dict)]
    if not inputs:
        single = [str((manifest.get("input") or {}).get("name", "input"))]
        inputs = single if meta.num_inputs() == 1 else [f"input{k}" for k in range(meta.num_inputs())]
    outputs = [f"output{k}" for k in range(meta.num_outputs())]

    def run(parts: tuple[Any, ...]) -> list[np.ndarray]:
        return [o.numpy() for o in method.execute([torch.from_numpy(p) for p in parts])]

    return run, inputs, outputs


def _litert_runner(path: str, manifest: dict[str, Any], threads: int) -> _Loaded:
    """A ``.tflite`` on ai-edge-litert's interpreter (XNNPACK) alone, no torch: float inputs are quantized to an
    int8 input's scale and zero point and int8 outputs dequantized, as the file's own tensors say."""
    from ai_edge_litert.interpreter import Interpreter

    with muted_native_stderr():  # the delegate logs its creation
        interpreter = Interpreter(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()

    def run(parts: tuple[Any, ...]) -> list[np.ndarray]:
        for spec, x in zip(ins, parts):
            interpreter.set_tensor(spec["index"], _to_tflite(np.asarray(x), spec))
        interpreter.invoke()
        return [_from_tflite(interpreter.get_tensor(spec["index"]), spec) for spec in outs]

    return run, [str(d["name"]) for d in ins], [str(d["name"]) for d in outs]


def _to_tflite(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    scale, zero = spec["quantization"]
    if dtype.kind in "iu" and scale and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale) + zero, info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype, copy=False))


def _from_tflite(y: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    scale, zero = spec["quantization"]
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return np.array(y)
