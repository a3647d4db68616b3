"""Data stage: offline data sets behind a registry, a deterministic split, loaders.

``digits`` (scikit-learn's bundled 8×8 handwritten digits, upsampled) needs no
download; ``mnist`` / ``fashion-mnist`` read the standard IDX files (raw or .gz)
from ``data_dir``; ``synthetic`` is a seeded toy problem for tests.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..config import InputSettings
from ..core import Registry
from . import readers
from .raw import TARGET_KINDS, DataError, InputArrays, ModelInput, RawDataset, resize_images

__all__ = [
    "DATASETS",
    "DataBundle",
    "Preprocess",
    "digits_dataset",
    "fit_preprocess",
    "list_datasets",
    "load_data",
    "load_raw",
    "check_trainable",
    "load_study_data",
    "make_loaders",
    "read_idx",
    "register_dataset",
    "synthetic_dataset",
    "validate_raw",
]


DatasetFactory = Callable[..., RawDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset", "dataset")
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()


@register_dataset("digits")
def digits_dataset(data_dir: str = "", image_size: int = 28, seed: int = 0) -> RawDataset:
    """scikit-learn's bundled 8×8 digits, upsampled to ``image_size`` (no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return RawDataset(
        resize_images(images, image_size), d.target.astype(np.int64), 10, "sklearn.datasets.load_digits (bundled)"
    )


