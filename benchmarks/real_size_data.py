"""Fixed images for the real-size bench row (``mobilenetv2_224.yaml``): no download, same pixels on every run.

The row times building and measuring a real-size network, not what it learns, so the images are seeded uniform
noise in [0, 1] (3×224×224, 10 classes): 256 training images (the int8 calibration batches) and 192 validation
images, as the yardstick of issue 34 asks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

SIDE = 224
CLASSES = 10
TRAIN_IMAGES = 256
VAL_IMAGES = 192


def fixed_images(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """(train, validation) datasets of seeded random RGB images with seeded labels (``dataset:`` callable)."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in (TRAIN_IMAGES, VAL_IMAGES):
        x = rng.random((n, 3, SIDE, SIDE), dtype=np.float32)
        y = rng.integers(0, CLASSES, size=n)
        y[:CLASSES] = np.arange(CLASSES)  # every class present in both splits
        parts.append(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    return parts[0], parts[1]
