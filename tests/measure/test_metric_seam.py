"""The metric seam through the study: ``metric`` / ``postprocess`` / ``max_metric_drop`` from the config to the rows,
the selection and summary.json, checked against an independent computation (a plain ONNX Runtime session)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.config import ConfigError, InputSettings, config_from_dict
from edge_opt.inputs import load_study_data
from edge_opt.measure import MeasurementRecord
from edge_opt.pipeline import load_study_config, registry_errors, run_study
from edge_opt.study.selection import assess_results, best_effort, recommend, select_recommendation
from records import fake_result

TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream"], "min_queries": 20, "min_duration_s": 0.05},
    "dataset": "digits",
    "epochs": 1,
    "pruning_levels": [0.0],
    "precisions": ["fp32", "int8"],
    "backends": ["onnxruntime"],
}

METRIC_MODULE = """
import numpy as np


def cross_entropy(outputs, targets):
    logits = outputs[0].astype(np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(targets)), targets].mean())


def raises(outputs, targets):
    raise RuntimeError("metric exploded")


def not_finite(outputs, targets):
    return float("nan")


def an_array(outputs, targets):
    return outputs[0]
"""


def _study(tmp_path: Path, **over):
    (tmp_path / "seam_metrics.py").write_text(METRIC_MODULE)
    cfg = config_from_dict({**TINY, "output_dir": str(tmp_path / "out"), "config_dir": str(tmp_path), **over})
    assert registry_errors(cfg) == []
    return cfg, run_study(cfg)


def _plain_session_outputs(cfg, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fp32 ONNX file the study exported, run in a plain session on the validation inputs."""
    import onnxruntime as ort

    data = load_study_data(cfg.part(InputSettings))
    x = np.concatenate([b[0].numpy() for b in data.val_loader])
    y = np.concatenate([b[1].numpy() for b in data.val_loader])
    (onnx_file,) = (out / "onnx").glob("*_fp32.onnx")
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0], y


def _fp32(df):
    return df[(df["backend"] == "onnxruntime") & (df["precision"] == "fp32")].iloc[0]


@pytest.fixture(scope="module")
def top5_study(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("top5"), metric="top5")


def test_top5_study_scores_every_row_and_matches_a_plain_session(top5_study):
    cfg, res = top5_study
    df = res.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    assert {"metric", "metric_name"} <= set(df.columns) and set(df["metric_name"]) == {"Top-5 accuracy"}
    logits, y = _plain_session_outputs(cfg, res.output_dir)
    top5 = np.mean(np.any(np.argsort(-logits, axis=1, kind="stable")[:, :5] == y[:, None], axis=1))
    row = _fp32(df)
    assert row["metric"] == pytest.approx(top5, abs=1e-6)
    assert row["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-6)  # still top-1
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["metric"]["name"] == "top5" and summary["metric"]["display_name"] == "Top-5 accuracy"
    assert summary["metric"]["higher_is_better"] is True
    assert summary["metric"]["baseline"] == pytest.approx(top5, abs=0.02)  # the torch fp32 baseline's
    assert "Top-5 accuracy drop" in summary["recommended"]["why"]


def test_user_callable_lower_is_better_matches_numpy_and_drives_int8_mixed(tmp_path):
    cfg, res = _study(
        tmp_path,
        metric="seam_metrics:cross_entropy",
        metric_higher_is_better=False,
        metric_name="cross-entropy",
        max_metric_drop=10.0,  # every row is within budget: the tie-break picks among them
        precisions=["fp32", "int8", "int8_mixed"],
    )
    df = res.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    logits, y = _plain_session_outputs(cfg, res.output_dir)
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    xent = float(-(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(y)), y].mean())
    assert _fp32(df)["metric"] == pytest.approx(xent, abs=1e-6)
    assert set(df["metric_name"]) == {"cross-entropy"}
    # int8_mixed searched in the metric (higher-is-better sign: the loss negated), not in top-1 accuracy
    mixed = df[df["precision"] == "int8_mixed"].iloc[0]
    steps = json.loads((res.output_dir / mixed["metadata_file"]).read_text())["metadata"]["mixed_search"]
    assert steps[0]["float_layers"] == [] and steps[0]["accuracy"] == pytest.approx(-mixed["metric"], abs=1e-6)
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["metric"] == {
        "name": "cross-entropy",
        "display_name": "cross-entropy",
        "higher_is_better": False,
        "baseline": pytest.approx(xent, rel=1e-3),  # the torch fp32 baseline's
    }


def _scored(key, precision, value, latency, memory=1.0, name="cross-entropy"):
    r = fake_result(key, 0.0, precision, "torch", accuracy=0.9, latency_ms=[latency] * 5, memory_mb=memory)
    rec: MeasurementRecord = r.measurement
    from dataclasses import replace

    return r.with_info(measurement=replace(rec, metric=value, metric_name=name))


