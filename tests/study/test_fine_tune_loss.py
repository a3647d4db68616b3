"""Fine-tuning after pruning with the config's `loss`: a model that arrives trained and is scored by a metric other
than top1/top5 is fine-tuned only with a loss; without one its pruned points are skipped with the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import ROOT
from edge_opt.config import ConfigError, config_from_dict
from edge_opt.pipeline import load_study_config, run_study
from edge_opt.study.runner import LOSS_NEEDED, fine_tune_loss

TASKS = ROOT / "examples" / "tasks"
TINY = {
    "pruning_levels": [0.0, 0.25],
    "precisions": ["fp32"],
    "backends": ["onnxruntime"],
    "fine_tune_epochs": 1,
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
}


@pytest.mark.parametrize(
    ("keys", "loss"),
    [
        ({}, "cross_entropy"),  # a registry model, trained by the study: as today
        ({"model": {"onnx": "m.onnx"}}, "cross_entropy"),  # metric top1: a classifier, as today
        ({"model": {"onnx": "m.onnx"}, "metric": "top5"}, "cross_entropy"),
        ({"model": {"onnx": "m.onnx"}, "metric": "miou"}, None),
        ({"model": {"onnx": "m.onnx"}, "metric": "miou", "epochs": 2}, "cross_entropy"),  # the study trains it
        ({"model": {"onnx": "m.onnx"}, "metric": "miou", "loss": "cross_entropy"}, "cross_entropy"),
        ({"model": {"exported": "m.pt2"}, "metric": "auc", "loss": "pkg.mod:fn"}, "pkg.mod:fn"),
    ],
)
def test_fine_tune_loss_defaults_to_cross_entropy_only_where_it_did(keys, loss):
    assert fine_tune_loss(config_from_dict(keys)) == loss


def _study(tmp_path, task: str, **keys):
    folder = TASKS / task
    if (tmp_path / task).is_dir():  # a copy of the example with the test's loss module beside its config
        folder = tmp_path / task
    cfg = load_study_config(folder / "study.yaml", {**TINY, "output_dir": str(tmp_path / "out"), **keys})
    res = run_study(cfg)
    return res.sweep.set_index("pruning_level"), json.loads((res.output_dir / "summary.json").read_text())


def test_segmentation_pruned_point_is_fine_tuned_with_cross_entropy(tmp_path):
    """Cross-entropy over (N, C, H, W) logits against (N, H, W) masks: the pruned row is measured."""
    df, summary = _study(tmp_path, "segmentation", loss="cross_entropy")
    assert df["error"].isna().all() and not summary["skipped"]
    assert np.isfinite(df.loc[0.25, "metric"]) and 0 < df.loc[0.25, "metric"] <= 1


def test_segmentation_without_a_loss_skips_the_pruned_point_with_the_reason(tmp_path):
    df, summary = _study(tmp_path, "segmentation")
    assert list(df.index) == [0.0]  # the unpruned row is measured as before
    assert [(s["pruning_level"], s["reason"]) for s in summary["skipped"]] == [(0.25, LOSS_NEEDED)]
    assert "set loss: cross_entropy | mse | bce | package.module:function" in LOSS_NEEDED


def _anomaly_copy(tmp_path, module: str, code: str) -> None:
    """The anomaly example copied into ``tmp_path`` with the loss module ``module`` beside its config (a name of
    its own per test: Python keeps a module imported once)."""
    shutil.copytree(TASKS / "anomaly", tmp_path / "anomaly")
    (tmp_path / "anomaly" / f"{module}.py").write_text(code)


def test_anomaly_pruned_point_is_fine_tuned_with_a_loss_callable(tmp_path):
    """The autoencoder's one output is its squared reconstruction error: its mean is a loss that trains it."""
    _anomaly_copy(tmp_path, "recon_loss", "def mean_error(outputs, targets):\n    return outputs.mean()\n")
    df, summary = _study(tmp_path, "anomaly", loss="recon_loss:mean_error")
    assert df["error"].isna().all() and not summary["skipped"]
    assert np.isfinite(df.loc[0.25, "metric"])


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("mse", r"The 'loss' 'mse' needs targets of the output's shape \(128, 1, 8, 8\); got \(128,\)"),
        ("bad_loss:raises", r"The 'loss' callable 'bad_loss:raises' failed: ValueError: no"),
        ("bad_loss:missing", r"The 'loss' callable 'bad_loss:missing': module 'bad_loss' has no callable 'missing'"),
    ],
)
def test_a_loss_that_cannot_train_the_model_stops_the_study(tmp_path, loss, message):
    _anomaly_copy(tmp_path, "bad_loss", "def raises(outputs, targets):\n    raise ValueError('no')\n")
    with pytest.raises(ConfigError, match=message):
        _study(tmp_path, "anomaly", loss=loss)
    assert not (tmp_path / "out" / "sweep_results.csv").exists()
