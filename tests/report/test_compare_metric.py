"""``edge-opt compare`` of studies scored by another metric than top1: the metric and B's drop from A in its
direction; studies scored by different metrics are refused (exit 2, one error line, nothing written)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.report.compare import compare_results
from records import fake_result

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


def _scored(value: float, key: str):
    r = fake_result(key, 0.0, "int8", "onnxruntime", accuracy=0.5, latency_ms=[1.0, 1.1, 0.9], memory_mb=1.0)
    return replace(r, measurement=replace(r.measurement, metric=value, metric_name="MAE"))


@pytest.mark.parametrize("higher,drop", [(False, 0.02), (True, -0.02)])
def test_the_metric_drop_follows_the_metric_direction(higher, drop):
    a, b = _scored(0.10, "a"), _scored(0.12, "b")
    row = compare_results({a.point: a}, {b.point: b}, {"name": "mae", "higher_is_better": higher})[0]
    assert (row["metric_a"], row["metric_b"]) == (0.10, 0.12) and row["metric_drop_b_vs_a"] == pytest.approx(drop)
    assert "metric_a" not in compare_results({a.point: a}, {b.point: b})[0]  # top1: the columns as before


@pytest.fixture(scope="module")
def anomaly_study(tmp_path_factory):
    from edge_opt.pipeline import load_study_config, run_study

    out = tmp_path_factory.mktemp("anomaly") / "a"
    run_study(
        load_study_config(ROOT / "examples" / "tasks" / "anomaly" / "study.yaml", {**TINY, "output_dir": str(out)})
    )
    return out


def test_compare_speaks_the_studies_metric(anomaly_study, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(anomaly_study, b)
    assert main(["compare", str(anomaly_study), str(b), "--output", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "metric: ROC AUC (higher is better)" in printed and "metric_drop_b_vs_a" in printed
    assert "accuracy_a" not in printed
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert {"metric_a", "metric_b", "metric_drop_b_vs_a"} <= set(table.columns) and len(table) == 2
    assert (table["metric_a"] == table["metric_b"]).all() and (table["metric_drop_b_vs_a"] == 0).all()
    assert table["metric_a"].between(0.5, 1.0).all()
    assert "Metric: ROC AUC (higher is better)" in (tmp_path / "cmp" / "comparison.html").read_text()


@pytest.mark.parametrize(
    "metric,needle",
    [
        ({"name": "mae", "display_name": "MAE", "higher_is_better": False}, "B: mae (lower is better)"),
        (None, "B: top1"),
    ],
)
def test_studies_scored_by_different_metrics_are_refused(anomaly_study, tmp_path, capsys, metric, needle):
    b = tmp_path / "b"
    shutil.copytree(anomaly_study, b)
    summary = json.loads((b / "summary.json").read_text())
    summary.pop("metric")
    if metric is not None:
        summary["metric"] = metric
    (b / "summary.json").write_text(json.dumps(summary))
    assert main(["compare", str(anomaly_study), str(b), "--output", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the studies are scored by different metrics (A: auc")
    assert needle in err[0] and not (tmp_path / "cmp").exists()
