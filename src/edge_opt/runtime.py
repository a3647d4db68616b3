"""Run an exported artifact with onnxruntime alone (no torch import): ``edge-opt predict``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ArtifactError", "load_manifest", "normalise", "predict", "sha256_file"]


class ArtifactError(ValueError):
    """The artifact folder or the input file is not usable."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` and check the model file's SHA-256.

    Raises:
        ArtifactError: missing files or a hash mismatch.
    """
    d = Path(model_dir)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise ArtifactError(f"No manifest.json in {str(d)!r}: pass the folder written by 'edge-opt run' (outputs/model).")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    model_file = d / manifest["model_file"]
    if not model_file.is_file():
        raise ArtifactError(f"Model file {str(model_file)!r} named in the manifest is missing.")
    digest = sha256_file(model_file)
    if digest != manifest["sha256"]:
        raise ArtifactError(f"SHA-256 of {str(model_file)!r} is {digest}, the manifest says {manifest['sha256']}.")
    return manifest


def normalise(x: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """``(x × scale − mean) / std`` as the manifest records it (per channel when mean/std are lists)."""
    def stat(v: Any) -> Any:
        return np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) if isinstance(v, list) else np.float32(v)

    scale = np.float32(norm.get("scale", 1.0))
    return ((x * scale - stat(norm["mean"])) / stat(norm["std"])).astype(np.float32)


def predict(model_dir: str | Path, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class ids for raw images (as ``validation_inputs.npy`` holds them: shape (N, C, H, W), (N, H, W) or one
    (C, H, W)/(H, W) image).

    The manifest's normalisation (scale, mean, std) is applied here, so callers pass raw pixels.

    Raises:
        ArtifactError: a bad folder or manifest, a wrong shape, or NaN / infinite values.
    """
    import onnxruntime as ort

    manifest = load_manifest(model_dir)
    c, h, w = manifest["input"]["shape"][1:]
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2 and (h, w) == x.shape:
        x = x[None, None]
    elif x.ndim == 3 and x.shape == (c, h, w):
        x = x[None]
    elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ArtifactError(f"Input must have shape (N, {c}, {h}, {w}) (or (N, {h}, {w}) for one channel). "
                            f"Got {tuple(np.shape(images))} instead.")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise ArtifactError(f"Input holds NaN or infinite values in {bad} of {len(x)} images; refusing to predict.")
    x = normalise(x, manifest["normalisation"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(manifest.get("session_options", {}).get("intra_op_num_threads", 1))
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(Path(model_dir) / manifest["model_file"]), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: np.ascontiguousarray(x[i:i + batch_size])})[0].argmax(1) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.int64)
