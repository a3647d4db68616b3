"""Layer tables of ONNX files as other tools write them, and the hardware stage of an ONNX-input study."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import ROOT
from edge_opt.hardware import estimate_layerwise_stats
from edge_opt.hardware.analysis import layer_table
from edge_opt.pipeline import load_study_config, run_study
from onnx_models import DIGITS, MobileNetV3Style, build

FORMS = ["constants", "dynamic", "external"]
TINY = {  # tests/inputs/test_byo.py's fast study settings
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream", "batch"], "min_queries": 20, "min_duration_s": 0.05},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The trained classifier's files (one build per session) and the PyTorch original."""
    paths = build(tmp_path_factory.getbasetemp() / "onnx_models")
    model = MobileNetV3Style()
    model.load_state_dict(torch.load(paths["state_dict"], weights_only=True))
    return paths, model.eval()


@pytest.mark.parametrize("form", FORMS)
def test_an_onnx_layer_table_totals_the_pytorch_originals_macs(models, form):
    paths, model = models
    want = estimate_layerwise_stats(model, 3, (1, 8, 8))
    df = estimate_layerwise_stats(paths[form], 3, (1, 8, 8))
    assert list(df.columns) == list(want.columns)
    assert df["macs"].sum() == want["macs"].sum() == 3 * 129536
    # the MAC rows carry the PyTorch module names (the weights'), in execution order
    assert list(df.loc[df["macs"] > 0, "layer"]) == list(want.loc[want["macs"] > 0, "layer"])
    assert set(df["layer_type"]) >= {"Conv", "Gemm", "HardSwish", "Mul"}
    if form != "external":  # BatchNorm kept (the dynamo export folds it): the same weights, byte for byte
        assert df["parameter_bytes"].sum() == want["parameter_bytes"].sum() == 38200
    one = estimate_layerwise_stats(paths[form], 3, (1, 8, 8), activation_bytes_per_value=1)
    assert (one["activation_bytes"] == one["output_elements"]).all()


def test_a_graph_runtime_fuses_an_onnx_tables_epilogues(models):
    paths, _ = models
    df = layer_table(paths["constants"], "fp32", 1, (1, 8, 8), "onnxruntime").set_index("layer")
    assert df.loc["/stem/stem.1/BatchNormalization", "fused"] and df.loc["/stem/stem.2/HardSwish", "fused"]
    assert not df.loc["stem.0", "fused"] and df.loc["/stem/stem.2/HardSwish", "activation_bytes"] == 0
    eager = layer_table(paths["constants"], "fp32", 1, (1, 8, 8), "torch")
    assert not eager["fused"].any()


@pytest.mark.parametrize("form,simplify", [("constants", False), ("external", True)])
def test_an_onnx_study_has_layer_tables_and_per_layer_int8(models, form, simplify, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    paths, model = models
    over = {
        **TINY,
        "output_dir": str(tmp_path / "out"),
        "model": {"onnx": str(paths[form]), "simplify": simplify},
        "data_path": str(DIGITS),
        "pruning_levels": [0.0],
        "precisions": ["fp32", "int8"],
        "backends": ["onnxruntime", "openvino"],
    }
    cfg = load_study_config(ROOT / "examples" / "bring_your_own" / "onnx.yaml", over)
    res = run_study(cfg)
    df = res.sweep
    int8 = df[df["precision"] == "int8"]
    assert set(int8["backend"]) == {"onnxruntime", "openvino"} and int8["error"].isna().all()
    names = {n for n, _ in model.named_modules()}
    for _, row in int8.iterrows():
        assert 0 < row["int8_mac_fraction"] <= 1
        assert isinstance(row["float_layers"], str) and set(row["float_layers"].split(";")) <= names
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert not any("hardware analysis skipped" in w for w in summary["warnings"])
    layers = pd.read_csv(res.output_dir / "layerwise_breakdown.csv")
    want = estimate_layerwise_stats(model, cfg.latency_batch_size, (1, 8, 8))["macs"].sum()
    assert layers["macs"].sum() == want and "Conv" in set(layers["layer_type"])  # the ONNX graph's table
    assert pd.read_csv(res.output_dir / "hardware_summary.csv")["estimated_total_macs"].iloc[0] == want
    assert len(pd.read_csv(res.output_dir / "roofline_points.csv")) == len(df) == 4
    assert (res.output_dir / "layerwise_macs.png").is_file() and (res.output_dir / "roofline.png").is_file()
