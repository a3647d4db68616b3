import math

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.store import StudyStore
from edge_opt.sweep import ConfigPoint, Sweep, best_effort, finalize_rows, point_key, recommend, run_sweep, sweep_points
from edge_opt.variants.backends import BACKENDS, Variant


def test_bad_precision_is_error_row_others_complete(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path, pruning_levels=[0.0], backends=["torch"]))
    points = [ConfigPoint(0.0, "fp32", "torch"), ConfigPoint(0.0, "int3", "torch"), ConfigPoint(0.0, "int8", "torch")]
    df = finalize_rows(Sweep(trained_small, digits8, cfg, tmp_path).run(points), cfg)
    bad = df[df["precision"] == "int3"].iloc[0]
    assert "int3" in bad["error"] and not bad["accepted"] and math.isnan(bad["accuracy"])
    good = df[df["precision"] != "int3"]
    assert good["error"].isna().all() and (good["accuracy"] > 0.5).all()


@pytest.fixture
def nan_backend():
    name = "nan_test_backend"
    if name not in BACKENDS:
        @BACKENDS.register(name)
        def _nan(model, precision, ctx):
            return Variant(backend=name, precision=precision, kernel_precision=precision, parameter_bytes=10,
                           metadata={}, prepare=lambda x: x, run=lambda x: x,
                           to_logits=lambda x: np.full((len(x), 10), np.nan, np.float32))
    yield name


def test_nan_metrics_become_error_rows_and_never_recommended(trained_small, digits8, tmp_path, nan_backend):
    cfg = config_from_dict(tiny_config_dict(tmp_path, pruning_levels=[0.0], precisions=["fp32"],
                                            active_memory_budget_mb=100))
    raw = Sweep(trained_small, digits8, cfg, tmp_path).run(
        [ConfigPoint(0.0, "fp32", "torch"), ConfigPoint(0.0, "fp32", nan_backend)])
    df = finalize_rows(raw, cfg, raw.iloc[0].to_dict())
    row = df[df["backend"] == nan_backend].iloc[0]
    assert "non-finite" in row["error"] and not row["accepted"]
    rec, _ = recommend(df, float(df.iloc[0]["accuracy"]), 0.5)
    assert rec["backend"] == "torch"


def test_run_sweep_grid_budgets_and_store(trained_small, digits8, tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path, active_memory_budget_mb=0.008))
    with StudyStore(tmp_path / "s.sqlite") as store:
        df = run_sweep(trained_small, digits8, cfg, tmp_path, store=store)
        assert len(df) == len(sweep_points(cfg)) == 12 and store.count() == 12
        assert df["accepted"].any() and (~df["accepted"]).any()
        rej = df[~df["accepted"]].iloc[0]
        assert "budget" in rej["rejected_reason"] and rej["memory_mb"] > 0.008
        for col in ("violates_0.01mb", "violates_0.1mb", "speedup_vs_fp32", "slower_than_fp32", "device_latency_ms",
                    "kernel_precision", "energy_proxy_j", "latency_std_ms", "latency_p95_ms", "throughput_sps"):
            assert col in df.columns
        assert (df["device_latency_ms"] == df["latency_ms"] * 2).all()
        int8 = df[(df["precision"] == "int8") & (df["pruning_level"] == 0.0) & (df["backend"] == "torch")].iloc[0]
        assert (tmp_path / int8["metadata_file"]).exists()
        # a second sweep reuses everything
        s = Sweep(trained_small, digits8, cfg, tmp_path, store)
        s.run()
        assert s.reused == 12 and s.computed == 0


def _rows():
    return pd.DataFrame([
        {"key": "a", "pruning_level": 0.0, "precision": "fp32", "backend": "torch", "kernel_precision": "fp32",
         "accuracy": 0.95, "latency_ms": 1.0, "latency_ci95_ms": 0.01, "memory_mb": 4.0, "error": None,
         "latency_samples_ms": [1.0] * 5},
        {"key": "b", "pruning_level": 0.0, "precision": "int8", "backend": "torch", "kernel_precision": "int8",
         "accuracy": 0.945, "latency_ms": 2.0, "latency_ci95_ms": 0.01, "memory_mb": 1.0, "error": None,
         "latency_samples_ms": [2.0, 2.01, 1.99, 2.02, 1.98]},
        {"key": "c", "pruning_level": 0.5, "precision": "fp32", "backend": "torch", "kernel_precision": "fp32",
         "accuracy": 0.90, "latency_ms": 0.5, "latency_ci95_ms": 0.01, "memory_mb": 0.9, "error": None,
         "latency_samples_ms": [0.5] * 5},
    ])


