"""The detection example's postprocess: the grid head's raw output decoded into boxes, then non-maximum suppression.

The model's one output is (N, S·S, 5 + C) for an S×S grid over the image (row-major cells): per cell an objectness
logit, the box (tx, ty, tw, th) and C class logits. A cell's box centre is ``(column + σ(tx), row + σ(ty))`` cells,
its width and height ``σ(tw)``, ``σ(th)`` of the image side; its score is σ(objectness) × the best class's softmax
probability. NumPy only, so the decoding is the same for every variant and needs no vision library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIDE = 32  # image side in pixels
GRID = 4  # S: cells per side
CLASSES = 2
MIN_SCORE = 0.01  # detections scored lower are dropped before NMS
NMS_IOU = 0.5  # a box overlapping a higher-scored one of its class by more than this is suppressed


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function without overflow warnings


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``others`` (K, 4)."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    Written here (a dozen lines) because the example's postprocess must not need torchvision or OpenCV.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(int(best))
        order = order[_iou(boxes[best], boxes[order]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def _boxes(raw: np.ndarray) -> np.ndarray:
    """xyxy pixel boxes (N, S·S, 4) of every cell."""
    cell = SIDE / GRID
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    cx = (cols + _sigmoid(raw[..., 1])) * cell
    cy = (rows + _sigmoid(raw[..., 2])) * cell
    w, h = _sigmoid(raw[..., 3]) * SIDE, _sigmoid(raw[..., 4]) * SIDE
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).clip(0, SIDE)


def decode(outputs: list[np.ndarray]) -> list[dict[str, Any]]:
    """One ``{boxes, scores, labels}`` mapping per image (what ``map50`` reads) from the outputs (one array)."""
    raw = np.asarray(outputs[0], dtype=np.float64)
    if raw.ndim != 3 or raw.shape[1:] != (GRID * GRID, 5 + CLASSES):
        raise ValueError(f"decode reads one output of shape (N, {GRID * GRID}, {5 + CLASSES}); got {raw.shape}.")
    boxes = _boxes(raw)
    logits = raw[..., 5:] - raw[..., 5:].max(axis=-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    labels = probs.argmax(axis=-1)
    scores = _sigmoid(raw[..., 0]) * probs.max(axis=-1)
    result = []
    for b, s, c in zip(boxes, scores, labels):
        kept = []
        for k in range(CLASSES):  # suppression within a class only
            candidates = np.flatnonzero((s >= MIN_SCORE) & (c == k))
            kept.append(candidates[nms(b[candidates], s[candidates])])
        idx = np.concatenate(kept)
        idx = idx[np.argsort(-s[idx], kind="stable")]
        result.append({"boxes": b[idx], "scores": s[idx], "labels": c[idx].astype(np.int64)})
    return result
