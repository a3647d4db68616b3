"""Readers for the user's data: ``npz`` arrays, an image folder, or a Python callable.

Each returns a ``RawDataset`` of raw float32 images in (N, C, H, W) with integer labels; uint8 sources
keep their 0–255 values and say so with ``default_scale = 1/255`` (the preprocessing applies it). Every
problem is a ``DataError`` that names the key and the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import CallableImportError, import_callable
from .raw import DataError, RawDataset, resize_images

__all__ = [
    "IMAGE_SUFFIXES",
    "call_dataset",
    "dataset_arrays",
    "images_from_array",
    "labels_from_array",
    "read_calibration",
    "read_image_folder",
    "read_npz",
    "to_nchw",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_CHANNELS = (1, 3, 4)


def to_nchw(x: np.ndarray, layout: str, what: str) -> tuple[np.ndarray, str]:
    """(N, C, H, W) view of an image array and the layout it had: NHW, NCHW or NHWC (``auto`` detects).

    Detection: 3 dims are NHW; with 4, a channel axis of 1, 3 or 4 first (NCHW) or last (NHWC); when both
    could be channels NCHW is taken and the note says so. ``layout`` overrides.
    """
    if x.ndim == 3 and layout in ("auto", "NHW"):
        return x[:, None], "NHW"
    if x.ndim != 4 or layout == "NHW":
        raise DataError(
            f"{what} must be images of shape (N, H, W), (N, C, H, W) or (N, H, W, C); got {x.shape}"
            + (f" with layout {layout!r}" if layout != "auto" else "")
            + "."
        )
    if layout == "NCHW":
        return x, "NCHW"
    if layout == "NHWC":
        return np.transpose(x, (0, 3, 1, 2)), "NHWC"
    first, last = x.shape[1] in _CHANNELS, x.shape[3] in _CHANNELS
    if last and not first:
        return np.transpose(x, (0, 3, 1, 2)), "NHWC"
    if first:
        return x, "NCHW" if not last else "NCHW (ambiguous: set 'layout' if the channels are last)"
    raise DataError(f"{what} has shape {x.shape}: no channel axis of 1, 3 or 4 first or last; set 'layout'.")


def images_from_array(x: np.ndarray, layout: str, what: str, image_size: int | None) -> tuple[np.ndarray, str, float]:
    """(raw float32 NCHW images, the layout and dtype found, the scale to [0, 1]) of an image array."""
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{what} must hold numbers; got dtype {x.dtype}.")
    nchw, found = to_nchw(x, layout, what)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    images = nchw.astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{what} contains NaN or infinite values.")
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = resize_images(images, image_size)
    return images, f"{found} {x.dtype}", scale


def labels_from_array(y: np.ndarray, what: str) -> np.ndarray:
    """Integer class ids (int64) of a 1-D label array; floats holding whole numbers are accepted."""
    if y.ndim != 1:
        raise DataError(f"{what} must be a 1-D array of class ids; got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            return y.astype(np.int64)
        raise DataError(f"{what} must be integer class ids; got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise DataError(f"{what} must be class ids >= 0; got {sorted(set(y[y < 0].tolist()))[:5]}.")
    return y.astype(np.int64)


def _load_npz(path: str | None, key: str) -> Any:
    if not path:
        raise DataError(f"The '{key}' parameter must name an .npz file. Got {path!r} instead.")
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise DataError(f"The '{key}' file {path!r} {what}.")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 — anything numpy cannot read is a data error naming the file
        raise DataError(f"The '{key}' file {path!r} is not an .npz archive ({type(exc).__name__}: {exc}).") from None


def read_npz(path: str | None, layout: str = "auto", image_size: int | None = None) -> RawDataset:
    """Arrays ``x_train, y_train, x_val, y_val`` (or ``x, y``, split later by ``val_fraction``)."""
    z = _load_npz(path, "data_path")
    keys = set(z.files)
    if {"x_val", "y_val"} <= keys:
        names = [("x_train", "y_train"), ("x_val", "y_val")] if {"x_train", "y_train"} <= keys else [("x_val", "y_val")]
    elif {"x", "y"} <= keys:
        names = [("x", "y")]
    else:
        raise DataError(
            f"The 'data_path' file {path!r} must hold arrays x_train, y_train, x_val, y_val (or x, y). "
            f"Got {sorted(keys)}."
        )
    parts = []
    for xk, yk in names:
        x, y = z[xk], z[yk]
        images, found, scale = images_from_array(x, layout, f"Array {xk!r} of {path!r}", image_size)
        labels = labels_from_array(y, f"Array {yk!r} of {path!r}")
        if len(labels) != len(images):
            raise DataError(f"Arrays {xk!r} and {yk!r} of {path!r} hold {len(images)} images and {len(labels)} labels.")
        parts.append((images, labels, found, scale))
    if not len(parts[-1][1]):
        raise DataError(f"The 'data_path' file {path!r} holds no validation images ({names[-1][0]!r} is empty).")
    classes = int(max(int(p[1].max()) for p in parts if len(p[1])) + 1)
    source = f"npz {path} ({parts[-1][2]} → NCHW{', scale 1/255' if parts[-1][3] != 1 else ''})"
    if len(parts) == 1 and names[0][0] == "x":
        return RawDataset(parts[0][0], parts[0][1], classes, source, default_scale=parts[0][3])
    train = (
        parts[0]
        if len(parts) == 2
        else (np.zeros((0, *parts[0][0].shape[1:]), np.float32), np.zeros(0, np.int64), "", parts[0][3])
    )
    val = parts[-1]
    return RawDataset(train[0], train[1], classes, source, val_images=val[0], val_labels=val[1], default_scale=val[3])


def read_calibration(path: str, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw calibration images from ``calibration_data_path`` (array ``x``, ``x_train`` or ``x_calibration``)."""
    z = _load_npz(path, "calibration_data_path")
    key = next((k for k in ("x_calibration", "x", "x_train") if k in z.files), None)
    if key is None:
        raise DataError(
            f"The 'calibration_data_path' file {path!r} must hold an array x (or x_calibration, "
            f"x_train). Got {sorted(z.files)}."
        )
    images, _, _ = images_from_array(
        z[key], layout, f"Array {key!r} of {path!r}", shape[-1] if shape[-1] == shape[-2] else None
    )
    if images.shape[1:] != tuple(shape):
        raise DataError(
            f"Calibration images in {path!r} have shape {images.shape[1:]}; the data's images are {tuple(shape)}."
        )
    return images


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 — an unreadable image names its file
        raise DataError(f"Image {str(path)!r} could not be read ({type(exc).__name__}: {exc}).") from None


