"""Make the segmentation example's files: a small fully convolutional net trained on generated 16×16 scenes,
saved as ``model.onnx`` (one output: (N, 3, 16, 16) class logits), plus ``data.npz`` (uint8 images; ``y_*`` masks
(N, 16, 16) with 0 = background, 1 = square, 2 = disc).

Each scene holds a bright square and a dimmer disc at random places on a noisy background; where they overlap the
disc is on top.

    python examples/tasks/segmentation/make_files.py      # from the repository root; a few seconds on a laptop CPU
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SIDE, CLASSES = 16, 3


def scenes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (N, 1, 16, 16) images and their uint8 (N, 16, 16) masks."""
    i, j = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    x = 0.3 * rng.random((n, SIDE, SIDE))
    masks = np.zeros((n, SIDE, SIDE), np.uint8)
    for s in range(n):
        size = int(rng.integers(3, 7))
        r, c = rng.integers(0, SIDE - size, 2)
        square = (i >= r) & (i < r + size) & (j >= c) & (j < c + size)
        cy, cx, radius = *rng.uniform(2, SIDE - 2, 2), rng.uniform(1.5, 3.5)
        disc = (i - cy) ** 2 + (j - cx) ** 2 <= radius**2
        x[s][square] += 0.6
        x[s][disc] = 0.35 + 0.3 * rng.random((int(disc.sum()),))
        masks[s][square] = 1
        masks[s][disc] = 2
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, None], masks


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, CLASSES, 1),
    )


def main() -> None:
    rng = np.random.default_rng(0)
    x_fit, y_fit = scenes(2000, rng)  # trained on, not saved
    x_train, y_train = scenes(128, rng)  # saved: the int8 calibration batches
    x_val, y_val = scenes(256, rng)
    np.savez_compressed(HERE / "data.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    torch.manual_seed(0)
    model = build()
    xt, yt = torch.from_numpy(x_fit.astype(np.float32) / 255), torch.from_numpy(y_fit.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        for k in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[k : k + 64]), yt[k : k + 64]).backward()
            opt.step()
    model.eval()
    torch.onnx.export(
        model,
        (xt[:2],),
        str(HERE / "model.onnx"),
        dynamo=True,
        external_data=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    with torch.inference_mode():
        pred = model(torch.from_numpy(x_val.astype(np.float32) / 255)).argmax(1).numpy()
    iou = [((pred == c) & (y_val == c)).sum() / ((pred == c) | (y_val == c)).sum() for c in range(CLASSES)]
    print(f"wrote model.onnx, data.npz in {HERE} (validation mIoU {np.mean(iou):.4f})")


if __name__ == "__main__":
    main()