def test_finalize_flags_slower_than_fp32_and_speedups(tmp_path):
    cfg = config_from_dict({"active_memory_budget_mb": 2.0, "memory_budgets_mb": [2.0], "output_dir": str(tmp_path)})
    df = finalize_rows(_rows(), cfg, _rows().iloc[0].to_dict())
    b = df[df["key"] == "b"].iloc[0]
    assert b["slower_than_fp32"] and b["speedup_vs_fp32"] == pytest.approx(0.5)
    assert df[df["key"] == "c"].iloc[0]["speedup_vs_baseline"] == pytest.approx(2.0)
    assert list(df["accepted"]) == [False, True, True]


def test_recommend_respects_accuracy_drop_and_best_effort(tmp_path):
    cfg = config_from_dict({"active_memory_budget_mb": 2.0, "memory_budgets_mb": [2.0], "output_dir": str(tmp_path)})
    df = finalize_rows(_rows(), cfg, _rows().iloc[0].to_dict())
    rec, failed = recommend(df, 0.95, 0.01)
    assert rec["key"] == "b" and failed == []
    rec, failed = recommend(df, 0.95, 0.1)
    assert rec["key"] == "c"
    cfg2 = config_from_dict({"active_memory_budget_mb": 0.1, "memory_budgets_mb": [0.1], "output_dir": str(tmp_path)})
    df2 = finalize_rows(_rows(), cfg2, _rows().iloc[0].to_dict())
    rec, failed = recommend(df2, 0.95, 0.01)
    assert rec is None and "budgets" in failed[0]
    assert best_effort(df2)["key"] == "a"  # nothing memory-accepted: highest accuracy overall


def test_point_key_changes_only_with_what_matters(tmp_path):
    base = config_from_dict({"output_dir": str(tmp_path)})
    p = ConfigPoint(0.5, "int8", "onnxruntime")
    same = config_from_dict({"output_dir": str(tmp_path / "x"), "active_memory_budget_mb": 7})
    assert point_key(base, p) == point_key(same, p)  # budgets/output folder do not invalidate measurements
    for change in ({"calibration_batches": 3}, {"epochs": 1}, {"seed": 5}, {"fine_tune_epochs": 0}):
        assert point_key(base, p) != point_key(config_from_dict(change), p)
    fp32 = ConfigPoint(0.5, "fp32", "onnxruntime")
    assert point_key(base, fp32) == point_key(config_from_dict({"calibration_batches": 3}), fp32)


def test_recommend_prefers_real_precision_when_latencies_tie(tmp_path):
    cfg = config_from_dict({"active_memory_budget_mb": 2.0, "memory_budgets_mb": [2.0], "output_dir": str(tmp_path)})
    rows = pd.DataFrame([
        {"key": "fp16", "pruning_level": 0.5, "precision": "fp16", "backend": "onnxruntime", "kernel_precision": "fp32",
         "accuracy": 0.95, "latency_ms": 1.00, "latency_ci95_ms": 0.001, "memory_mb": 0.4, "runtime_memory_mb": 0.8,
         "error": None, "latency_samples_ms": [1.0 + 0.001 * i for i in range(10)]},
        {"key": "fp32", "pruning_level": 0.5, "precision": "fp32", "backend": "onnxruntime", "kernel_precision": "fp32",
         "accuracy": 0.95, "latency_ms": 1.02, "latency_ci95_ms": 0.001, "memory_mb": 0.8, "runtime_memory_mb": 0.8,
         "error": None, "latency_samples_ms": [1.02 + 0.001 * i for i in range(10)]},
    ])
    df = finalize_rows(rows, cfg, rows.iloc[1].to_dict())
    rec, _ = recommend(df, 0.95, 0.01)
    assert rec["key"] == "fp32"  # 2 % apart is a tie; the fp16 label runs fp32 kernels
