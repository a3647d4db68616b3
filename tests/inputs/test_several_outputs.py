"""A model with several outputs: every output, in the graph's order, reaches the postprocess and the metric, on
ONNX Runtime and OpenVINO, fp32 and int8; the fp32 metric equals a plain ONNX Runtime session's."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edge_opt.pipeline import load_study_config, run_study

TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "quantization": {"calibration_batches": 1},
}


class TwoHeads(nn.Module):
    """Class scores (N, 3) and a regression head (N, 2): the metric reads the second."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls, self.reg = nn.Linear(4, 3), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.cls(h), self.reg(h)


METRIC = """
import numpy as np

def second_head_mae(outputs, targets):
    assert len(outputs) == 2 and outputs[0].shape[1] == 3 and outputs[1].shape[1] == 2
    return float(np.abs(outputs[1] - targets).mean())
"""


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_heads")
    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = torch.rand(64, 1, 8, 8)
    torch.onnx.export(
        model,
        (x[:2],),
        str(folder / "model.onnx"),
        dynamo=False,
        input_names=["image"],
        output_names=["scores", "box"],
        dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}, "box": {0: "n"}},
    )
    rng = np.random.default_rng(0)
    np.savez(
        folder / "data.npz",
        x_train=x[:32].numpy(),
        x_val=x[32:].numpy(),
        y_train=rng.random((32, 2)).astype(np.float32),
        y_val=rng.random((32, 2)).astype(np.float32),
    )
    (folder / "heads.py").write_text(METRIC)
    return folder


def test_every_output_reaches_the_metric_and_fp32_equals_a_plain_session(two_heads, tmp_path, monkeypatch):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"model: {{onnx: {two_heads / 'model.onnx'}}}\ndataset: npz\ndata_path: {two_heads / 'data.npz'}\n"
        "metric: heads:second_head_mae\nmetric_higher_is_better: false\nbackends: [onnxruntime, openvino]\n"
        f"precisions: [fp32, int8]\npruning_levels: [0.0]\noutput_dir: {tmp_path / 'out'}\n"
    )
    monkeypatch.syspath_prepend(str(two_heads))
    res = run_study(load_study_config(config, TINY))
    df = res.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    sess = ort.InferenceSession(str(two_heads / "model.onnx"), providers=["CPUExecutionProvider"])
    z = np.load(two_heads / "data.npz")
    box = sess.run(None, {"image": z["x_val"]})[1]
    want = float(np.abs(box - z["y_val"]).mean())
    for backend in ("onnxruntime", "openvino"):
        fp32 = df[(df["backend"] == backend) & (df["precision"] == "fp32")].iloc[0]
        assert fp32["metric"] == pytest.approx(want, abs=1e-6)
    assert np.isfinite(df[df["precision"] == "int8"]["metric"]).all()
    assert df["accuracy"].isna().all()  # the targets are not class ids
    sys.modules.pop("heads", None)
