"""The recovery example (examples/recovery/): per-tensor int8 on a MobileNetV2-style network with depthwise channel
ranges spread over three orders of magnitude loses far more than 3 points; cross-layer equalization brings it within
one point with every layer int8, and the rows, variants/*.json and the manifest say which recovery ran."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT
from edge_opt.pipeline import load_study_config, run_study

FOLDER = ROOT / "examples" / "recovery"
FAST = {
    "backends": ["torch"],
    "precisions": ["fp32", "int8"],
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cle_recovers_the_per_tensor_failure_of_the_example(tmp_path):
    cfg = load_study_config(FOLDER / "recovery.yaml", {**FAST, "output_dir": str(tmp_path)})
    run_study(cfg)
    rows = pd.read_csv(tmp_path / "sweep_results.csv").set_index("calibration", drop=False)
    fp32 = rows[rows.precision == "fp32"].accuracy.iloc[0]
    plain, cle = rows.loc["minmax/per-tensor/4"], rows.loc["minmax/per-tensor/4/cle"]
    assert fp32 - plain.accuracy >= 0.03
    assert fp32 - cle.accuracy <= 0.01 and cle.int8_mac_fraction >= 0.95 and cle.kernel_precision == "int8"
    doc = json.loads((tmp_path / cle.metadata_file).read_text(encoding="utf-8"))
    assert doc["metadata"]["recovery"] == "cle" and len(doc["metadata"]["cle"]["pairs_equalized"]) == 10
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text(encoding="utf-8"))
    if manifest["config_point"]["precision"] == "int8":
        assert manifest["config_point"]["recovery"] == "cle"  # plain int8 misses the accuracy budget


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_qat_from_the_equalized_model_recovers_within_half_a_point_on_executorch(tmp_path):
    """QAT (PT2E, XNNPACK int8 kernels) starts from the equalized model: per tensor, the spread example ends within
    half a point of fp32 (QAT from the spread model itself reached 44-69 % of fp32's 98 % in 2-4 epochs)."""
    pytest.importorskip("executorch")
    over = {**FAST, "backends": ["executorch"], "output_dir": str(tmp_path)}
    over["quantization"] = {"per_channel": False, "calibration_batches": 4, "recovery": "qat", "qat_epochs": 2}
    run_study(load_study_config(FOLDER / "recovery.yaml", over))
    rows = pd.read_csv(tmp_path / "sweep_results.csv")
    fp32 = rows[rows.precision == "fp32"].accuracy.iloc[0]
    qat = rows[rows.calibration == "minmax/per-tensor/4/qat2"].iloc[0]
    assert qat.kernel_precision == "int8" and fp32 - qat.accuracy <= 0.005 and qat.int8_mac_fraction >= 0.95
    doc = json.loads((tmp_path / qat.metadata_file).read_text(encoding="utf-8"))
    assert doc["metadata"]["qat"]["starts_from"]["cle"] == "applied"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_recovery_table_and_each_layers_drop_before_and_after_cle(tmp_path):
    over = {**FAST, "precisions": ["fp32", "int8", "int8_mixed"], "output_dir": str(tmp_path)}
    run_study(load_study_config(FOLDER / "recovery.yaml", over))
    table = pd.read_csv(tmp_path / "mixed_precision.csv").fillna({"calibration": ""})
    assert set(zip(table.precision, table.calibration)) == {
        ("fp32", ""),
        ("int8", "minmax/per-tensor/4"),
        ("int8", "minmax/per-tensor/4/cle"),
        ("int8_mixed", "minmax/per-tensor/4"),
        ("int8_mixed", "minmax/per-tensor/4/cle"),
    }
    assert {"memory_mb", "build_s", "int8_mac_fraction"} <= set(table.columns) and (table.build_s > 0).all()
    drops = pd.read_csv(tmp_path / "sensitivity.csv").pivot_table(index="layer", columns="recovery", values="drop")
    assert drops["none"].max() >= 0.1 and drops["cle"].max() <= 0.01  # the worst layer alone, before and after