def _folder_mode(files: Iterable[Path]) -> str:
    from PIL import Image

    for f in files:
        with Image.open(f) as im:
            if im.mode not in ("L", "1", "I", "I;16", "F", "LA"):
                return "RGB"
    return "L"


def _read_split(root: Path, classes: list[str], mode: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Every image under ``root/<class>/``, in file-name order across classes (so numbered files keep their
    order), with its class index."""
    entries = []
    for i, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"The image folder {str(root)!r} has no class folder {name!r} (the training split has it).")
        entries += [(f.name, i, f) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    images, labels = [], []
    for _, i, f in sorted(entries):
        arr = _read_image(f, mode)
        images.append(arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1)))
        labels.append(i)
    if not images:
        raise DataError(f"The image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    shapes = {a.shape for a in images}
    if len(shapes) > 1 and image_size is None:
        raise DataError(f"The images in {str(root)!r} have different sizes {sorted(shapes)[:3]}; set 'image_size'.")
    if image_size is not None:
        stacked = np.concatenate([resize_images(a[None].astype(np.float32), image_size) for a in images])
    else:
        stacked = np.stack(images).astype(np.float32)
    return stacked, np.asarray(labels, dtype=np.int64)


def read_image_folder(data_dir: str, image_size: int | None = None, channels: int | None = None) -> RawDataset:
    """``train/<class>/*`` and ``val/<class>/*`` under ``data_dir`` (or ``<class>/*``, split by ``val_fraction``),
    read with Pillow as grayscale or RGB (what the model's input asks for; else what the images are)."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"The 'data_dir' image folder {data_dir!r} {what}.")
    split = (root / "train").is_dir() and (root / "val").is_dir()
    class_root = root / "train" if split else root
    classes = [p.name for p in _class_folders(class_root)]
    if not classes:
        raise DataError(f"The image folder {str(class_root)!r} has no class folders (<class>/<image>).")
    files = [f for c in classes for f in sorted((class_root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"The image folder {str(class_root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    mode = {1: "L", 3: "RGB"}.get(channels or 0) or _folder_mode(files)
    source = f"image folder {data_dir} ({len(classes)} classes, {'grayscale' if mode == 'L' else 'RGB'}, scale 1/255)"
    x, y = _read_split(class_root, classes, mode, image_size)
    if not split:
        return RawDataset(x, y, len(classes), source, default_scale=1 / 255)
    xv, yv = _read_split(root / "val", classes, mode, image_size)
    return RawDataset(x, y, len(classes), source, val_images=xv, val_labels=yv, default_scale=1 / 255)


def dataset_arrays(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    try:
        for item in ds:
            x, y = item[0], item[1]
            x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            xs.append(x[None] if x.ndim == 2 else x)
            ys.append(int(y))
    except (TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{what} must yield (image tensor, int label) items ({type(exc).__name__}: {exc}).") from None
    if not xs:
        raise DataError(f"{what} is empty.")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DataError(f"{what} yields images of different shapes {sorted(shapes)[:3]}.")
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def call_dataset(spec: str, config_dir: str | None, image_size: int | None = None) -> RawDataset:
    """``package.module:callable`` returning ``(train_dataset, val_dataset)`` of (tensor, int) items."""
    try:
        fn = import_callable(spec, "dataset", [config_dir])
        out = fn()
    except CallableImportError as exc:
        raise DataError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 — user code failing is a data error naming it
        raise DataError(f"The 'dataset' callable {spec!r} failed: {type(exc).__name__}: {exc}") from None
    if not (isinstance(out, tuple) and len(out) == 2) or (out[0] is None and out[1] is None):
        raise DataError(
            f"The 'dataset' callable {spec!r} must return (train_dataset, val_dataset), either may be "
            f"None but not both. Got {type(out).__name__}."
        )
    train, val = out
    parts = {
        k: dataset_arrays(d, f"The {k} dataset of {spec!r}")
        for k, d in (("train", train), ("val", val))
        if d is not None
    }
    if image_size is not None:
        parts = {k: (resize_images(x, image_size), y) for k, (x, y) in parts.items()}
    classes = int(max(int(y.max()) for _, y in parts.values()) + 1)
    source = f"callable {spec}"
    if "val" not in parts:
        return RawDataset(parts["train"][0], parts["train"][1], classes, source)
    xv, yv = parts["val"]
    xt, yt = parts.get("train", (np.zeros((0, *xv.shape[1:]), np.float32), np.zeros(0, np.int64)))
    return RawDataset(xt, yt, classes, source, val_images=xv, val_labels=yv)
