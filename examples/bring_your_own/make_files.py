"""Make this example's files: train TinyNet briefly on scikit-learn's digits (8×8) and save it every way
edge_opt reads a model — ``weights.pt`` (state dict), ``model.onnx``, ``model.pt2`` — plus ``digits.npz``
(NHWC uint8 images, a fixed train/val split).

    python examples/bring_your_own/make_files.py      # from the repository root; ~10 s on a laptop CPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tinynet import build  # noqa: E402


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]  # N, 8, 8, 1 (NHWC)
    return images, d.target.astype(np.int64)


def main() -> None:
    x, y = digits_uint8()
    perm = np.random.default_rng(0).permutation(len(y))
    val, train = perm[:450], perm[450:]
    np.savez_compressed(HERE / "digits.npz", x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val])
    torch.manual_seed(0)
    model = build((1, 8, 8), 10)
    xt = torch.from_numpy(x[train].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    yt = torch.from_numpy(y[train])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(15):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    model.eval()
    torch.save(model.state_dict(), HERE / "weights.pt")
    example = xt[:2]
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(HERE / "model.pt2"))
    torch.onnx.export(
        model,
        (example,),
        str(HERE / "model.onnx"),
        dynamo=True,
        external_data=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    xv = torch.from_numpy(x[val].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    with torch.inference_mode():
        acc = float((model(xv).argmax(1).numpy() == y[val]).mean())
    print(f"wrote weights.pt, model.onnx, model.pt2, digits.npz in {HERE} (validation accuracy {acc:.4f})")


if __name__ == "__main__":
    main()
