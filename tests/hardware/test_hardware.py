import copy
import json
import math

import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from edge_opt.hardware.tables import (
    CALIBRATION_FILE,
    estimate_layerwise_stats,
    machine_calibration,
    precision_tradeoff_table,
    save_hardware_artifacts,
    summarize_hardware,
)
from edge_opt.inputs.models import create_model

MODELS = [
    ("small_cnn", {"conv1_channels": 16, "conv2_channels": 32}),
    ("small_cnn", {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}),
    ("mlp", {"layer_sizes": [64, 32, 10], "activations": ["relu", "relu", "softmax"]}),
    ("ds_cnn", {"channels": 16, "blocks": 2}),
]


@pytest.mark.parametrize("name,params", MODELS)
def test_layer_table_macs_match_flop_counter(name, params):
    m = create_model(name, (1, 28, 28), 10, **params)
    df = estimate_layerwise_stats(m, 4, (1, 28, 28))
    assert list(df.columns[:5]) == ["layer", "output_elements", "parameter_bytes", "activation_bytes", "macs"]
    with FlopCounterMode(display=False) as fc:
        m(torch.zeros(4, 1, 28, 28))
    assert df["macs"].sum() == fc.get_total_flops() // 2
    assert df["parameter_bytes"].sum() == sum(p.numel() * 4 for p in m.parameters()) + sum(
        b.numel() * 4 for b in m.buffers() if b.is_floating_point()
    )


def test_depthwise_layer_macs():
    m = create_model("ds_cnn", (1, 8, 8), 10, channels=4, blocks=1)
    df = estimate_layerwise_stats(m, 1, (1, 8, 8)).set_index("layer")
    assert df.loc["3", "macs"] == 4 * 8 * 8 * 9  # depthwise: one 3×3 filter per channel


def test_fp16_halves_parameter_bytes():
    m = create_model("small_cnn", (1, 28, 28), 10)
    a = estimate_layerwise_stats(m, 1, (1, 28, 28))
    b = estimate_layerwise_stats(copy.deepcopy(m).half(), 1, (1, 28, 28))
    assert b["parameter_bytes"].sum() * 2 == a["parameter_bytes"].sum()
    assert b["activation_bytes"].sum() * 2 == a["activation_bytes"].sum()


def test_no_supported_layer():
    with pytest.raises(ValueError, match="no supported layer"):
        estimate_layerwise_stats(torch.nn.Sequential(torch.nn.Flatten()), 1, (1, 4, 4))


def test_summarize_hardware_keys_and_roofline():
    m = create_model("small_cnn", (1, 28, 28), 10)
    df = estimate_layerwise_stats(m, 8, (1, 28, 28))
    s = summarize_hardware(df, 1.0, 10.0, 50.0)
    for k in (
        "estimated_total_bytes",
        "estimated_total_macs",
        "achieved_bandwidth_gbps",
        "configured_memory_bandwidth_gbps",
        "bandwidth_utilization",
        "achieved_gmacs",
        "arithmetic_intensity",
        "roofline_knee",
        "bound_regime",
        "attainable_latency_ms",
        "roofline_efficiency",
    ):
        assert k in s
    assert s["achieved_gmacs"] == pytest.approx(s["estimated_total_macs"] / 1e-3 / 1e9)
    assert s["roofline_knee"] == 5.0 and s["roofline_efficiency"] == pytest.approx(s["attainable_latency_ms"] / 1.0)


def test_precision_tradeoff_table_exact():
    df = pd.DataFrame(
        {
            "precision": ["fp32", "fp32", "int8", "int8", "int8"],
            "accuracy": [0.9, 0.8, 0.85, 0.75, float("nan")],
            "latency_ms": [4.0, 2.0, 1.0, 3.0, float("nan")],
            "memory_mb": [4.0, 2.0, 1.0, 0.5, float("nan")],
            "energy_proxy_j": [0.4, 0.2, 0.1, 0.3, float("nan")],
            "accepted": [True, False, True, True, False],
            "error": [None, None, None, None, "boom"],
        }
    )
    t = precision_tradeoff_table(df)
    assert list(t.columns) == [
        "precision",
        "accuracy_mean",
        "latency_ms_mean",
        "memory_mb_mean",
        "energy_proxy_j_mean",
        "accepted_ratio",
    ]
    assert list(t["precision"]) == ["int8", "fp32"] and list(t.index) == [0, 1]
    int8 = t.iloc[0]
    assert int8["accuracy_mean"] == pytest.approx(0.8) and int8["latency_ms_mean"] == pytest.approx(2.0)
    assert int8["memory_mb_mean"] == pytest.approx(0.75) and int8["accepted_ratio"] == pytest.approx(2 / 3)
    assert t.iloc[1]["accepted_ratio"] == pytest.approx(0.5)


def test_precision_tradeoff_table_per_backend():
    df = pd.DataFrame(
        {
            "precision": ["fp32", "fp32"],
            "backend": ["torch", "onnxruntime"],
            "accuracy": [0.9, 0.9],
            "latency_ms": [2.0, 1.0],
            "memory_mb": [1.0, 1.0],
            "energy_proxy_j": [0.1, 0.05],
            "accepted": [True, True],
        }
    )
    t = precision_tradeoff_table(df)
    assert list(t["backend"]) == ["onnxruntime", "torch"]


def test_save_hardware_artifacts_files_and_dpi(tmp_path):
    m = create_model("small_cnn", (1, 28, 28), 10)
    df = estimate_layerwise_stats(m, 1, (1, 28, 28))
    s = summarize_hardware(df, 0.5, 10.0, 50.0)
    pts = pd.DataFrame({"label": ["a"], "arithmetic_intensity": [1.0], "achieved_gmacs": [3.0]})
    paths = save_hardware_artifacts(
        tmp_path,
        df,
        precision_tradeoff_table(
            pd.DataFrame(
                {
                    "precision": ["fp32"],
                    "accuracy": [0.9],
                    "latency_ms": [1.0],
                    "memory_mb": [1.0],
                    "energy_proxy_j": [0.1],
                    "accepted": [True],
                }
            )
        ),
        s,
        pts,
    )
    names = {p.name for p in paths.values()}
    assert names == {
        "layerwise_breakdown.csv",
        "precision_tradeoffs.csv",
        "hardware_summary.csv",
        "layerwise_activation_memory.png",
        "layerwise_macs.png",
        "roofline.png",
        "roofline_points.csv",
    }
    for png in ("layerwise_activation_memory.png", "layerwise_macs.png", "roofline.png"):
        dpi = Image.open(tmp_path / png).info["dpi"]
        assert round(dpi[0]) == 180
    layers = pd.read_csv(tmp_path / "layerwise_breakdown.csv")
    assert {"arithmetic_intensity", "bound_regime"} <= set(layers.columns)


def test_machine_calibration_is_measured_and_cached(tmp_path):
    # how fast calibration runs is a claim for `make bench`, not for a test
    cal = machine_calibration(tmp_path, threads=1)
    assert math.isfinite(cal["peak_compute_gmacs"]) and cal["peak_compute_gmacs"] > 0
    assert "torch.matmul" in cal["peak_method"] and cal["threads"] == 1
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["measured_at"] == cal["measured_at"]
    assert cal["memory_bandwidth_gbps"] > 0.5 and cal["peak_source"] == "measured"
    again = machine_calibration(tmp_path, threads=1, memory_bandwidth_gbps=12.0)
    assert again["measured_at"] == cal["measured_at"]  # reused from the cache
    assert again["memory_bandwidth_gbps"] == 12.0 and again["bandwidth_source"] == "configured"
