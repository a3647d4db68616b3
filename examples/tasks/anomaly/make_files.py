"""Make the anomaly-detection example's files (MLPerf Tiny style: an autoencoder scored by its reconstruction
error): a small dense autoencoder trained on normal 8×8 patterns only, saved as ``model.onnx`` with an error head
(the graph's one output is the per-pixel squared error (x − AE(x))², so the score needs no second input), plus
``data.npz`` (uint8 patterns; ``y_val`` 0 = normal, 1 = anomaly; ``x_train`` normal ones for int8 calibration).

Normal patterns are smooth stripes (a sine of random direction and phase); an anomaly carries a 2×2 patch that
breaks the stripe.

    python examples/tasks/anomaly/make_files.py      # from the repository root; a few seconds on a laptop CPU
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SIDE = 8


def patterns(n: int, anomalous: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` uint8 (N, 1, 8, 8) stripe patterns; those flagged ``anomalous`` get a patch of other values."""
    i, j = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    k = rng.integers(0, 2, (n, 2)) + np.array([0, 1])
    phase = rng.random(n) * 2 * np.pi
    x = 0.5 + 0.35 * np.sin(2 * np.pi * (k[:, :1, None] * i + k[:, 1:, None] * j) / SIDE + phase[:, None, None])
    x = x + 0.04 * rng.standard_normal((n, SIDE, SIDE))
    for s in np.flatnonzero(anomalous):
        r, c = rng.integers(0, SIDE - 1, 2)
        x[s, r : r + 2, c : c + 2] = rng.random() * 0.4 + 0.3
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)[:, None]


class ErrorHead(nn.Module):
    """The autoencoder and its squared error: (x − AE(x))², the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.ae = nn.Sequential(
            nn.Flatten(),
            nn.Linear(SIDE * SIDE, 32),
            nn.ReLU(),
            nn.Linear(32, 16),
            nn.Linear(16, 32),
            nn.ReLU(),
            nn.Linear(32, SIDE * SIDE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.ae(x).reshape(x.shape)) ** 2


def main() -> None:
    rng = np.random.default_rng(0)
    x_fit = patterns(3000, np.zeros(3000, bool), rng)  # trained on (normal only), not saved
    x_train = patterns(128, np.zeros(128, bool), rng)
    y_val = (rng.random(256) < 0.25).astype(np.int64)
    x_val = patterns(256, y_val.astype(bool), rng)
    y_train = np.zeros(len(x_train), np.int64)
    np.savez_compressed(HERE / "data.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    torch.manual_seed(0)
    model = ErrorHead()
    xt = torch.from_numpy(x_fit.astype(np.float32) / 255)
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(30):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            model(xt[i : i + 64]).mean().backward()
            opt.step()
    model.eval()
    torch.onnx.export(
        model,
        (xt[:2],),
        str(HERE / "model.onnx"),
        dynamo=True,
        external_data=False,
        input_names=["pattern"],
        output_names=["squared_error"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    from sklearn.metrics import roc_auc_score

    with torch.inference_mode():
        err = model(torch.from_numpy(x_val.astype(np.float32) / 255)).reshape(len(x_val), -1).mean(1).numpy()
    print(f"wrote model.onnx, data.npz in {HERE} (validation AUC {roc_auc_score(y_val, err):.4f})")


if __name__ == "__main__":
    main()
