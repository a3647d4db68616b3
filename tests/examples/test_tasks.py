"""The task examples (examples/tasks/): keyword spotting (top1, and agreement with no labels), an anomaly
autoencoder (auc through a postprocess) and segmentation (miou). Each one's data loads as its metric reads it, and
a short study's metric equals an independent computation (a plain ONNX Runtime session + numpy / scikit-learn)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import ROOT
from edge_opt.config import InputSettings
from edge_opt.inputs import load_study_data
from edge_opt.pipeline import load_study_config, run_study

TASKS = ROOT / "examples" / "tasks"
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
# name: (config, the targets its metric reads, the validation targets' shape: None when there are none)
EXAMPLES = {
    "keyword": ("keyword/study.yaml", "class_ids", (256,)),
    "agreement": ("keyword/agreement.yaml", "none", None),
    "anomaly": ("anomaly/study.yaml", "any", (256,)),
    "segmentation": ("segmentation/study.yaml", "any", (256, 16, 16)),
}


def _run(session: ort.InferenceSession, npz_path, key: str = "x_val") -> np.ndarray:
    """The model's one output on the npz's uint8 images, preprocessed as documented: x × (1/255)."""
    x = np.load(npz_path)[key].astype(np.float32) * np.float32(1 / 255)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _miou(pred: np.ndarray, masks: np.ndarray, classes: int) -> float:
    ious = [((pred == c) & (masks == c)).sum() / ((pred == c) | (masks == c)).sum() for c in range(classes)]
    return float(np.mean(ious))


def _expected(name: str) -> float:
    """The fp32 model's metric, computed here without edge_opt."""
    folder = TASKS / ("keyword" if name == "agreement" else name)
    out = _run(_session(folder / "model.onnx"), folder / ("unlabelled.npz" if name == "agreement" else "data.npz"))
    if name == "agreement":
        return float(np.mean(out.argmax(1) == out.argmax(1)))
    y = np.load(folder / "data.npz")["y_val"]
    if name == "keyword":
        return float(np.mean(out.argmax(1) == y))
    if name == "anomaly":
        return float(roc_auc_score(y, out.reshape(len(out), -1).astype(np.float64).mean(1)))
    return _miou(out.argmax(1), y, 3)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_task_data_loads_as_its_metric_reads_it(name):
    config, targets, shape = EXAMPLES[name]
    cfg = load_study_config(TASKS / config)
    data = load_study_data(cfg.part(InputSettings), targets=targets)
    assert data.targets == ("none" if name == "agreement" else targets)
    assert data.n_train == 128 and data.n_val == 256
    if shape is None:
        assert data.val_targets is None and not data.has_class_ids
    else:
        assert data.val_targets is not None and data.val_targets.shape == shape
        assert data.has_class_ids == (name in ("keyword", "anomaly"))  # anomaly: 0/1 labels read as two classes
    assert data.input_shape == {"keyword": (1, 20, 32), "agreement": (1, 20, 32), "anomaly": (1, 8, 8)}.get(
        name, (1, 16, 16)
    )


@pytest.mark.parametrize("name", ["keyword", "anomaly", "segmentation"])
def test_task_files_are_small_and_the_model_learned(name):
    folder = TASKS / name
    assert all(f.stat().st_size < 1_000_000 for f in folder.iterdir() if f.is_file())
    floor = {"keyword": 0.95, "anomaly": 0.95, "segmentation": 0.9}[name]
    assert _expected(name) >= floor


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Each example's short study, run once when first asked for (one failing leaves the others' tests alone)."""
    results: dict[str, tuple] = {}

    def study(name: str) -> tuple:
        if name not in results:
            out = tmp_path_factory.mktemp(name) / "out"
            cfg = load_study_config(TASKS / EXAMPLES[name][0], {**TINY, "output_dir": str(out)})
            results[name] = (cfg, run_study(cfg))
        return results[name]

    return study


def _row(df: pd.DataFrame, precision: str) -> pd.Series:
    rows = df[(df["precision"] == precision) & (df["backend"] == "onnxruntime") & (df["pruning_level"] == 0.0)]
    assert len(rows) == 1 and pd.isna(rows.iloc[0]["error"])
    return rows.iloc[0]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_task_study_scores_fp32_as_an_independent_computation(studies, name):
    cfg, res = studies(name)
    df = res.sweep
    assert set(df["precision"]) == {"fp32", "int8"}
    fp32, int8 = _row(df, "fp32"), _row(df, "int8")
    if name == "keyword":  # metric top1: the columns stay those of a default study
        assert "metric" not in df.columns
        assert fp32["accuracy"] == pytest.approx(_expected(name), abs=1e-6)
        return
    assert fp32["metric"] == pytest.approx(_expected(name), abs=1e-6)
    assert np.isfinite(int8["metric"]) and pd.isna(fp32["accuracy"]) and pd.isna(int8["accuracy"])
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["metric"]["name"] == cfg.metric and summary["metric"]["baseline"] == pytest.approx(fp32["metric"])


def test_label_free_agreement_of_int8_matches_its_onnx_file(studies):
    """The int8 variant's agreement equals its own quantized graph's top-1 matches with the fp32 model's."""
    _, res = studies("agreement")
    int8 = _row(res.sweep, "int8")
    files = sorted((res.output_dir / "onnx").glob("*int8*.onnx"))
    assert len(files) == 1
    folder = TASKS / "keyword"
    ref = _run(_session(folder / "model.onnx"), folder / "unlabelled.npz").argmax(1)
    quant = _run(_session(files[0]), folder / "unlabelled.npz").argmax(1)
    assert int8["metric"] == pytest.approx(float(np.mean(quant == ref)), abs=1e-6)


@pytest.mark.parametrize("name", ["anomaly", "agreement"])
def test_a_study_scored_by_another_metric_reloads_from_its_folder(studies, name):
    """`edge-opt report DIR` rebuilds from the stored config, whose full dump carries the default
    max_accuracy_drop beside a metric that is not top1 (which a config given by hand may not)."""
    from edge_opt.pipeline import rebuild_report
    from edge_opt.study import load_stored_study

    _, res = studies(name)
    cfg, _ = studies(name)
    stored = load_stored_study(res.output_dir)
    assert stored.cfg.metric == cfg.metric != "top1"
    assert rebuild_report(res.output_dir).is_file()
