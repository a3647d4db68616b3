"""LoadGen's accuracy mode with the study's metric: the SUT answers with each sample's raw outputs, and the metric
is computed from LoadGen's accuracy log; on each task example's artifact it reproduces the manifest's metric."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import ROOT
from edge_opt.deploy.loadgen import LoadGenSettings, logged_outputs, run_loadgen
from edge_opt.deploy.scenarios import loadgen_accuracy
from edge_opt.measure import Scoring, get_metric
from edge_opt.pipeline import load_study_config, run_study
from edge_opt.variants import Variant

TASKS = ROOT / "examples" / "tasks"
SHORT = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "quantization": {"calibration_batches": 1},
    # LoadGen runs in every study; one short single-stream scenario keeps the performance runs brief
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}
EXAMPLES = {
    "keyword": "keyword/study.yaml",
    "agreement": "keyword/agreement.yaml",
    "anomaly": "anomaly/study.yaml",
    "segmentation": "segmentation/study.yaml",
    "text": "text/study.yaml",  # two int64 inputs, top1; onnxruntime and openvino
    "detection": "detection/detection.yaml",  # map50 through a postprocess; onnxruntime and openvino
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_loadgen_accuracy_mode_on_the_artifact_reproduces_the_manifest_metric(name, tmp_path):
    cfg = load_study_config(TASKS / EXAMPLES[name], {**SHORT, "output_dir": str(tmp_path / "out")})
    res = run_study(cfg)
    manifest = json.loads((res.output_dir / "model" / "manifest.json").read_text())
    acc = json.loads((res.output_dir / "summary.json").read_text())["deployment"]["loadgen_accuracy"]
    logged = json.loads((res.output_dir / "deployment" / "accuracy" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in logged) == list(range(acc["samples"]))  # every sample answered once
    if cfg.metric == "top1":  # the manifest and LoadGen's result keep their keys, no metric beside them
        assert "metric" not in manifest and "metric" not in acc and "outputs" not in manifest
        assert acc["accuracy"] == pytest.approx(manifest["artifact_accuracy"], abs=1e-6)
        return
    recorded = manifest["metric"]
    assert recorded["name"] == cfg.metric and recorded["higher_is_better"] is True
    df = res.sweep
    row = df[(df["precision"] == manifest["precision"]) & (df["backend"] == manifest["measured_backend"])]
    assert recorded["value"] == pytest.approx(float(row.iloc[0]["metric"]), abs=1e-6)  # what the study reported
    assert acc["metric_name"] == recorded["display_name"] and acc["manifest_metric"] == recorded["value"]
    assert acc["metric"] == pytest.approx(recorded["value"], abs=1e-6)
    assert manifest["artifact_accuracy"] is None and acc["accuracy"] is None  # top-1 reads none of these outputs


def _two_output_variant() -> Variant:
    """A variant with two outputs of different shapes: (N, 3) and (N, 2, 2), from a (N, 4) input."""

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:, :3] * 2.0, np.stack([x, -x], 1).reshape(len(x), 2, 2, 2)[:, :, 0, :]

    return Variant(
        backend="numpy",
        precision="fp32",
        kernel_precision="fp32",
        parameter_bytes=0,
        metadata={},
        prepare=lambda x: x.numpy(),
        run=run,
        to_logits=lambda out: out,
    )


def test_raw_outputs_come_back_from_the_accuracy_log_per_output_in_sample_order(tmp_path):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32))
    variant = _two_output_variant()
    exact = [np.asarray(o) for o in variant.run(x.numpy())]
    reference = [o + np.float32(0.01) * np.sign(o) for o in exact]  # a noisy reference: a finite SQNR
    scoring = Scoring(get_metric("sqnr_db")).with_reference(reference)
    loader = [(x[:16], None), (x[16:], None)]
    run = loadgen_accuracy(variant, loader, None, tmp_path / "acc", scoring)
    assert run.metric_name == "sqnr_db" and run.accuracy is None
    assert run.metric == pytest.approx(scoring.score(exact, None), abs=1e-6) and run.metric < 100
    shapes = [(3,), (2, 2)]
    back = logged_outputs(tmp_path / "acc" / "mlperf_log_accuracy.json", 40, shapes)
    for got, want in zip(back, exact):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="lacks 1 of 41 samples"):
        logged_outputs(tmp_path / "acc" / "mlperf_log_accuracy.json", 41, shapes)
    with pytest.raises(ValueError, match="holds 7 values"):
        logged_outputs(tmp_path / "acc" / "mlperf_log_accuracy.json", 40, [(3,), (2, 3)])


def test_performance_runs_take_outputs_that_are_not_class_scores(tmp_path):
    """A one-value-per-sample output (N,) has no class axis: the SUT answers with the values, not an argmax."""
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32))
    variant = Variant(
        backend="numpy",
        precision="fp32",
        kernel_precision="fp32",
        parameter_bytes=0,
        metadata={},
        prepare=lambda b: b.numpy(),
        run=lambda b: b.sum(1),
        to_logits=lambda out: out,
    )
    settings = LoadGenSettings(min_query_count=16, min_duration_ms=10, expected_latency_ms=0.05)
    run = run_loadgen(variant, x, "single_stream", settings, tmp_path / "perf")
    assert run.samples_run >= 16 and run.metric is None


def test_an_artifact_whose_manifest_lacks_the_metric_is_exported_again(tmp_path):
    """A manifest written before the metric was recorded (segmentation's once held pixel accuracy) is not reused."""
    cfg = load_study_config(TASKS / EXAMPLES["segmentation"], {**SHORT, "output_dir": str(tmp_path / "out")})
    path = run_study(cfg).output_dir / "model" / "manifest.json"
    manifest = json.loads(path.read_text())
    value = manifest.pop("metric")["value"]
    path.write_text(json.dumps(manifest))
    run_study(cfg)
    assert json.loads(path.read_text())["metric"]["value"] == pytest.approx(value, abs=1e-9)
