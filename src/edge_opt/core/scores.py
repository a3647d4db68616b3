"""Class scores as the classification readers take them: (N, C).

Caffe2-era classifiers (SqueezeNet, DenseNet in the ONNX model zoo) end in a convolution and a global pooling
without a flatten, so their one output is (N, C, 1, 1). Top-1 / top-5, the ``accuracy`` column, ``predict`` and
cross-entropy fine-tuning read such scores as (N, C). Only exactly two trailing axes of length 1 are dropped: any
other shape is left as it is for the reader to accept or refuse (a (N, C, H, W) segmentation map must not be read
as class scores).
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["class_scores"]

ArrayT = TypeVar("ArrayT")


def class_scores(scores: ArrayT) -> ArrayT:
    """``scores`` (a NumPy array or a torch tensor) as (N, C) when it is exactly (N, C, 1, 1); else unchanged."""
    shape = tuple(getattr(scores, "shape", ()))
    if len(shape) == 4 and shape[2:] == (1, 1):
        return scores.reshape(shape[0], shape[1])  # type: ignore[attr-defined]
    return scores
