"""ONNX files as other tools write them, for the tests: one trained MobileNetV3-style digits classifier, saved

- ``constants``: exported by the TorchScript exporter with BatchNorm kept, then rewritten with ``onnx.helper`` so
  every weight is a ``Constant`` node and the graph holds no initializer (as Paddle2ONNX, tf2onnx and older
  exporters write them);
- ``external``: ``torch.onnx.export`` with torch 2.13's defaults (the dynamo exporter), weights in
  ``<name>.onnx.data`` beside the model;
- ``dynamic``: the ``constants`` form with dynamic batch, height and width.

``build(folder)`` trains once per folder (a few seconds) and returns the paths; ``expected_weight_bytes`` is the
byte count of every tensor the exported file holds.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from conftest import ROOT

DIGITS = ROOT / "examples" / "bring_your_own" / "digits.npz"


class _SE(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, ch // 4, 1)
        self.fc2 = nn.Conv2d(ch // 4, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(self.pool(x)))))


class _Block(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish())
        self.dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.Hardswish()
        )
        self.se = _SE(mid) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Style(nn.Module):
    """A small MobileNetV3-like classifier: stem, inverted residuals with SE and hard-swish, pooled linear head."""

    def __init__(self, in_ch: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(_Block(16, 32, 24, 2, True), _Block(24, 48, 24, 1, True))
        self.head = nn.Sequential(nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


def digits() -> dict[str, np.ndarray]:
    """The digits arrays as the model takes them: float NCHW in [0, 1]."""
    z = np.load(DIGITS)
    return {
        "x_train": z["x_train"].transpose(0, 3, 1, 2).astype(np.float32) / 255,
        "y_train": z["y_train"],
        "x_val": z["x_val"].transpose(0, 3, 1, 2).astype(np.float32) / 255,
        "y_val": z["y_val"],
    }


def trained_model(epochs: int = 12, seed: int = 0) -> MobileNetV3Style:
    """The classifier trained on digits (~0.9 validation accuracy, a few seconds on two cores)."""
    torch.manual_seed(seed)
    d = digits()
    model = MobileNetV3Style()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"])
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    return model.eval()


def _to_constants(path: Path) -> None:
    """Rewrite ``path`` so every initializer is a ``Constant`` node placed before the graph's nodes."""
    m = onnx.load(str(path))
    g = m.graph
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in g.initializer]
    nodes = list(g.node)
    del g.initializer[:]
    del g.node[:]
    g.node.extend([*constants, *nodes])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_constants(model: nn.Module, path: Path, dynamic: bool = False) -> Path:
    """TorchScript export with BatchNorm kept (no constant folding), weights then moved into ``Constant`` nodes."""
    x = torch.zeros(1, 1, 8, 8)
    axes = {"x": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n"}} if dynamic else {"x": {0: "n"}, "logits": {0: "n"}}
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes=axes,
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.PRESERVE,
        )
    _to_constants(path)
    return path


def export_default(model: nn.Module, path: Path) -> Path:
    """``torch.onnx.export`` with torch 2.13's defaults (dynamo): the weights go to ``<path>.data``."""
    x = torch.zeros(1, 1, 8, 8)
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (x,), str(path), dynamic_shapes=({0: torch.export.Dim("n", max=4096)},))
    return path


def expected_weight_bytes(path: Path) -> int:
    """Bytes of every tensor the file holds (initializers inline or external, Constant-node values)."""
    m = onnx.load(str(path), load_external_data=False)
    total = 0
    for t in [*m.graph.initializer, *(n.attribute[0].t for n in m.graph.node if n.op_type == "Constant")]:
        total += int(np.prod(t.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


def build(folder: Path) -> dict[str, Path]:
    """The trained model (``model.pt``, its state dict) and its three ONNX forms in ``folder``, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "state_dict": folder / "model.pt",
        "constants": folder / "constants.onnx",
        "external": folder / "external" / "model.onnx",
        "dynamic": folder / "dynamic.onnx",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    model = trained_model()
    torch.save(model.state_dict(), paths["state_dict"])
    export_constants(model, paths["constants"])
    export_constants(model, paths["dynamic"], dynamic=True)
    paths["external"].parent.mkdir(exist_ok=True)
    export_default(model, paths["external"])
    return paths
