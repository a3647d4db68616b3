"""Make ``weights.pt``: train the example's network (``spread.build``) briefly on the study's training split of
scikit-learn's digits at 16×16, then spread its depthwise channel ranges (``spread.spread_depthwise``) and save the
state dict the config's factory loads.

    python examples/recovery/make_files.py      # from the repository root; ~10 s on a laptop CPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spread import build, spread_depthwise  # noqa: E402

from edge_opt.inputs.data import load_data  # noqa: E402
from edge_opt.inputs.training import train_model  # noqa: E402


def main() -> None:
    data = load_data("digits", image_size=16, batch_size=64, dataloader_seed=0)  # the study's split (seed 0)
    torch.manual_seed(0)
    model = build(data.input_shape, data.num_classes)
    train_model(model, data.train_loader, epochs=3, learning_rate=0.01, seed=0)
    spread = spread_depthwise(model, orders=3.0, seed=0)
    with torch.no_grad():
        x = next(iter(data.val_loader))[0]
        drift = float((spread(x) - model(x)).abs().max())
    torch.save(spread.state_dict(), HERE / "weights.pt")
    print(f"wrote {HERE / 'weights.pt'} (float outputs moved by at most {drift:.1e} by the spread)")


if __name__ == "__main__":
    main()
