"""The raw arrays a data set reads into, and the error a data set that cannot be used raises.

Below both the readers of the user's files and the registry of built-in data sets, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DataError", "RawDataset", "resize_images"]


class DataError(ValueError):
    """A data set that cannot be read or is not usable (names the file or the shape)."""


@dataclass(frozen=True)
class RawDataset:
    """Raw images as float32 N×C×H×W, integer labels in [0, num_classes).

    ``images``/``labels`` are the whole set (split by ``val_fraction``) or, when ``val_images`` is given,
    the training split (possibly empty). ``default_scale`` turns raw values into [0, 1] (1/255 for uint8
    sources); the built-in sets are already in [0, 1].
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    source: str
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    default_scale: float = 1.0


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float32 (N, C, H, W) images to size × size (unchanged when already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    t = torch.from_numpy(images)
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()
