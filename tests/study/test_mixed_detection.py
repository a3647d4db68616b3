"""int8_mixed on a detector (issue 33's acceptance): the detection example with planted outlier activations, where
full int8 on ONNX Runtime loses far more mAP@0.5 than max_metric_drop and int8_mixed, keeping the planted layers in
float, stays within it (the classifier's case is tests/variants/test_sensitivity.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import ROOT
from edge_opt.pipeline import load_study_config, run_study

FOLDER = ROOT / "examples" / "tasks" / "detection"
SCALE = 1000.0
TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "quantization": {"calibration_batches": 1},
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}


def plant(path) -> None:
    """The example's model with channel 0 of the last feature conv (features.9) ×SCALE and the head's weights that
    read it ÷SCALE: ReLU between them keeps the float function, but the activations the head reads now hold values
    SCALE× larger than all the others, which one int8 scale cannot represent together."""
    model = onnx.load(FOLDER / "model.onnx")
    init = {i.name: i for i in model.graph.initializer}
    weight, bias, head = (
        numpy_helper.to_array(init[k]).copy() for k in ("features.9.weight", "features.9.bias", "head.weight")
    )
    weight[0] *= SCALE
    bias[0] *= SCALE
    head[:, 0] /= SCALE
    for name, arr in (("features.9.weight", weight), ("features.9.bias", bias), ("head.weight", head)):
        init[name].CopyFrom(numpy_helper.from_array(arr, name))
    onnx.save(model, path)


def test_detector_int8_mixed_meets_max_metric_drop_where_int8_does_not(tmp_path):
    planted = tmp_path / "planted.onnx"
    plant(planted)
    x = np.load(FOLDER / "data.npz")["x_val"].astype(np.float32) * np.float32(1 / 255)
    outputs = [ort.InferenceSession(str(p)).run(None, {"image": x})[0] for p in (FOLDER / "model.onnx", planted)]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-4)  # the same detector in float
    over = {"output_dir": str(tmp_path / "out"), "model": {"onnx": str(planted)}, "backends": ["onnxruntime"]}
    cfg = load_study_config(FOLDER / "detection.yaml", {**TINY, **over, "precisions": ["fp32", "int8", "int8_mixed"]})
    res = run_study(cfg)
    rows = res.sweep.set_index("precision")
    assert rows["error"].isna().all()
    drop = rows.loc["fp32", "metric"] - rows["metric"]
    assert rows.loc["fp32", "metric"] > 0.9 and cfg.max_metric_drop == 0.02
    assert drop["int8"] > 0.5  # full int8 loses the detector
    assert drop["int8_mixed"] <= cfg.max_metric_drop and bool(rows.loc["int8_mixed", "accepted"])
    assert set(rows.loc["int8_mixed", "float_layers"].split(";")) == {"features.9", "head"}  # the planted pair
    assert 0 < rows.loc["int8_mixed", "int8_mac_fraction"] < 1 and rows.loc["int8_mixed", "kernel_precision"] == "int8"
    assert res.goals_met
    mixed = {r["precision"]: r for r in res.summary["int8_mixed"]}
    assert mixed["int8_mixed"]["metric_drop"] == pytest.approx(drop["int8_mixed"])
    assert mixed["int8"]["metric_drop"] > cfg.max_metric_drop