@register_dataset("synthetic")
def synthetic_dataset(
    data_dir: str = "", image_size: int = 8, seed: int = 0, n_samples: int = 512, num_classes: int = 4
) -> RawDataset:
    """Class-dependent blobs: learnable, seeded, tiny."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n_samples).astype(np.int64)
    protos = rng.random((num_classes, 1, image_size, image_size)).astype(np.float32)
    images = protos[labels] + 0.15 * rng.standard_normal((n_samples, 1, image_size, image_size)).astype(np.float32)
    return RawDataset(np.clip(images, 0, 1).astype(np.float32), labels, num_classes, f"synthetic(seed={seed})")


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip).

    Raises:
        DataError: naming the file, for a bad magic number, truncated data or a bad gzip stream.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"IDX file {str(path)!r} could not be read: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"IDX file {str(path)!r} is corrupt: bad magic number {raw[:4].hex() or '(empty)'}.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {str(path)!r} is corrupt: header truncated.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype: np.dtype[Any] = np.dtype(_IDX_DTYPES[raw[2]])  # type: ignore[call-overload]  # str | type mix
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {str(path)!r} is corrupt: dims {list(dims)} need {expected} data bytes, "
            f"found {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"Data file {stem!r} (or {stem + '.gz'!r}) not found in folder {str(data_dir)!r}.")


def _idx_dataset(data_dir: str, image_size: int, prefix: str, num_classes: int = 10) -> RawDataset:
    folder = Path(data_dir)
    parts = []
    for split in ("train", "t10k"):
        img_path, lbl_path = _find(folder, f"{split}-images-idx3-ubyte"), _find(folder, f"{split}-labels-idx1-ubyte")
        imgs, lbls = read_idx(img_path), read_idx(lbl_path)
        if imgs.ndim != 3:
            raise DataError(f"IDX images {str(img_path)!r} must have shape (N, H, W); got {imgs.shape}.")
        if lbls.ndim != 1 or len(lbls) != len(imgs):
            raise DataError(
                f"IDX labels {str(lbl_path)!r} must have shape ({len(imgs)},) to match the images; got {lbls.shape}."
            )
        parts.append((imgs, lbls, img_path, lbl_path))
    images = np.concatenate([p[0] for p in parts]).astype(np.float32)[:, None] / 255.0
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"Labels in {[str(p[3]) for p in parts]} must be in [0, {num_classes}); got {np.unique(bad)[:10].tolist()}."
        )
    return RawDataset(resize_images(images, image_size), labels, num_classes, f"{prefix} IDX files in {data_dir}")


@register_dataset("mnist")
def _mnist(data_dir: str = "data/mnist", image_size: int = 28, seed: int = 0) -> RawDataset:
    return _idx_dataset(data_dir, image_size, "MNIST")


@register_dataset("fashion-mnist")
def _fashion(data_dir: str = "data/fashion-mnist", image_size: int = 28, seed: int = 0) -> RawDataset:
    return _idx_dataset(data_dir, image_size, "Fashion-MNIST")


def validate_raw(ds: RawDataset, name: str) -> None:
    """Check a data set's shapes and labels (class ids in range when ``ds.targets`` is ``class_ids``; else one
    row of numeric targets per image).

    Raises:
        DataError: empty data, wrong image shape, labels out of range.
    """
    if ds.targets not in TARGET_KINDS:
        raise DataError(f"Data set {name!r}: targets must be one of {list(TARGET_KINDS)}; got {ds.targets!r}.")
    parts = [("", ds.images, ds.labels)]
    if ds.val_images is not None:
        parts.append((" (validation)", ds.val_images, ds.val_labels if ds.val_labels is not None else np.zeros(0)))
    for what, images, labels in parts:
        allow_empty = bool(what == "" and len(parts) > 1)
        if ds.targets == "class_ids":
            _validate_part(f"{name}{what}", images, labels, ds.num_classes, allow_empty)
        else:
            _validate_targets_part(f"{name}{what}", images, labels, allow_empty)
    if isinstance(ds.images, InputArrays) or isinstance(ds.val_images, InputArrays):
        return  # each input's shape was checked against the model's as it was read (dynamic dims may differ)
    if ds.val_images is not None and ds.images.shape[1:] != ds.val_images.shape[1:] and len(ds.images):
        raise DataError(
            f"Data set {name!r}: training images have shape {ds.images.shape[1:]} but validation images "
            f"{ds.val_images.shape[1:]}."
        )


def _validate_part(
    name: str, images: np.ndarray | InputArrays, labels: np.ndarray, num_classes: int, allow_empty: bool
) -> None:
    _validate_images(name, images, allow_empty)
    if labels.shape != (len(images),):
        raise DataError(f"Data set {name!r}: labels must have shape ({len(images)},); got {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"Data set {name!r}: labels must be integers; got dtype {labels.dtype}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = np.unique(labels[(labels < 0) | (labels >= num_classes)])[:10].tolist()
        raise DataError(f"Data set {name!r}: labels must be in [0, {num_classes}); got {bad}.")


def _validate_targets_part(name: str, images: np.ndarray | InputArrays, labels: np.ndarray, allow_empty: bool) -> None:
    """A split whose targets are not class ids: images as always, one row of numeric targets per image."""
    _validate_images(name, images, allow_empty)
    if labels.ndim == 0 or labels.shape[0] != len(images):
        raise DataError(f"Data set {name!r}: targets must have shape ({len(images)}, ...); got {labels.shape}.")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(f"Data set {name!r}: targets must be numbers; got dtype {labels.dtype}.")
    if np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all():
        raise DataError(f"Data set {name!r}: targets contain NaN or inf values.")


def _validate_images(name: str, images: np.ndarray | InputArrays, allow_empty: bool) -> None:
    if isinstance(images, InputArrays):
        if len(images) == 0 and not allow_empty:
            raise DataError(f"Data set {name!r} is empty (0 samples).")
        return
    if images.ndim != 4:
        raise DataError(f"Data set {name!r}: images must have shape (N, C, H, W); got {images.shape}.")
    if len(images) == 0 and not allow_empty:
        raise DataError(f"Data set {name!r} is empty (0 samples).")
    if not np.isfinite(images).all():
        raise DataError(f"Data set {name!r}: images contain NaN or inf values.")


def check_trainable(ds: RawDataset, name: str) -> None:
    """A model the study trains learns class ids: the training labels must be class ids (N,), ≥ 0.

    Raises:
        DataError: naming the data set and what its training labels hold instead.
    """
    labels = ds.labels
    if not len(labels) or (labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0):
        return  # no training data at all is the study's own error
    got = "no labels" if labels.ndim == 2 and labels.shape[1] == 0 else f"shape {labels.shape[1:]} {labels.dtype}"
    raise DataError(
        f"Data set {name!r}: the study trains the model (cross-entropy on class ids), but the training targets are "
        f"not class ids ({got} per sample); give a trained model (model.onnx, model.exported or a factory with "
        "weights) for this metric."
    )


Stat = float | tuple[float, ...]


@dataclass(frozen=True)
class Preprocess:
    """``x = (raw × scale − mean) / std`` (mean/std per channel when tuples)."""

    scale: float = 1.0
    mean: Stat = 0.0
    std: Stat = 1.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Preprocessed float32 copy of an (N, C, H, W) raw batch."""
        mean = (
            np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1) if isinstance(self.mean, tuple) else self.mean
        )
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1) if isinstance(self.std, tuple) else self.std
        return ((raw.astype(np.float32) * np.float32(self.scale) - mean) / std).astype(np.float32)

    def as_dict(self) -> dict[str, Any]:
        """For manifests: scale, mean, std and the formula."""
        return {
            "scale": self.scale,
            "mean": _plain(self.mean),
            "std": _plain(self.std),
            "formula": "(x * scale - mean) / std",
        }


