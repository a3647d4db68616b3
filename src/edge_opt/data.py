"""Data stage: offline data sets behind a registry, a deterministic split, loaders.

``digits`` (scikit-learn's bundled 8×8 handwritten digits, upsampled) needs no
download; ``mnist`` / ``fashion-mnist`` read the standard IDX files (raw or .gz)
from ``data_dir``; ``synthetic`` is a seeded toy problem for tests.
"""
from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .config import StudyConfig
from .registry import Registry

__all__ = [
    "DATASETS", "DataBundle", "DataError", "RawDataset", "digits_dataset", "list_datasets", "load_data",
    "load_study_data", "make_loaders", "read_idx", "register_dataset", "synthetic_dataset", "validate_raw",
]


class DataError(ValueError):
    """A data set that cannot be read or is not usable (names the file or the shape)."""


@dataclass(frozen=True)
class RawDataset:
    """Images in [0, 1] as float32 N×C×H×W, integer labels in [0, num_classes)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    source: str


DatasetFactory = Callable[..., RawDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset", "dataset")
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(images)
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


@register_dataset("digits")
def digits_dataset(data_dir: str = "", image_size: int = 28, seed: int = 0) -> RawDataset:
    """scikit-learn's bundled 8×8 digits, upsampled to ``image_size`` (no download)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return RawDataset(_resize(images, image_size), d.target.astype(np.int64), 10, "sklearn.datasets.load_digits (bundled)")


@register_dataset("synthetic")
def synthetic_dataset(data_dir: str = "", image_size: int = 8, seed: int = 0, n_samples: int = 512, num_classes: int = 4) -> RawDataset:
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
            f"IDX file {str(path)!r} is corrupt: dims {list(dims)} need {expected} data bytes, found {len(raw) - header}."
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
    return RawDataset(_resize(images, image_size), labels, num_classes, f"{prefix} IDX files in {data_dir}")


@register_dataset("mnist")
def _mnist(data_dir: str = "data/mnist", image_size: int = 28, seed: int = 0) -> RawDataset:
    return _idx_dataset(data_dir, image_size, "MNIST")


@register_dataset("fashion-mnist")
def _fashion(data_dir: str = "data/fashion-mnist", image_size: int = 28, seed: int = 0) -> RawDataset:
    return _idx_dataset(data_dir, image_size, "Fashion-MNIST")


def validate_raw(ds: RawDataset, name: str) -> None:
    """Check a data set's shapes and labels.

    Raises:
        DataError: empty data, wrong image shape, labels out of range.
    """
    if ds.images.ndim != 4:
        raise DataError(f"Data set {name!r}: images must have shape (N, C, H, W); got {ds.images.shape}.")
    if len(ds.images) == 0:
        raise DataError(f"Data set {name!r} is empty (0 samples).")
    if ds.labels.shape != (len(ds.images),):
        raise DataError(f"Data set {name!r}: labels must have shape ({len(ds.images)},); got {ds.labels.shape}.")
    if ds.labels.min() < 0 or ds.labels.max() >= ds.num_classes:
        bad = np.unique(ds.labels[(ds.labels < 0) | (ds.labels >= ds.num_classes)])[:10].tolist()
        raise DataError(f"Data set {name!r}: labels must be in [0, {ds.num_classes}); got {bad}.")
    if not np.isfinite(ds.images).all():
        raise DataError(f"Data set {name!r}: images contain NaN or inf values.")


@dataclass(frozen=True, eq=False)
class DataBundle:
    """Loaders and what downstream stages need to know about the data."""

    train_loader: DataLoader
    val_loader: DataLoader
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: float
    std: float
    source: str
    n_train: int
    n_val: int
    val_images_raw: np.ndarray = field(repr=False)  # un-normalised, for the exported artifact's check
    val_labels: np.ndarray = field(repr=False)

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """The first ``n`` training batches in the split's fixed order (no shuffling), inputs only."""
        ordered = DataLoader(self.train_loader.dataset, batch_size=self.train_loader.batch_size, shuffle=False)
        out: list[torch.Tensor] = []
        for x, _ in ordered:
            if len(out) >= n:
                break
            out.append(x)
        return out


def make_loaders(
    ds: RawDataset,
    *,
    batch_size: int,
    dataloader_seed: int,
    val_fraction: float = 0.25,
    train_subset: int | None = None,
    val_subset: int | None = None,
    num_workers: int = 0,
) -> DataBundle:
    """Split deterministically (by ``dataloader_seed``), subset, normalise, and wrap in loaders.

    Normalisation statistics come from the training split only.
    """
    validate_raw(ds, ds.source)
    n = len(ds.images)
    perm = np.random.default_rng(dataloader_seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise DataError(f"Data set {ds.source!r} has {n} samples: too few to split into train and validation.")
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    if val_subset is not None:
        val_idx = val_idx[:val_subset]
    x_train = ds.images[train_idx]
    mean, std = float(x_train.mean()), float(x_train.std()) or 1.0

    def tensors(idx: np.ndarray) -> TensorDataset:
        x = torch.from_numpy((ds.images[idx] - mean) / std).float()
        return TensorDataset(x, torch.from_numpy(ds.labels[idx]))

    gen = torch.Generator().manual_seed(dataloader_seed)
    train_loader = DataLoader(tensors(train_idx), batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)
    val_loader = DataLoader(tensors(val_idx), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return DataBundle(
        train_loader=train_loader,
        val_loader=val_loader,
        input_shape=(int(ds.images.shape[1]), int(ds.images.shape[2]), int(ds.images.shape[3])),
        num_classes=ds.num_classes,
        mean=mean,
        std=std,
        source=ds.source,
        n_train=len(train_idx),
        n_val=len(val_idx),
        val_images_raw=ds.images[val_idx],
        val_labels=ds.labels[val_idx],
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


def load_study_data(cfg: StudyConfig) -> DataBundle:
    """The study's data, exactly as its config asks (every executor loads it through here)."""
    return load_data(cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size, batch_size=cfg.batch_size,
                     dataloader_seed=cfg.dataloader_seed, val_fraction=cfg.val_fraction,
                     train_subset=cfg.train_subset, val_subset=cfg.val_subset, num_workers=cfg.num_workers)
