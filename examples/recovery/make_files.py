"""Make ``weights.pt``: train the example's network (``spread.build``) briefly on the training split the study
of ``recovery.yaml`` reads (scikit-learn's digits at 16×16, as a trained model's study loads them), then spread its
depthwise channel ranges (``spread.spread_depthwise``) and save the state dict the config's factory loads.

    python examples/recovery/make_files.py      # from the repository root; ~20 s on a laptop CPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from spread import build, spread_depthwise  # noqa: E402

from edge_opt.config import InputSettings  # noqa: E402
from edge_opt.inputs import load_study_data  # noqa: E402
from edge_opt.inputs.training import train_model  # noqa: E402
from edge_opt.pipeline import load_study_config  # noqa: E402


def main() -> None:
    data = load_study_data(load_study_config(HERE / "recovery.yaml").part(InputSettings))  # the study's split
    torch.manual_seed(0)
    model = build(data.input_shape, data.num_classes)
    train_model(model, data.train_loader, epochs=8, learning_rate=0.01, seed=0)
    spread = spread_depthwise(model, orders=3.0, seed=0)
    with torch.no_grad():
        x = next(iter(data.val_loader))[0]
        drift = float((spread(x) - model(x)).abs().max())
    torch.save(spread.state_dict(), HERE / "weights.pt")
    print(f"wrote {HERE / 'weights.pt'} (float outputs moved by at most {drift:.1e} by the spread)")


if __name__ == "__main__":
    main()
