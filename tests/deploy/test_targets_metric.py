"""A study scored by another metric than top1, measured on a device agent: the agent returns the raw outputs and
the host computes the metric, so a target row's metric equals the host row's for the same variant (the same
runtime), and the target rows carry the metric columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agent_process import TOKEN, start_agent
from conftest import ROOT
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


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["anomaly", "segmentation"])
def test_a_target_row_scores_the_metric_as_the_host_row(tmp_path, monkeypatch, name):
    monkeypatch.setenv("EDGE_OPT_TEST_TOKEN", TOKEN)
    proc, url = start_agent(tmp_path / "agent")
    target = {"name": "local-agent", "url": url, "token_env": "EDGE_OPT_TEST_TOKEN", "timeout_s": 60}
    over = {**TINY, "output_dir": str(tmp_path / "out"), "targets": [target], "measure_on": ["host", "local-agent"]}
    try:
        cfg = load_study_config(TASKS / name / "study.yaml", over)
        res = run_study(cfg)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    df = res.sweep
    host = df[(df["measured_on"] == "host") & (df["backend"] == "onnxruntime")].set_index("precision")
    agent = df[df["measured_on"] == "local-agent"].set_index("precision")
    assert sorted(agent.index) == ["fp32", "int8"] and agent["error"].isna().all(), agent["error"].tolist()
    display = {"anomaly": "ROC AUC", "segmentation": "mIoU"}[name]
    assert (agent["metric_name"] == display).all()
    for precision in ("fp32", "int8"):
        assert np.isfinite(agent.loc[precision, "metric"])
        assert agent.loc[precision, "metric"] == pytest.approx(host.loc[precision, "metric"], abs=1e-6)
    assert agent["accuracy"].isna().all()  # no (N, C) class scores of class ids: as on the host
    validation = sorted(p.name for p in (res.output_dir / "targets").glob("*.npy"))
    assert validation == ["validation_inputs.npy"]  # the labels stay on the host
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["metric"]["display_name"] == display
    print(name, {p: (host.loc[p, "metric"], agent.loc[p, "metric"]) for p in ("fp32", "int8")})
    assert not pd.isna(agent.loc["fp32", "latency_ms"])
