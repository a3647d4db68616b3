"""The raw arrays a data set reads into, and the error a data set that cannot be used raises.

Below both the readers of the user's files and the registry of built-in data sets, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TARGET_KINDS", "DataError", "InputArrays", "ModelInput", "RawDataset", "resize_images", "takes_images"]

TARGET_KINDS = ("class_ids", "any", "none")
"""What a data set's labels hold, as the study's metric reads them: ``class_ids`` — integer class ids (N,) in
[0, num_classes) (top1, top5; registry models learn them); ``any`` — numbers of any shape (N, ...) (masks, 0/1
labels, regression values); ``none`` — the metric needs no labels, which may be left out."""


class DataError(ValueError):
    """A data set that cannot be read or is not usable (names the file or the shape)."""


@dataclass(frozen=True)
class ModelInput:
    """One input of a model as its file declares it: name, NumPy dtype name and shape (None: a dynamic
    dimension, the batch dimension first)."""

    name: str
    dtype: str
    dims: tuple[int | None, ...]

    def describe(self) -> str:
        """``name (N, 24) int64`` for messages."""
        shape = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name} ({shape}) {self.dtype}"


def takes_images(inputs: tuple[ModelInput, ...] | None) -> bool:
    """Whether a model takes one float32 (N, C, H, W) image batch (the image path: layouts, scaling,
    normalisation); None (not known, e.g. a PyTorch module) reads as images."""
    return inputs is None or (len(inputs) == 1 and inputs[0].dtype == "float32" and len(inputs[0].dims) == 4)


@dataclass(frozen=True)
class InputArrays:
    """The samples of a model that does not take one float image batch: one array per model input, in the model's
    input order (token ids and an attention mask; a 1-D signal; an int64 input), each as the model takes it — no
    layout change, scaling or normalisation. Indexes along the samples like one array (``x[idx]``, ``len(x)``), so
    splits and subsets read it as they read images.
    """

    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.arrays[0]) if self.arrays else 0

    def __getitem__(self, idx: object) -> InputArrays:
        return InputArrays(self.names, tuple(a[idx] for a in self.arrays))  # type: ignore[call-overload]

    @property
    def sample_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each input's shape per sample (without the batch dimension)."""
        return tuple(tuple(int(d) for d in a.shape[1:]) for a in self.arrays)

    def describe(self) -> str:
        """``name (shape) dtype`` of each input, for messages and the report."""
        return ", ".join(f"{n} {tuple(a.shape[1:])} {a.dtype}" for n, a in zip(self.names, self.arrays, strict=True))


@dataclass(frozen=True)
class RawDataset:
    """Raw images as float32 N×C×H×W and their targets (``labels``, one row per image); for a model that does not
    take one float image batch, ``InputArrays`` (one array per model input, as the model takes them).

    ``images``/``labels`` are the whole set (split by ``val_fraction``) or, when ``val_images`` is given,
    the training split (possibly empty). ``default_scale`` turns raw values into [0, 1] (1/255 for uint8
    sources); the built-in sets are already in [0, 1].

    ``targets`` says what the labels hold (see ``TARGET_KINDS``): ``class_ids`` — int64 (N,) in
    [0, num_classes); ``any`` — numbers of any shape (N, ...), int64 for integers and booleans, floats as given;
    ``none`` — no targets: ``labels`` has shape (N, 0). ``num_classes`` is meaningful only for class ids: with
    other targets it is the class count when they are 1-D integers ≥ 0 (e.g. 0/1 labels), else 0.
    """

    images: np.ndarray | InputArrays
    labels: np.ndarray
    num_classes: int
    source: str
    val_images: np.ndarray | InputArrays | None = None
    val_labels: np.ndarray | None = None
    default_scale: float = 1.0
    targets: str = "class_ids"


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float32 (N, C, H, W) images to size × size (unchanged when already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(images)
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()