def test_selection_follows_a_lower_is_better_metric(tmp_path):
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "metric": "pkg.mod:loss",
            "metric_higher_is_better": False,
            "max_metric_drop": 0.2,
            "active_memory_budget_mb": 2.0,
            "memory_budgets_mb": [2.0],
        }
    )
    base = _scored("a", "fp32", 1.0, 1.0, memory=4.0)  # over the memory budget
    rs = [base, _scored("b", "int8", 1.1, 0.5), _scored("c", "int8", 1.15, 0.5), _scored("d", "int8", 1.5, 0.2)]
    a = assess_results(rs, cfg, base)
    sel = select_recommendation(a, base, cfg)
    # d is fastest but 0.5 worse (higher loss) than the baseline; b and c tie on latency: the lowest loss wins
    assert sel.goals_met and sel.chosen.result.key == "b", sel
    assert "cross-entropy drop ≤ 0.2" in sel.why
    rec, failed = recommend(a, 1.0, 0.01, budget_key="max_metric_drop")
    assert rec is None and failed == ["no accepted configuration is within max_metric_drop=0.01"]
    relative = cfg.model_copy(update={"metric_drop_relative": True, "max_metric_drop": 0.12})
    assert select_recommendation(a, base, relative).chosen.result.key == "b"
    assert best_effort([x for x in a if x.result.key != "a"]).result.key == "b"  # the lowest loss


def test_agreement_works_with_the_labels_left_out(tmp_path):
    byo = ROOT / "examples" / "bring_your_own"
    z = np.load(byo / "digits.npz")
    np.savez(tmp_path / "unlabelled.npz", x_train=z["x_train"], x_val=z["x_val"])  # no y_train, no y_val
    over = {"model": {"onnx": str(byo / "model.onnx")}, "epochs": None, "dataset": "npz"}
    cfg, res = _study(tmp_path, metric="agreement", data_path=str(tmp_path / "unlabelled.npz"), **over)
    df = res.sweep
    assert df["error"].isna().all(), df["error"].tolist()
    assert set(df["metric_name"]) == {"Top-1 agreement"} and df["accuracy"].isna().all()  # no labels: no top-1
    assert _fp32(df)["metric"] == 1.0 and 0.5 < df[df["precision"] == "int8"]["metric"].iloc[0] <= 1.0
    assert json.loads((res.output_dir / "summary.json").read_text())["metric"]["baseline"] == 1.0
    assert "Top-1 agreement" in (res.output_dir / "report.html").read_text()


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        ("raises", "metric exploded"),
        ("not_finite", "finite"),
        ("an_array", "scalar"),
        ("missing", "missing"),
    ],
)
def test_bad_metric_callables_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, fn, needle):
    (tmp_path / "seam_metrics.py").write_text(METRIC_MODULE)
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "metric": f"seam_metrics:{fn}", "metric_higher_is_better": True}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    code = main(["run", "--config", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert needle in err[0] and fn in err[0], err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("over", "needles"),
    [
        ({"metric": "pkg.mod:fn"}, ["metric_higher_is_better", "pkg.mod:fn"]),
        ({"metric": "top5", "metric_name": "t5"}, ["metric_name", "top5"]),
        ({"max_accuracy_drop": 0.02, "max_metric_drop": 0.02}, ["max_accuracy_drop", "max_metric_drop"]),
        ({"metric": "mae", "max_accuracy_drop": 0.02}, ["max_metric_drop", "mae"]),
        ({"metric_drop_relative": True}, ["max_metric_drop"]),
        ({"metric": "pkg.mod:"}, ["'metric'", "package.module:function"]),
        ({"postprocess": "decode"}, ["'postprocess'", "package.module:function", "'decode'"]),
    ],
)
def test_metric_keys_are_validated(tmp_path, over, needles):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"output_dir": str(tmp_path), **over})
    assert len(exc.value.errors) == 1
    for needle in needles:
        assert needle in exc.value.errors[0], exc.value.errors[0]


def test_registry_refuses_unknown_metrics_and_a_direction_that_disagrees(tmp_path):
    bad = config_from_dict({"output_dir": str(tmp_path), "metric": "top7"})
    assert any("'metric'" in e and "top7" in e for e in registry_errors(bad))
    wrong = config_from_dict({"output_dir": str(tmp_path), "metric": "mae", "metric_higher_is_better": True})
    assert any("'metric_higher_is_better'" in e and "false" in e for e in registry_errors(wrong))
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "o"), "metric": "rmse", "max_metric_drop": 0.1}))
    assert load_study_config(yaml_cfg).metric_budget == 0.1


def test_default_rows_have_no_metric_columns():
    row = fake_result("a", 0.0, "fp32", "torch", accuracy=0.9, latency_ms=[1.0] * 3, memory_mb=1.0).row()
    assert "metric" not in row and "metric_name" not in row
    assert math.isnan(
        fake_result("b", 0.0, "fp32", "torch", accuracy=0.9, latency_ms=[1.0], memory_mb=1.0).metrics.metric
    )
