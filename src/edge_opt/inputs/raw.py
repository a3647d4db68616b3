"""The raw arrays a data set reads into, and the error a data set that cannot be used raises.

Below both the readers of the user's files and the registry of built-in data sets, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TARGET_KINDS", "DataError", "RawDataset", "resize_images"]

TARGET_KINDS = ("class_ids", "any", "none")
"""What a data set's labels hold, as the study's metric reads them: ``class_ids`` — integer class ids (N,) in
[0, num_classes) (top1, top5; registry models learn them); ``any`` — numbers of any shape (N, ...) (masks, 0/1
labels, regression values); ``none`` — the metric needs no labels, which may be left out."""


class DataError(ValueError):
    """A data set that cannot be read or is not usable (names the file or the shape)."""


@dataclass(frozen=True)
class RawDataset:
    """Raw images as float32 N×C×H×W and their targets (``labels``, one row per image).

    ``images``/``labels`` are the whole set (split by ``val_fraction``) or, when ``val_images`` is given,
    the training split (possibly empty). ``default_scale`` turns raw values into [0, 1] (1/255 for uint8
    sources); the built-in sets are already in [0, 1].

    ``targets`` says what the labels hold (see ``TARGET_KINDS``): ``class_ids`` — int64 (N,) in
    [0, num_classes); ``any`` — numbers of any shape (N, ...), int64 for integers and booleans, floats as given;
    ``none`` — no targets: ``labels`` has shape (N, 0). ``num_classes`` is meaningful only for class ids: with
    other targets it is the class count when they are 1-D integers ≥ 0 (e.g. 0/1 labels), else 0.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    source: str
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    default_scale: float = 1.0
    targets: str = "class_ids"


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float32 (N, C, H, W) images to size × size (unchanged when already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(images)
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()
