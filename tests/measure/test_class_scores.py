"""Caffe2-style classifiers (SqueezeNet, DenseNet in the ONNX model zoo) end in a convolution and a global pooling
without a flatten: their class scores are (N, C, 1, 1). top1 / top5, the ``accuracy`` column, the pruned points'
cross-entropy fine-tuning and ``predict`` read them as (N, C), scoring what the same model with a flatten does."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT
from edge_opt.config import config_from_dict
from edge_opt.core import class_scores, predict
from edge_opt.measure import evaluate_accuracy, get_metric
from edge_opt.pipeline import run_study

DIGITS = ROOT / "examples" / "bring_your_own" / "digits.npz"


class ConvHead(nn.Module):
    """A classifier whose head is a 1×1 convolution and a global pooling; ``flat`` adds the flatten."""

    def __init__(self, flat: bool) -> None:
        super().__init__()
        self.flat = flat
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 10, 1), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return torch.flatten(out, 1) if self.flat else out


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    z = np.load(DIGITS)
    x = z[f"x_{split}"].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return torch.from_numpy(x), torch.from_numpy(z[f"y_{split}"])


@pytest.fixture(scope="module")
def twins() -> tuple[ConvHead, ConvHead]:
    """The (N, C, 1, 1) model and its flattened twin, same weights, trained briefly on digits."""
    torch.manual_seed(0)
    flat = ConvHead(True)
    x, y = _digits("train")
    opt = torch.optim.Adam(flat.parameters(), lr=0.02)
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(flat(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    caffe2 = ConvHead(False)
    caffe2.load_state_dict(flat.state_dict())
    return caffe2.eval(), flat.eval()


def test_class_scores_drops_exactly_two_trailing_unit_axes():
    assert class_scores(np.zeros((3, 5, 1, 1))).shape == (3, 5)
    assert class_scores(torch.zeros(3, 5, 1, 1)).shape == (3, 5)
    for shape in [(3, 5), (3, 5, 2, 2), (3, 5, 1), (3, 1, 1, 1, 1)]:
        assert class_scores(np.zeros(shape)).shape == shape


def test_top1_top5_and_accuracy_read_n_c_1_1_scores_as_n_c(twins):
    caffe2, flat = twins
    x, y = _digits("val")
    with torch.no_grad():
        scores = flat(x).numpy()
    assert caffe2(x[:2]).shape == (2, 10, 1, 1)
    for name in ("top1", "top5"):
        metric = get_metric(name)
        assert metric([scores.reshape(-1, 10, 1, 1)], y.numpy(), None) == metric([scores], y.numpy(), None)
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    accuracy = evaluate_accuracy(flat, loader)
    assert 0.2 < accuracy < 1 and evaluate_accuracy(caffe2, loader) == accuracy


def _export(model: nn.Module, path) -> None:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter writes opset 9
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=9,  # as the Caffe2-converted model zoo files
            input_names=["data_0"],
            output_names=["prob"],
            dynamic_axes={"data_0": {0: "n"}, "prob": {0: "n"}},
        )


def test_study_of_an_onnx_classifier_with_n_c_1_1_outputs(twins, tmp_path):
    """The study takes the (N, C, 1, 1) ONNX file (it was refused: "must output (N, classes) logits"); its
    accuracy is its flattened twin's, its pruned point is fine-tuned with cross-entropy, and ``predict`` on the
    shipped artifact gives one class id per image."""
    caffe2, flat = twins
    _export(caffe2, tmp_path / "caffe2.onnx")
    _export(flat, tmp_path / "flat.onnx")
    x, y = _digits("val")
    sess = ort.InferenceSession(str(tmp_path / "flat.onnx"), providers=["CPUExecutionProvider"])
    twin_ids = sess.run(None, {"data_0": x.numpy()})[0].argmax(1)
    cfg = config_from_dict(
        {
            "model": {"onnx": str(tmp_path / "caffe2.onnx")},
            "dataset": "npz",
            "data_path": str(DIGITS),
            "pruning_levels": [0.0, 0.5],
            "precisions": ["fp32"],
            "backends": ["onnxruntime"],
            "benchmark_repeats": 3,
            "benchmark_trials": 2,
            "benchmark_warmup": 1,
            "memory_bandwidth_gbps": 10.0,
            "peak_compute_gmacs": 50.0,
            "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
            "output_dir": str(tmp_path / "out"),
        }
    )
    res = run_study(cfg)
    df = res.sweep.set_index("pruning_level")
    assert df["error"].isna().all()
    assert df.loc[0.0, "accuracy"] == pytest.approx(float(np.mean(twin_ids == y.numpy())), abs=1e-9)
    assert 0 < df.loc[0.5, "accuracy"] <= 1  # pruned and fine-tuned: measured, not refused
    model_dir = res.output_dir / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    ids = predict(model_dir, np.load(model_dir / "validation_inputs.npy"))
    assert ids.shape == (len(y),) and manifest["artifact_accuracy"] == pytest.approx(np.mean(ids == y.numpy()))
