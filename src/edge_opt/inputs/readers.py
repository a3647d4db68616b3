"""Readers for the user's data: ``npz`` arrays, an image folder, a Python callable, or arrays and datasets
handed to ``edge_opt.optimize``.

Every image array, whatever its source, goes through ``images_from_array`` (dtype, layout, pixels, NaN, resize)
and every user dataset through ``dataset_arrays`` (read by index up to ``len()``, each call to the user's code
through ``call_user_code``); every image file through one opener for ``train/`` and ``val/``. Each returns raw
float32 images in (N, C, H, W) with the scale its dtype implies (uint8: 1/255; float: 1) and integer labels
(an npz file's labels may be targets of any shape, or absent, as the study's metric reads them: ``read_npz``).
Every problem is a ``DataError`` that names the key, the file or the item.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import CallableImportError, UserCodeError, call_user_code, import_callable
from .raw import TARGET_KINDS, DataError, InputArrays, ModelInput, RawDataset, resize_images, takes_images

__all__ = [
    "IMAGE_SUFFIXES",
    "call_dataset",
    "dataset_arrays",
    "image_scale",
    "images_from_array",
    "in_units",
    "labels_from_array",
    "match_calibration",
    "no_targets",
    "read_calibration",
    "read_image_folder",
    "read_in_memory",
    "read_in_memory_calibration",
    "read_npz",
    "target_class_count",
    "targets_from_array",
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


ACCEPTED_DTYPES = (
    "uint8 (0-255 pixels, scale 1/255) or float (values as the model takes them: in [0, 1] or already normalised)"
)


def image_scale(dtype: np.dtype[Any], what: str) -> float:
    """The scale that maps an image array's values to the model's, from its dtype alone: uint8 → 1/255, float → 1.

    Other integer dtypes (int8, uint16, int16, int32, int64), bool and non-numbers are refused, as ``predict``
    refuses integer input without an explicit scale: what one unit is worth cannot be told from the dtype.

    Raises:
        DataError: naming ``what``, the dtype given and the dtypes accepted.
    """
    if dtype == np.uint8:
        return 1.0 / 255.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    hint = (
        "Python objects are never unpickled; save a numeric array"
        if dtype == np.dtype(object)
        else "convert them, e.g. x.astype(np.uint8) for 0-255 values or (x / 65535).astype(np.float32) for 16-bit ones"
    )
    raise DataError(f"{what} has dtype {dtype}; images must be {ACCEPTED_DTYPES}: {hint}.")


def images_from_array(x: np.ndarray, layout: str, what: str, image_size: int | None) -> tuple[np.ndarray, str, float]:
    """(raw float32 NCHW images, the layout and dtype found, the scale to the model's values) of an image array.

    The one check of every image array (npz, calibration, datasets, ``edge_opt.optimize``): dtype (see
    ``image_scale``), layout (see ``to_nchw``), images with pixels, finite values; resized when ``image_size``.
    """
    scale = image_scale(x.dtype, what)
    nchw, found = to_nchw(x, layout, what)
    if 0 in nchw.shape[1:]:
        raise DataError(f"{what} has shape {x.shape}: images with no pixels (a channel, height or width of 0).")
    images = nchw.astype(np.float32)
    if not np.isfinite(images).all():
        raise DataError(f"{what} contains NaN or infinite values.")
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = resize_images(images, image_size)
    return images, f"{found} {x.dtype}", scale


def in_units(images: np.ndarray, scale: float, target_scale: float) -> np.ndarray:
    """Raw images of scale ``scale`` in the units of raw images of scale ``target_scale`` (the same model values)."""
    return images if scale == target_scale else (images * np.float32(scale / target_scale)).astype(np.float32)


def match_calibration(images: np.ndarray, scale: float, data: RawDataset, what: str) -> np.ndarray:
    """Calibration images in the data's raw units, so the data's preprocessing maps both alike.

    Raises:
        DataError: their (C, H, W) is not the data's (both shapes named).
    """
    ref = data.val_images if data.val_images is not None else data.images
    if isinstance(ref, InputArrays):
        raise DataError(f"{what} are images, but the model's inputs are not one image batch ({ref.describe()}).")
    shape = ref.shape[1:]
    if images.shape[1:] != shape:
        raise DataError(f"{what} have shape {images.shape[1:]} (C, H, W); the data's images are {shape}.")
    return in_units(images, scale, data.default_scale)


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


def targets_from_array(y: np.ndarray, what: str) -> np.ndarray:
    """Targets of any shape (N, ...) for a metric that reads more than class ids: masks, 0/1 labels, regression
    values. Integers and booleans become int64, floats keep their dtype; they must be finite numbers."""
    if y.ndim == 0 or 0 in y.shape[1:]:
        raise DataError(f"{what} must hold one target per sample (an array of shape (N, ...)); got shape {y.shape}.")
    if y.dtype == np.bool_ or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"{what} must hold numbers (integers, booleans or floats); got dtype {y.dtype}.")
    if not np.isfinite(y).all():
        raise DataError(f"{what} contains NaN or infinite values.")
    return y.astype(y.dtype.newbyteorder("="))  # native byte order: torch reads no other


def no_targets(n: int) -> np.ndarray:
    """The labels of ``n`` samples that have none (a metric that needs no labels): shape (n, 0)."""
    return np.zeros((n, 0), np.int64)


def target_class_count(labels: np.ndarray, targets: str) -> int:
    """``num_classes`` of a data set: max + 1 of class ids; for other targets the same when they are 1-D
    integers ≥ 0 (0/1 labels), else 0 (not class ids)."""
    if not len(labels) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        return 0
    return int(labels.max()) + 1 if targets == "class_ids" or labels.min() >= 0 else 0


def _check_kind(targets: str) -> None:
    if targets not in TARGET_KINDS:
        raise ValueError(f"targets must be one of {list(TARGET_KINDS)}; got {targets!r}.")


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


def _npz_array(z: Any, key: str, path: str | None, param: str) -> np.ndarray:
    """Array ``key`` of an open npz archive; object arrays are refused unread (``allow_pickle=False``)."""
    where = f"Array {key!r} of the '{param}' file {path!r}"
    try:
        return np.asarray(z[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{where} holds Python objects (dtype object), which are never unpickled; save the images as "
                f"{ACCEPTED_DTYPES} and the labels as integers."
            ) from None
        raise DataError(f"{where} cannot be read ({type(exc).__name__}: {exc}).") from None
    except Exception as exc:  # noqa: BLE001 — a damaged member (zip, zlib, truncated) names the file and key
        raise DataError(f"{where} cannot be read ({type(exc).__name__}: {exc}).") from None


def _npz_names(z: Any, path: str | None, targets: str) -> list[tuple[str, str | None]]:
    """The (images, labels) key pairs of an npz archive, training split first; labels None where the metric needs
    none (``targets="none"``) and the archive has no such array."""
    keys = set(z.files)
    optional = targets == "none"
    for xv, yv, xt, yt in (("x_val", "y_val", "x_train", "y_train"), ("x", "y", None, None)):
        if xv in keys and (yv in keys or optional):
            val = (xv, yv if yv in keys else None)
            if xt is not None and yt is not None and xt in keys and (yt in keys or (optional and val[1] is None)):
                return [(xt, yt if yt in keys else None), val]
            return [val]
    labels = "" if optional else " (y_train, y_val, y: the labels; they may be left out only for a label-free metric)"
    raise DataError(
        f"The 'data_path' file {path!r} must hold arrays x_train, y_train, x_val, y_val (or x, y){labels}. "
        f"Got {sorted(keys)}."
    )


def _npz_part(z: Any, xk: str, yk: str | None, path: str | None, kind: str, layout: str, size: int | None) -> Any:
    """(images, labels, layout found, scale) of one split of an npz archive, labels read as ``kind`` says."""
    x = _npz_array(z, xk, path, "data_path")
    images, found, scale = images_from_array(x, layout, f"Array {xk!r} of {path!r}", size)
    if yk is None:
        return images, no_targets(len(images)), found, scale
    y, what = _npz_array(z, yk, path, "data_path"), f"Array {yk!r} of {path!r}"
    labels = labels_from_array(y, what) if kind == "class_ids" else targets_from_array(y, what)
    if len(labels) != len(images):
        raise DataError(f"Arrays {xk!r} and {yk!r} of {path!r} hold {len(images)} images and {len(labels)} labels.")
    return images, labels, found, scale


def read_npz(
    path: str | None,
    layout: str = "auto",
    image_size: int | None = None,
    targets: str = "class_ids",
    inputs: tuple[ModelInput, ...] | None = None,
) -> RawDataset:
    """Arrays ``x_train, y_train, x_val, y_val`` (or ``x, y``, split later by ``val_fraction``).

    Each image array gets the scale of its own dtype; the training images are given in the validation images'
    units (the data set's ``default_scale``). ``targets`` (see ``raw.TARGET_KINDS``): ``class_ids`` — the labels
    are class ids, checked as such; ``any`` — targets of any shape (``targets_from_array``); ``none`` — as ``any``,
    and the labels may be left out (then the data set's ``targets`` is ``none``).

    ``inputs``: the model's inputs when its file declares them. A model that does not take one float image batch
    (several inputs, integer inputs, any rank but 4), or an archive with arrays ``x_<split>/<input name>``, is read
    as ``InputArrays`` (``read_input_arrays``): each input as the model takes it.
    """
    _check_kind(targets)
    z = _load_npz(path, "data_path")
    if not takes_images(inputs) or any("/" in k for k in z.files):
        return read_input_arrays(z, path, targets, inputs)
    names = _npz_names(z, path, targets)
    kind = "class_ids" if targets == "class_ids" else "any"
    parts = [_npz_part(z, xk, yk, path, kind, layout, image_size) for xk, yk in names]
    if not len(parts[-1][0]):
        raise DataError(f"The 'data_path' file {path!r} holds no validation images ({names[-1][0]!r} is empty).")
    found_kind = "none" if names[-1][1] is None else kind
    if found_kind != "none" and len(parts) == 2 and parts[0][1].shape[1:] != parts[-1][1].shape[1:]:
        raise DataError(
            f"Arrays {names[0][1]!r} and {names[-1][1]!r} of {path!r} hold targets of different shapes per sample: "
            f"{parts[0][1].shape[1:]} and {parts[-1][1].shape[1:]}."
        )
    classes = max(target_class_count(p[1], kind) for p in parts)
    val = parts[-1]
    source = f"npz {path} ({val[2]} → NCHW{', scale 1/255' if val[3] != 1 else ''})"
    if len(parts) == 1 and names[0][0] == "x":
        return RawDataset(val[0], val[1], classes, source, default_scale=val[3], targets=found_kind)
    if len(parts) == 2:
        xt, yt = in_units(parts[0][0], parts[0][3], val[3]), parts[0][1]
    else:
        xt, yt = np.zeros((0, *val[0].shape[1:]), np.float32), np.zeros((0, *val[1].shape[1:]), val[1].dtype)
    return RawDataset(
        xt, yt, classes, source, val_images=val[0], val_labels=val[1], default_scale=val[3], targets=found_kind
    )


class _Prefixes:
    """The split names of an archive of per-input arrays (``x_val/ids`` → ``x_val``), read as ``_npz_names``
    reads an archive's keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.files = [k.split("/", 1)[0] for k in keys]


def read_input_arrays(z: Any, path: str | None, targets: str, inputs: tuple[ModelInput, ...] | None) -> RawDataset:
    """A data set of ``InputArrays``: per split, ``x_<split>/<input name>`` for each model input (or ``x_<split>``
    for a model with one input), given as the model takes them (no layout, scaling or normalisation); an
    integer array for an integer input, a float array for a float input (cast to the input's dtype).

    Raises:
        DataError: an input the model does not have, a model input the archive does not give, a dtype of
            another kind than the input's, a rank or a fixed dimension the model does not take, splits or labels
            of different lengths.
    """
    names = _npz_names(_Prefixes(z.files), path, targets)
    kind = "class_ids" if targets == "class_ids" else "any"
    parts = [_input_part(z, xk, yk, path, kind, inputs) for xk, yk in names]
    val = parts[-1]
    if not len(val[0]):
        raise DataError(f"The 'data_path' file {path!r} holds no validation samples ({names[-1][0]!r} is empty).")
    found_kind = "none" if names[-1][1] is None else kind
    classes = max(target_class_count(p[1], kind) for p in parts)
    source = f"npz {path} ({val[0].describe()})"
    if len(parts) == 1:
        if names[0][0] == "x":
            return RawDataset(val[0], val[1], classes, source, targets=found_kind)
        empty = InputArrays(val[0].names, tuple(a[:0] for a in val[0].arrays))
        return RawDataset(empty, val[1][:0], classes, source, val_images=val[0], val_labels=val[1], targets=found_kind)
    train = parts[0]
    if train[0].sample_shapes != val[0].sample_shapes and inputs is None:
        raise DataError(
            f"The training and validation inputs of {path!r} differ in shape: {train[0].describe()} and "
            f"{val[0].describe()}."
        )
    return RawDataset(train[0], train[1], classes, source, val_images=val[0], val_labels=val[1], targets=found_kind)


def _input_part(
    z: Any, prefix: str, yk: str | None, path: str | None, kind: str, inputs: tuple[ModelInput, ...] | None
) -> tuple[InputArrays, np.ndarray]:
    """One split of per-input arrays and its labels (read as ``kind`` says)."""
    given = {k.split("/", 1)[1]: k for k in z.files if k.startswith(prefix + "/")}
    if prefix in z.files:
        if given or (inputs is not None and len(inputs) != 1):
            want = [f"{prefix}/{i.name}" for i in inputs] if inputs else [f"{prefix}/<input name>"]
            raise DataError(
                f"The 'data_path' file {path!r} holds array {prefix!r}, but the model takes "
                f"{len(inputs) if inputs else 'several'} inputs: give one array per input, {want}."
            )
        given = {inputs[0].name if inputs else "input": prefix}
    order = [i.name for i in inputs] if inputs is not None else list(given)
    unknown = sorted(set(given) - set(order))
    if unknown:
        raise DataError(
            f"The 'data_path' file {path!r} gives inputs the model does not have: {unknown} (arrays "
            f"{[given[u] for u in unknown]}); the model's inputs are {order}."
        )
    missing = [n for n in order if n not in given]
    if missing:
        raise DataError(
            f"The 'data_path' file {path!r} does not give the model's inputs {missing}: expected arrays "
            f"{[f'{prefix}/{n}' for n in missing]}."
        )
    specs = {i.name: i for i in inputs} if inputs is not None else {}
    arrays = tuple(
        _input_array(_npz_array(z, given[n], path, "data_path"), specs.get(n), f"Array {given[n]!r} of {path!r}")
        for n in order
    )
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise DataError(f"The inputs of split {prefix!r} of {path!r} hold different numbers of samples: {lengths}.")
    x = InputArrays(tuple(order), arrays)
    if yk is None:
        return x, no_targets(len(x))
    y, what = _npz_array(z, yk, path, "data_path"), f"Array {yk!r} of {path!r}"
    labels = labels_from_array(y, what) if kind == "class_ids" else targets_from_array(y, what)
    if len(labels) != len(x):
        raise DataError(f"Arrays {prefix!r}/… and {yk!r} of {path!r} hold {len(x)} samples and {len(labels)} labels.")
    return x, labels


def _input_array(a: np.ndarray, spec: ModelInput | None, what: str) -> np.ndarray:
    """One input's array as the model takes it: same kind of dtype (integer/boolean or float), cast to the
    input's dtype; the model's rank and fixed dimensions (beyond the batch)."""
    if a.ndim == 0:
        raise DataError(f"{what} must hold one input per sample (shape (N, ...)); got a scalar.")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"{what} must hold numbers; got dtype {a.dtype}.")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise DataError(f"{what} contains NaN or infinite values.")
    if spec is None:
        return np.ascontiguousarray(a.astype(a.dtype.newbyteorder("=")))
    want = np.dtype(spec.dtype)
    if np.issubdtype(want, np.floating) != np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{what} has dtype {a.dtype}, but the model's input {spec.describe()} does not take it.")
    if a.ndim != len(spec.dims):
        raise DataError(f"{what} has shape {a.shape}, but the model's input is {spec.describe()}.")
    bad = [(i, d) for i, d in enumerate(spec.dims[1:], 1) if d is not None and a.shape[i] != d]
    if bad:
        raise DataError(f"{what} has shape {a.shape}, but the model's input is {spec.describe()}.")
    if np.issubdtype(want, np.integer) and np.issubdtype(a.dtype, np.integer) and len(a):
        info = np.iinfo(want)
        if int(a.min()) < info.min or int(a.max()) > info.max:
            raise DataError(f"{what} holds values outside {want} (the model's input {spec.describe()}).")
    return np.ascontiguousarray(a.astype(want))


def read_calibration(path: str, layout: str, image_size: int | None) -> tuple[np.ndarray, float]:
    """Raw calibration images from ``calibration_data_path`` (array ``x``, ``x_train`` or ``x_calibration``) and
    their scale, read as the data's images are (``match_calibration`` then checks them against the data)."""
    z = _load_npz(path, "calibration_data_path")
    key = next((k for k in ("x_calibration", "x", "x_train") if k in z.files), None)
    if key is None:
        raise DataError(
            f"The 'calibration_data_path' file {path!r} must hold an array x (or x_calibration, "
            f"x_train). Got {sorted(z.files)}."
        )
    x = _npz_array(z, key, path, "calibration_data_path")
    images, _, scale = images_from_array(
        x, layout, f"Array {key!r} of the 'calibration_data_path' file {path!r}", image_size
    )
    return images, scale


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@contextmanager
def _open_image(path: Path) -> Iterator[Any]:
    """The one opener of image files (both splits, the mode probe and the read): anything that fails while the
    image is open — unreadable, corrupt, a symlink loop, a decompression bomb (Pillow's warning included) —
    is a ``DataError`` naming the file."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"Image {str(path)!r} is refused as a possible decompression bomb ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 — an unreadable image names its file
        raise DataError(f"Image {str(path)!r} could not be read ({type(exc).__name__}: {exc}).") from None


def _read_image(path: Path, mode: str) -> np.ndarray:
    with _open_image(path) as im:
        return np.asarray(im.convert(mode), dtype=np.uint8)


def _folder_mode(files: Iterable[Path]) -> str:
    for f in files:
        with _open_image(f) as im:
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


def _user(what: str, fn: Any, *args: Any) -> Any:
    """The user's ``fn(*args)``; whatever escapes it (``sys.exit`` included) is a ``DataError`` naming ``what``."""
    try:
        return call_user_code(what, fn, *args)
    except UserCodeError as exc:
        raise DataError(str(exc)) from None


def _kind(obj: Any) -> str:
    return "a generator" if isinstance(obj, types.GeneratorType) else f"a {type(obj).__name__}"


def _items(ds: Any, what: str) -> Iterator[Any]:
    """The items of a user dataset: a map-style one (``__len__`` and ``__getitem__``) by index over
    ``range(len(ds))``; an iterable with ``__len__`` (a torch ``IterableDataset`` too: its ``__getitem__`` is
    torch's placeholder) by iterating, checked to yield exactly that many. One
    without ``__len__`` is refused: nothing bounds it."""
    cls = type(ds)
    if isinstance(ds, (Mapping, str, bytes)) or not hasattr(cls, "__len__"):
        why = "is not a dataset" if hasattr(cls, "__len__") else "has no len(), so nothing bounds it"
        raise DataError(
            f"{what} ({_kind(ds)}) {why}: give (x, y) arrays or a dataset of (image, label) items with "
            "__len__ and __getitem__ (a map-style dataset; list(...) an iterable first)."
        )
    n = _user(f"{what}'s __len__", len, ds)
    if hasattr(cls, "__getitem__") and not isinstance(ds, torch.utils.data.IterableDataset):
        for i in range(n):
            yield _user(f"{what}[{i}]", lambda d, k: d[k], ds, i)
        return
    it = _user(f"{what}'s __iter__", iter, ds)
    end = object()
    for i in range(n + 1):
        item = _user(f"{what}'s __next__", next, it, end)
        if item is end:
            if i < n:
                raise DataError(f"{what} yields {i} items but its len() is {n}.")
            return
        if i == n:
            raise DataError(f"{what} yields more items than its len() of {n}.")
        yield item


def _as_array(v: Any, what: str) -> np.ndarray:
    try:
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{what} could not be made an array ({type(exc).__name__}: {str(exc)[:200]}).") from None


def _item(item: Any, i: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(image as C×H×W, label as a 0-d array) of one dataset item."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        if isinstance(item, Mapping):
            got = f"a dict with keys {sorted(str(k) for k in item)[:6]}"
        else:
            got = f"{_kind(item)} of {len(item)}" if isinstance(item, (tuple, list)) else _kind(item)
        raise DataError(f"{what} must yield (image, label) pairs; item {i} is {got}.")
    x = _as_array(item[0], f"The image of item {i} of {what}")
    y = _as_array(item[1], f"The label of item {i} of {what}")
    if x.ndim not in (2, 3):
        raise DataError(f"The image of item {i} of {what} must have shape (C, H, W) or (H, W); got {x.shape}.")
    if y.ndim != 0:
        raise DataError(f"The label of item {i} of {what} must be one class id; got shape {y.shape}.")
    return (x[None] if x.ndim == 2 else x), y


def _several(x: Any) -> bool:
    """Whether one sample's (or batch's) input is several named or positional inputs: a dict, or a tuple/list of
    arrays/tensors."""
    if isinstance(x, Mapping):
        return True
    return isinstance(x, (tuple, list)) and len(x) > 0 and all(isinstance(v, (np.ndarray, torch.Tensor)) for v in x)


def input_arrays(x: Any, what: str) -> InputArrays:
    """Several inputs handed over in memory, each (N, ...): a dict ``{input name: array}`` or a tuple of arrays
    in the model's input order (named ``input_0``, ``input_1``… until matched with the model's inputs).

    Raises:
        DataError: an input that is not an array of numbers, or inputs of different lengths.
    """
    items = list(x.items()) if isinstance(x, Mapping) else [(f"input_{i}", v) for i, v in enumerate(x)]
    arrays = tuple(
        _input_array(_as_array(v, f"Input {k!r} of {what}"), None, f"Input {k!r} of {what}") for k, v in items
    )
    if len({len(a) for a in arrays}) != 1:
        raise DataError(f"The inputs of {what} hold different numbers of samples: {[len(a) for a in arrays]}.")
    return InputArrays(tuple(str(k) for k, _ in items), arrays)


def conform_inputs(x: InputArrays, inputs: tuple[ModelInput, ...], what: str) -> InputArrays:
    """``x`` in the model's input order and dtypes: named inputs matched by name, positional ones
    (``input_0``…) by position; every array checked as ``read_input_arrays`` checks a file's.

    Raises:
        DataError: an input the model does not have, a model input not given, a dtype, rank or fixed dimension
            the model does not take.
    """
    positional = all(n == f"input_{i}" for i, n in enumerate(x.names))
    names = [i.name for i in inputs]
    given = dict(zip(names, x.arrays, strict=False)) if positional else dict(zip(x.names, x.arrays, strict=True))
    if positional and len(x.names) != len(names):
        raise DataError(f"{what} gives {len(x.names)} inputs; the model takes {len(names)}: {names}.")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise DataError(f"{what} gives inputs the model does not have: {unknown}; the model's inputs are {names}.")
    missing = [n for n in names if n not in given]
    if missing:
        raise DataError(f"{what} does not give the model's inputs {missing}.")
    arrays = tuple(_input_array(given[i.name], i, f"Input {i.name!r} of {what}") for i in inputs)
    return InputArrays(tuple(names), arrays)


def _dataset_inputs(ds: Any, what: str, targets: str) -> tuple[InputArrays, np.ndarray]:
    """A dataset whose items are ``(inputs, target)`` with several inputs (a dict or a tuple of arrays): each
    input stacked over the items."""
    firsts: list[Any] = []
    ys = []
    for i, item in enumerate(_items(ds, what)):
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not _several(item[0]):
            raise DataError(f"{what} must yield (inputs, target) pairs like its first item; item {i} is not one.")
        firsts.append(item[0])
        ys.append(_as_array(item[1], f"The target of item {i} of {what}"))
    if not firsts:
        raise DataError(f"{what} is empty.")
    keys = list(firsts[0]) if isinstance(firsts[0], Mapping) else list(range(len(firsts[0])))
    try:
        stacked = {k: np.stack([_as_array(f[k], f"Input {k!r} of {what}") for f in firsts]) for k in keys}
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"{what} yields inputs of different names or shapes ({type(exc).__name__}: {exc}).") from None
    x = input_arrays(stacked if isinstance(firsts[0], Mapping) else tuple(stacked.values()), what)
    y = np.stack(ys)
    return x, (labels_from_array(y, f"The labels of {what}") if targets == "class_ids" else targets_from_array(y, what))


def dataset_arrays(
    ds: Any, what: str, layout: str = "auto", image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(raw float32 NCHW images, int64 labels, scale) of a dataset of ``(image, label)`` items.

    A map-style dataset is read by index over ``range(len(ds))``; an iterable with ``__len__`` must yield that
    many items; one without ``__len__`` (a generator) is refused. Every call into the dataset runs through
    ``call_user_code``. The stacked images then go through ``images_from_array`` like any array.

    Raises:
        DataError: naming ``what`` and the item: not a pair, not an array, ragged, no pixels, mixed shapes or
            dtypes, a dtype refused, a label that is not one class id, or the user's code failing or exiting.
    """
    xs, ys = [], []
    for i, item in enumerate(_items(ds, what)):
        x, y = _item(item, i, what)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(f"{what} is empty.")
    for kind, values in (("shapes", {x.shape for x in xs}), ("dtypes", {str(x.dtype) for x in xs})):
        if len(values) > 1:
            raise DataError(f"{what} yields images of different {kind} {sorted(values, key=str)[:3]}.")
    images, _, scale = images_from_array(np.stack(xs), layout, what, image_size)
    return images, labels_from_array(np.stack(ys), f"The labels of {what}"), scale


def _in_memory(data: Any, what: str, layout: str, targets: str = "class_ids") -> tuple[Any, np.ndarray, float]:
    """(raw NCHW images, labels, scale) of ``(x, y)`` arrays/tensors or a dataset of ``(image, label)`` items; for
    several inputs (``x`` a dict or a tuple of arrays, or items holding such) ``InputArrays`` and scale 1."""
    pair = isinstance(data, (tuple, list)) and len(data) == 2
    if pair and _several(data[0]) and isinstance(data[1], (np.ndarray, torch.Tensor)) and data[1].ndim >= 1:
        x = input_arrays(data[0], f"the {what}")
        y = _as_array(data[1], f"The {what} labels")
        labels = labels_from_array(y, f"The {what} labels") if targets == "class_ids" else targets_from_array(y, what)
        if len(labels) != len(x):
            raise DataError(f"The {what} data has {len(x)} samples and {len(labels)} labels.")
        return x, labels, 1.0
    if not pair and _first_item_has_several(data):
        x, labels = _dataset_inputs(data, f"The {what} dataset", targets)
        return x, labels, 1.0
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, Mapping, int, float)):
        raw_x, y = _as_array(data[0], f"The {what} images"), _as_array(data[1], f"The {what} labels")
        images, _, scale = images_from_array(raw_x, layout, f"The {what} images", None)
        labels = labels_from_array(y, f"The {what} labels")
    else:
        images, labels, scale = dataset_arrays(data, f"The {what} dataset", layout)
    if len(images) != len(labels):
        raise DataError(f"The {what} data has {len(images)} images and {len(labels)} labels.")
    return images, labels, scale


def _first_item_has_several(data: Any) -> bool:
    """Whether a dataset's first item is ``(inputs, target)`` with several inputs (read without consuming an
    iterable: only indexable datasets are probed)."""
    try:
        indexable = hasattr(data, "__getitem__") and hasattr(data, "__len__") and len(data) > 0
        first = call_user_code("The dataset's first item", data.__getitem__, 0) if indexable else None
    except (UserCodeError, TypeError):  # read again as a dataset of (image, label) items, which names the error
        return False
    return isinstance(first, (tuple, list)) and len(first) == 2 and _several(first[0])


def read_in_memory(val_data: Any, train_data: Any, layout: str, targets: str = "class_ids") -> RawDataset:
    """The data handed to ``edge_opt.optimize``: each ``(x, y)`` arrays/tensors, or a dataset of ``(image, label)``
    items (read as ``dataset_arrays`` reads them); the training images in the validation images' units. Several
    inputs: ``x`` a dict ``{input name: array}`` or a tuple of arrays (items likewise), read as ``InputArrays``.
    ``targets``: what the study's metric reads (``raw.TARGET_KINDS``)."""
    xv, yv, scale = _in_memory(val_data, "val_data", layout, targets)
    if isinstance(xv, InputArrays):
        return _in_memory_inputs(xv, yv, train_data, layout, targets)
    if train_data is not None:
        xt, yt, train_scale = _in_memory(train_data, "train_data", layout, targets)
        xt = in_units(xt, train_scale, scale)
    else:
        xt, yt = np.zeros((0, *xv.shape[1:]), np.float32), np.zeros(0, np.int64)
    classes = int(max(int(yv.max()), int(yt.max()) if len(yt) else 0) + 1)
    return RawDataset(
        xt, yt, classes, "in-memory arrays (edge_opt.optimize)", val_images=xv, val_labels=yv, default_scale=scale
    )


def _in_memory_inputs(xv: InputArrays, yv: np.ndarray, train_data: Any, layout: str, targets: str) -> RawDataset:
    """``read_in_memory`` for several inputs."""
    if train_data is not None:
        xt, yt, _ = _in_memory(train_data, "train_data", layout, targets)
        if not isinstance(xt, InputArrays) or len(xt.names) != len(xv.names):
            raise DataError(f"The train_data must give as many inputs as the val_data ({list(xv.names)}).")
    else:
        xt, yt = xv[:0], yv[:0]
    kind = "class_ids" if targets == "class_ids" else "any"
    classes = max(target_class_count(yv, kind), target_class_count(yt, kind) if len(yt) else 0)
    source = f"in-memory inputs (edge_opt.optimize: {xv.describe()})"
    return RawDataset(xt, yt, classes, source, val_images=xv, val_labels=yv, targets=kind)


def read_in_memory_calibration(data: Any, raw: RawDataset, layout: str) -> np.ndarray:
    """``edge_opt.optimize``'s ``calibration_data`` (images, or what ``read_in_memory`` takes) in ``raw``'s units.

    Raises:
        DataError: as the data's readers; calibration images whose (C, H, W) is not the data's.
    """
    if isinstance(data, (np.ndarray, torch.Tensor)):
        what = "The calibration_data images"
        images, _, scale = images_from_array(_as_array(data, what), layout, what, None)
    else:
        images, _, scale = _in_memory(data, "calibration_data", layout)
    return match_calibration(images, scale, raw, "The calibration_data images")


def _called_inputs(spec: str, out: tuple[Any, Any], targets: str) -> RawDataset:
    """``call_dataset`` for datasets of ``(inputs, target)`` items with several inputs."""
    parts = {
        k: _dataset_inputs(d, f"The {k} dataset of {spec!r}", targets)
        for k, d in (("train", out[0]), ("val", out[1]))
        if d is not None
    }
    xv, yv = parts.get("val", parts.get("train"))  # type: ignore[misc]
    xt, yt = parts["train"] if "val" in parts and "train" in parts else (xv[:0], yv[:0])
    kind = "class_ids" if targets == "class_ids" else "any"
    classes = max(target_class_count(y, kind) for _, y in parts.values())
    source = f"callable {spec} ({xv.describe()})"
    if "val" not in parts:
        return RawDataset(xv, yv, classes, source, targets=kind)
    return RawDataset(xt, yt, classes, source, val_images=xv, val_labels=yv, targets=kind)


def call_dataset(
    spec: str, config_dir: str | None, image_size: int | None = None, layout: str = "auto", targets: str = "class_ids"
) -> RawDataset:
    """``package.module:callable`` returning ``(train_dataset, val_dataset)`` of (image, int) items (read as
    ``dataset_arrays`` reads them; the training images in the validation images' units), or of ``(inputs, target)``
    items whose inputs are a dict or a tuple of arrays (a model with several inputs: ``InputArrays``)."""
    try:
        fn = import_callable(spec, "dataset", [config_dir])
    except CallableImportError as exc:
        raise DataError(str(exc)) from None
    out = _user(f"The 'dataset' callable {spec!r}", fn)
    if not (isinstance(out, tuple) and len(out) == 2) or (out[0] is None and out[1] is None):
        raise DataError(
            f"The 'dataset' callable {spec!r} must return (train_dataset, val_dataset), either may be "
            f"None but not both. Got {type(out).__name__}."
        )
    if any(d is not None and _first_item_has_several(d) for d in out):
        return _called_inputs(spec, out, targets)
    parts = {
        k: dataset_arrays(d, f"The {k} dataset of {spec!r}", layout, image_size)
        for k, d in (("train", out[0]), ("val", out[1]))
        if d is not None
    }
    classes = int(max(int(y.max()) for _, y, _ in parts.values()) + 1)
    source = f"callable {spec}"
    if "val" not in parts:
        xt, yt, scale = parts["train"]
        return RawDataset(xt, yt, classes, source, default_scale=scale)
    xv, yv, scale = parts["val"]
    xt, yt, train_scale = parts.get("train", (np.zeros((0, *xv.shape[1:]), np.float32), np.zeros(0, np.int64), scale))
    return RawDataset(
        in_units(xt, train_scale, scale), yt, classes, source, val_images=xv, val_labels=yv, default_scale=scale
    )