def _plain(v: Stat) -> float | list[float]:
    return list(v) if isinstance(v, tuple) else float(v)


@dataclass(frozen=True, eq=False)
class DataBundle:
    """Loaders and what downstream stages need to know about the data.

    ``train_loader`` is None when only validation data was given (a trained model needs none);
    ``calibration_set`` holds the ``calibration_data_path`` images when given. A model that does not take one float
    image batch gets its inputs as given (``InputArrays``): a batch is then one tensor per input, a tuple for
    several, and ``input_shape`` is the first input's shape per sample.

    ``targets`` says what ``val_labels`` (and the loaders' second tensors) hold, as ``RawDataset.targets``:
    class ids (N,); targets of any shape (N, ...); or, for ``none``, nothing (shape (N, 0)). ``val_targets`` is
    what a metric reads (None when there are none); ``has_class_ids`` says whether top-1 can be read from them.
    """

    train_loader: DataLoader | None
    val_loader: DataLoader
    input_shape: tuple[int, ...]
    num_classes: int
    preprocess: Preprocess
    source: str
    n_train: int
    n_val: int
    val_images_raw: np.ndarray | InputArrays = field(repr=False)  # un-normalised, for the exported artifact's check
    val_labels: np.ndarray = field(repr=False)
    calibration_set: Dataset | None = field(default=None, repr=False)
    targets: str = "class_ids"
    input_names: tuple[str, ...] = ()

    @property
    def takes_images(self) -> bool:
        """Whether the model takes one float image batch (preprocessed here); else ``InputArrays``, batches of
        the model's own inputs (a tuple per batch for several), named ``input_names``."""
        return not self.input_names

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each model input's shape per sample (the validation split's)."""
        x = self.val_images_raw
        return x.sample_shapes if isinstance(x, InputArrays) else (tuple(self.input_shape),)

    @property
    def val_targets(self) -> np.ndarray | None:
        """The validation targets a metric reads, in the validation order (None when the data gives none)."""
        return None if self.targets == "none" else self.val_labels

    @property
    def has_class_ids(self) -> bool:
        """Whether the validation targets are class ids (N,) in [0, num_classes), so top-1 accuracy applies."""
        y = self.val_labels
        if self.targets == "class_ids":
            return True
        ids = self.targets == "any" and y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
        return bool(ids and self.num_classes > 0 and (not len(y) or int(y.min()) >= 0))

    @property
    def mean(self) -> Stat:
        return self.preprocess.mean

    @property
    def std(self) -> Stat:
        return self.preprocess.std

    @property
    def calibration_source(self) -> str:
        """Where int8 calibration batches come from: calibration_data_path, the training split, else validation."""
        if self.calibration_set is not None:
            return "calibration_data_path"
        return "training split" if self.train_loader is not None else "validation split (no training data given)"

    @property
    def calibration_images(self) -> int:
        """How many images the calibration batches are drawn from."""
        source = (
            self.calibration_set
            if self.calibration_set is not None
            else (self.train_loader.dataset if self.train_loader is not None else self.val_loader.dataset)
        )
        return len(source)  # type: ignore[arg-type]

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """The first ``n`` calibration batches in a fixed order (no shuffling), inputs only."""
        source = (
            self.calibration_set
            if self.calibration_set is not None
            else (self.train_loader.dataset if self.train_loader is not None else self.val_loader.dataset)
        )
        ordered = DataLoader(source, batch_size=self.val_loader.batch_size, shuffle=False)
        out: list[torch.Tensor] = []
        for batch in ordered:
            if len(out) >= n:
                break
            out.append(batch[0])
        return out


def _split(
    ds: RawDataset, val_fraction: float, seed: int, train_subset: int | None, val_subset: int | None
) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """(x_train, y_train, x_val, y_val): the given split, or a seeded split by ``val_fraction``."""
    if ds.val_images is not None and ds.val_labels is not None:
        xt, yt, xv, yv = ds.images, ds.labels, ds.val_images, ds.val_labels
    else:
        n = len(ds.images)
        perm = np.random.default_rng(seed).permutation(n)
        n_val = max(1, int(round(n * val_fraction)))
        if n - n_val < 1:
            raise DataError(f"Data set {ds.source!r} has {n} samples: too few to split into train and validation.")
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        xt, yt, xv, yv = ds.images[train_idx], ds.labels[train_idx], ds.images[val_idx], ds.labels[val_idx]
    if train_subset is not None:
        xt, yt = xt[:train_subset], yt[:train_subset]
    if val_subset is not None:
        xv, yv = xv[:val_subset], yv[:val_subset]
    return xt, yt, xv, yv


def fit_preprocess(x_train: np.ndarray, scale: float, given: Any = None, fit: bool = True) -> Preprocess:
    """The preprocessing: ``given`` (a config's ``preprocess``) where set; else mean/std of the scaled training
    images when ``fit`` (a model the study trains), else none (a trained model gets its inputs as they are)."""
    g_scale = getattr(given, "scale", None)
    scale = float(g_scale) if g_scale is not None else scale
    g_mean, g_std = getattr(given, "mean", None), getattr(given, "std", None)

    def stat(v: Any) -> Stat:
        return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)

    if fit and len(x_train) and (g_mean is None or g_std is None):
        scaled = x_train.astype(np.float32) * np.float32(scale)
        mean: Stat = stat(g_mean) if g_mean is not None else float(scaled.mean())
        std: Stat = stat(g_std) if g_std is not None else (float(scaled.std()) or 1.0)
        return Preprocess(scale, mean, std)
    return Preprocess(scale, stat(g_mean) if g_mean is not None else 0.0, stat(g_std) if g_std is not None else 1.0)


def make_loaders(
    ds: RawDataset,
    *,
    batch_size: int,
    dataloader_seed: int,
    val_fraction: float = 0.25,
    train_subset: int | None = None,
    val_subset: int | None = None,
    num_workers: int = 0,
    preprocess: Any = None,
    fit_normalisation: bool = True,
    calibration_images: np.ndarray | None = None,
) -> DataBundle:
    """Split (the given split, else deterministically by ``dataloader_seed``), subset, preprocess, wrap in loaders.

    Normalisation statistics come from the training split only (see ``fit_preprocess``); ``calibration_images``
    are raw images in the data's units (``readers.match_calibration``), preprocessed as the data are.
    """
    validate_raw(ds, ds.source)
    if isinstance(ds.images, InputArrays):
        split = (val_fraction, train_subset, val_subset)
        return _input_loaders(ds, batch_size, dataloader_seed, split, num_workers, preprocess, calibration_images)
    xt, yt, xv, yv = _split(ds, val_fraction, dataloader_seed, train_subset, val_subset)
    pre = fit_preprocess(xt, ds.default_scale, preprocess, fit_normalisation)
    if isinstance(pre.mean, tuple) and len(pre.mean) not in (1, xv.shape[1]):
        raise DataError(f"The 'preprocess.mean' parameter has {len(pre.mean)} values for {xv.shape[1]}-channel images.")

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        y = y.astype(np.int64) if ds.targets == "class_ids" else np.ascontiguousarray(y)
        return TensorDataset(torch.from_numpy(pre.apply(x)), torch.from_numpy(y))

    gen = torch.Generator().manual_seed(dataloader_seed)
    train_loader = (
        DataLoader(tensors(xt, yt), batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)
        if len(xt)
        else None
    )
    val_loader = DataLoader(tensors(xv, yv), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    calib = None
    if calibration_images is not None:
        calib = TensorDataset(torch.from_numpy(pre.apply(calibration_images)))
    return DataBundle(
        train_loader=train_loader,
        val_loader=val_loader,
        input_shape=(int(xv.shape[1]), int(xv.shape[2]), int(xv.shape[3])),
        num_classes=ds.num_classes,
        preprocess=pre,
        source=ds.source,
        n_train=len(xt),
        n_val=len(xv),
        val_images_raw=xv,
        val_labels=yv,
        calibration_set=calib,
        targets=ds.targets,
    )


def _conformed(raw: RawDataset, inputs: tuple[ModelInput, ...]) -> RawDataset:
    """``raw``'s input arrays in the model's input order and dtypes (``readers.conform_inputs``)."""
    val, train = raw.val_images, raw.images
    if not isinstance(train, InputArrays) or not isinstance(val, InputArrays | None):
        raise DataError(f"Data set {raw.source!r} mixes images and per-input arrays between its splits.")
    return replace(
        raw,
        images=readers.conform_inputs(train, inputs, "the training data"),
        val_images=None if val is None else readers.conform_inputs(val, inputs, "the validation data"),
    )


class InputsDataset(Dataset):
    """Samples of ``InputArrays`` with their targets: ``(inputs, target)``, the inputs one tensor (one model input)
    or a tuple of tensors (several), as ``core.batches`` reads a batch once collated."""

    def __init__(self, x: InputArrays, y: np.ndarray | None) -> None:
        self.tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in x.arrays)
        self.targets = None if y is None else torch.from_numpy(np.ascontiguousarray(y))

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x = self.tensors[0][i] if len(self.tensors) == 1 else tuple(t[i] for t in self.tensors)
        return (x,) if self.targets is None else (x, self.targets[i])


def _input_loaders(
    ds: RawDataset,
    batch_size: int,
    dataloader_seed: int,
    split: tuple[float, int | None, int | None],
    num_workers: int,
    preprocess: Any,
    calibration: Any,
) -> DataBundle:
    """``make_loaders`` for ``InputArrays``: the inputs go to the model as given (no preprocessing); ``split``:
    (val_fraction, train_subset, val_subset)."""
    if preprocess is not None:
        raise DataError(
            "The 'preprocess' parameter applies to one float image input; this model's inputs "
            f"({ds.source}) are given as it takes them: leave 'preprocess' out."
        )
    if calibration is not None:
        raise DataError("Calibration images were given, but this model's inputs are not one image batch.")
    xt, yt, xv, yv = _split(ds, split[0], dataloader_seed, split[1], split[2])
    gen = torch.Generator().manual_seed(dataloader_seed)
    train_loader = (
        DataLoader(InputsDataset(xt, yt), batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)
        if len(xt)
        else None
    )
    val_loader = DataLoader(InputsDataset(xv, yv), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return DataBundle(
        train_loader=train_loader,
        val_loader=val_loader,
        input_shape=xv.sample_shapes[0],
        num_classes=ds.num_classes,
        preprocess=Preprocess(),
        source=ds.source,
        n_train=len(xt),
        n_val=len(xv),
        val_images_raw=xv,
        val_labels=yv,
        targets=ds.targets,
        input_names=xv.names,
    )


def load_data(
    name: str,
    *,
    data_dir: str = "data",
    image_size: int = 28,
    batch_size: int = 128,
    dataloader_seed: int = 0,
    val_fraction: float = 0.25,
    train_subset: int | None = None,
    val_subset: int | None = None,
    num_workers: int = 0,
) -> DataBundle:
    """Load a registered data set and build its loaders.

    Args:
        name: registered data set (see ``list_datasets()``).
        data_dir: folder with the IDX files for mnist / fashion-mnist.
        image_size: side length images are resized to.
    Returns:
        A ``DataBundle``.
    Raises:
        DataError: missing/corrupt files, empty data, bad shapes or labels.
    """
    factory = DATASETS.get(name)
    raw = factory(data_dir=data_dir, image_size=image_size, seed=dataloader_seed)
    validate_raw(raw, name)
    return make_loaders(
        raw,
        batch_size=batch_size,
        dataloader_seed=dataloader_seed,
        val_fraction=val_fraction,
        train_subset=train_subset,
        val_subset=val_subset,
        num_workers=num_workers,
    )


def load_raw(
    cfg: InputSettings,
    channels: int | None = None,
    targets: str = "class_ids",
    inputs: tuple[ModelInput, ...] | None = None,
) -> RawDataset:
    """The study's raw data set: a registered one, ``npz``, ``image_folder`` or ``package.module:callable``.

    ``channels``: what the model's input asks for (image folders read RGB or grayscale accordingly).
    ``targets``: what the study's metric reads (``raw.TARGET_KINDS``); an ``npz`` file's labels are read
    accordingly (``readers.read_npz``); the other sources give class ids. ``inputs``: the model's inputs when its
    file declares them (a model that does not take one image batch reads its inputs as given).
    """
    if cfg.dataset == "npz":
        return readers.read_npz(cfg.data_path, cfg.layout, cfg.image_size, targets, inputs)
    if cfg.dataset == "python":
        raise DataError(
            "The 'dataset' value 'python' means arrays handed to edge_opt.optimize; a config file names "
            "a registered data set, 'npz', 'image_folder' or 'package.module:callable'."
        )
    if cfg.dataset == "image_folder":
        return readers.read_image_folder(cfg.data_dir, cfg.image_size, channels)
    if ":" in cfg.dataset:
        return readers.call_dataset(cfg.dataset, cfg.config_dir, cfg.image_size, cfg.layout, targets)
    factory = DATASETS.get(cfg.dataset)
    return factory(data_dir=cfg.data_dir, image_size=cfg.image_size or 28, seed=cfg.dataloader_seed)


def load_study_data(
    cfg: InputSettings,
    raw: RawDataset | None = None,
    channels: int | None = None,
    calibration: np.ndarray | None = None,
    targets: str = "class_ids",
    inputs: tuple[ModelInput, ...] | None = None,
) -> DataBundle:
    """The study's data, exactly as its config asks (every executor loads it through here).

    Args:
        raw: data handed over in memory (``edge_opt.optimize``) instead of the config's ``dataset``.
        targets: what the study's metric reads (``raw.TARGET_KINDS``: ``class_ids`` — top1/top5, checked as
            class ids; ``any`` — targets of any shape; ``none`` — a label-free metric, labels may be left out).
            A model the study trains (a registry model) needs class-id training labels whatever the metric.
        channels: the model's input channels, when known (image folders).
        calibration: raw calibration images handed over in memory, already in the data's units
            (``readers.match_calibration``); else ``calibration_data_path``, read as the data are (its own dtype's
            scale, resized to ``image_size`` when set) and brought to the data's units.
    Raises:
        DataError: data or calibration images that cannot be read or do not fit (both shapes named).
    """
    if targets not in TARGET_KINDS:
        raise ValueError(f"targets must be one of {list(TARGET_KINDS)}; got {targets!r}.")
    raw = raw if raw is not None else load_raw(cfg, channels, targets, inputs)
    if inputs is not None and isinstance(raw.images, InputArrays):
        raw = _conformed(raw, inputs)
    validate_raw(raw, cfg.dataset)
    if raw.targets != "class_ids" and not cfg.model.trained:
        check_trainable(raw, cfg.dataset)
    calib = calibration
    if cfg.calibration_data_path and isinstance(raw.images, InputArrays):
        raise DataError(
            "The 'calibration_data_path' parameter holds images; this model's inputs are not one image batch: "
            "int8 calibration reads the training split (x_train/<input name>), leave 'calibration_data_path' out."
        )
    if calib is None and cfg.calibration_data_path:
        images, scale = readers.read_calibration(cfg.calibration_data_path, cfg.layout, cfg.image_size)
        what = f"The 'calibration_data_path' images in {cfg.calibration_data_path!r}"
        calib = readers.match_calibration(images, scale, raw, what)
    return make_loaders(
        raw,
        batch_size=cfg.batch_size,
        dataloader_seed=cfg.dataloader_seed,
        val_fraction=cfg.val_fraction,
        train_subset=cfg.train_subset,
        val_subset=cfg.val_subset,
        num_workers=cfg.num_workers,
        preprocess=cfg.preprocess,
        fit_normalisation=not cfg.model.trained,
        calibration_images=calib,
    )
