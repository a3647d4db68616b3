"""Make the detection example's files: a small grid detector trained on generated 32×32 scenes, saved as
``model.onnx`` (one output: (N, 16, 7), per cell of a 4×4 grid an objectness logit, a box and 2 class logits; see
decode.py), plus ``data.npz``: uint8 images ``x_*`` (N, 1, 32, 32) and their boxes ``y_*`` (N, 2, 5), rows
``[label, x1, y1, x2, y2]`` in pixels, padded with rows of -1 where an image holds one object (the encoding
``map50`` reads from an npz, docs/scoring.md).

Each scene holds one or two rectangles on a noisy background, apart from each other, whose centres fall in
different grid cells: class 0 is a filled rectangle, class 1 an outline two pixels wide.

    python examples/tasks/detection/make_files.py      # from the repository root; about a minute on a laptop CPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decode import CLASSES, GRID, SIDE, decode  # noqa: E402  (the example's own postprocess, beside this file)

CELL = SIDE // GRID
MAX_OBJECTS = 2


def _place(rng: np.random.Generator, taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """A rectangle (x1, y1, x2, y2) clear of ``taken`` by 2 pixels, its centre in a cell none of them uses."""
    for _ in range(100):
        w, h = rng.integers(6, 15, 2)
        x1, y1 = int(rng.integers(0, SIDE - w + 1)), int(rng.integers(0, SIDE - h + 1))
        box = (x1, y1, x1 + int(w), y1 + int(h))
        cell = ((box[0] + box[2]) // 2 // CELL, (box[1] + box[3]) // 2 // CELL)
        clear = all(box[0] >= t[2] + 2 or t[0] >= box[2] + 2 or box[1] >= t[3] + 2 or t[1] >= box[3] + 2 for t in taken)
        if clear and all(cell != ((t[0] + t[2]) // 2 // CELL, (t[1] + t[3]) // 2 // CELL) for t in taken):
            return box
    return None


def scenes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (N, 1, 32, 32) images and their float32 (N, 2, 5) box rows (-1 rows: no object)."""
    x = 0.25 * rng.random((n, SIDE, SIDE))
    y = np.full((n, MAX_OBJECTS, 5), -1.0, np.float32)
    for s in range(n):
        taken: list[tuple[int, int, int, int]] = []
        for k in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            box = _place(rng, taken)
            if box is None:
                break
            taken.append(box)
            label = int(rng.integers(0, CLASSES))
            x1, y1, x2, y2 = box
            x[s, y1:y2, x1:x2] = rng.uniform(0.6, 1.0)
            if label == 1:  # an outline: the inside back to background
                x[s, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = 0.25 * rng.random((y2 - y1 - 4, x2 - x1 - 4))
            y[s, k] = (label, *box)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, None], y


class GridDetector(nn.Module):
    """Four 3×3 convolutions (three halving the resolution) and a 1×1 head: one row of 5 + C numbers per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(32, 5 + CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(2).transpose(1, 2)  # (N, S·S, 5 + C), cells row-major


def grid_targets(y: np.ndarray) -> np.ndarray:
    """Per cell: [object?, centre x / y within the cell, width / height of the image side, class] (N, S·S, 6)."""
    t = np.zeros((len(y), GRID * GRID, 6), np.float32)
    for i, rows in enumerate(y):
        for label, x1, y1, x2, y2 in rows[rows[:, 0] >= 0]:
            cx, cy = (x1 + x2) / 2 / CELL, (y1 + y2) / 2 / CELL
            cell = int(cy) * GRID + int(cx)
            t[i, cell] = (1, cx - int(cx), cy - int(cy), (x2 - x1) / SIDE, (y2 - y1) / SIDE, label)
    return t


def loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    bce = nn.functional.binary_cross_entropy_with_logits
    obj = t[..., 0] > 0
    box = bce(out[..., 1:5][obj], t[..., 1:5][obj])
    cls = nn.functional.cross_entropy(out[..., 5:][obj], t[..., 5][obj].long())
    return bce(out[..., 0], t[..., 0]) + 5 * box + cls


def main() -> None:
    from edge_opt.measure import get_metric

    rng = np.random.default_rng(0)
    x_fit, y_fit = scenes(6000, rng)  # trained on, not saved
    x_train, y_train = scenes(128, rng)  # saved: the int8 calibration batches
    x_val, y_val = scenes(256, rng)
    np.savez_compressed(HERE / "data.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    torch.manual_seed(0)
    model = GridDetector()
    xt, tt = torch.from_numpy(x_fit.astype(np.float32) / 255), torch.from_numpy(grid_targets(y_fit))
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(30):
        order = torch.randperm(len(xt))
        for k in range(0, len(xt), 64):
            b = order[k : k + 64]
            opt.zero_grad()
            loss(model(xt[b]), tt[b]).backward()
            opt.step()
    model.eval()
    torch.onnx.export(
        model,
        (xt[:2],),
        str(HERE / "model.onnx"),
        dynamo=True,
        external_data=False,
        input_names=["image"],
        output_names=["grid"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    with torch.inference_mode():
        out = model(torch.from_numpy(x_val.astype(np.float32) / 255)).numpy()
    print(f"wrote model.onnx, data.npz in {HERE} (validation mAP@0.5 {get_metric('map50')(decode([out]), y_val):.4f})")


if __name__ == "__main__":
    main()
