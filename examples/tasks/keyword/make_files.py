"""Make the keyword-spotting example's files: a small CNN trained on generated spectrogram-like features
(20 frequency bands × 32 frames, a non-square input), saved as ``model.onnx``, plus ``data.npz`` (uint8 features,
a train/val split with class ids) and ``unlabelled.npz`` (the same validation features without ``y_val``, for
the label-free ``agreement`` metric).

The four "keywords" are shapes in the time-frequency plane: a rising sweep, a falling sweep, a steady low tone
and two high bursts, each shifted in time and buried in noise.

    python examples/tasks/keyword/make_files.py      # from the repository root; a few seconds on a laptop CPU
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
BANDS, FRAMES, CLASSES = 20, 32, 4


def features(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 (N, 1, 20, 32) spectrogram-like features and their class ids."""
    y = rng.integers(0, CLASSES, n)
    x = 0.5 * rng.random((n, BANDS, FRAMES))
    for i, c in enumerate(y):
        start = int(rng.integers(0, 12))
        t = np.arange(start, start + 20)
        if c == 0:
            bands = np.linspace(2, 17, 20)
        elif c == 1:
            bands = np.linspace(17, 2, 20)
        elif c == 2:
            bands = np.full(20, 4.0)
        else:
            bands = np.where((t - start) % 10 < 4, 15.0, -10.0)
        for tt, b in zip(t, bands, strict=True):
            if b >= 0:
                lo = int(b)
                x[i, lo : lo + 2, tt] += 0.2 + 0.2 * rng.random()
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, None], y.astype(np.int64)


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )


def main() -> None:
    rng = np.random.default_rng(0)
    x_fit, y_fit = features(2000, rng)  # trained on, not saved
    x_train, y_train = features(128, rng)  # saved: the int8 calibration batches
    x_val, y_val = features(256, rng)
    np.savez_compressed(HERE / "data.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    np.savez_compressed(HERE / "unlabelled.npz", x_train=x_train, x_val=x_val)
    torch.manual_seed(0)
    model = build()
    xt, yt = torch.from_numpy(x_fit.astype(np.float32) / 255), torch.from_numpy(y_fit)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(10):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    model.eval()
    torch.onnx.export(
        model,
        (xt[:2],),
        str(HERE / "model.onnx"),
        dynamo=True,
        external_data=False,
        input_names=["features"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    with torch.inference_mode():
        acc = float((model(torch.from_numpy(x_val.astype(np.float32) / 255)).argmax(1).numpy() == y_val).mean())
    print(f"wrote model.onnx, data.npz, unlabelled.npz in {HERE} (validation top-1 {acc:.4f})")


if __name__ == "__main__":
    main()
