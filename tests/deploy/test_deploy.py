import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edge_opt.deploy.scenarios import deployment_simulation, device_latency_factor, scale_layer_times


def test_empty_loader():
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="No batches"):
        deployment_simulation(torch.nn.Flatten(), empty)


def _summary_value(folder, key):
    from edge_opt.deploy.loadgen import parse_summary

    return parse_summary((folder / "mlperf_log_summary.txt").read_text())[key]


def test_single_stream_numbers_are_loadgens_own(trained_small, digits8, tmp_path):
    r = deployment_simulation(
        trained_small,
        digits8.val_loader,
        scenarios=["single_stream"],
        min_queries=64,
        min_duration_s=0.2,
        log_dir=tmp_path,
    )
    host = r["scenarios"]["single_stream"]["host"]
    assert r["driver"] == "mlperf_loadgen" and host["loadgen_verdict"] in ("VALID", "INVALID")
    folder = tmp_path / "single_stream"
    assert host["loadgen_log"] == str(folder)
    assert host["p90_ms"] == pytest.approx(int(_summary_value(folder, "90.00 percentile latency (ns)")) / 1e6)
    assert host["p50_ms"] == pytest.approx(int(_summary_value(folder, "50.00 percentile latency (ns)")) / 1e6)
    assert host["qps"] == pytest.approx(float(_summary_value(folder, "QPS w/ loadgen overhead")))
    assert host["early_stopping_p90_ms"] >= host["p90_ms"] * 0.9 and host["p50_ms"] <= host["p90_ms"]


def test_all_scenarios_and_linear_half_clock_doubles(trained_small, digits8, tmp_path):
    r = deployment_simulation(
        trained_small,
        digits8.val_loader,
        cpu_frequency_scale=0.5,
        min_queries=30,
        min_duration_s=0.1,
        latency_model="linear",
        server_search_steps=2,
        multi_stream_samples_per_query=4,
        log_dir=tmp_path,
    )
    assert set(r["scenarios"]) == {"single_stream", "multi_stream", "server", "offline", "batch"}
    ss = r["scenarios"]["single_stream"]
    assert ss["device"]["p90_ms"] == pytest.approx(2 * ss["host"]["p90_ms"]) and ss["device"]["simulated"]
    assert ss["device"]["qps"] == pytest.approx(ss["host"]["qps"] / 2)
    b = r["scenarios"]["batch"]
    assert b["device"]["batch_latency_ms"] == pytest.approx(2 * b["host"]["batch_latency_ms"])
    assert r["batch_latency_ms"] == b["device"]["batch_latency_ms"]  # the reference's keys
    assert r["scenarios"]["offline"]["host"]["throughput_sps"] > 0
    assert r["scenarios"]["multi_stream"]["host"]["samples_per_query"] == 4
    assert ss["host"]["energy_source"] == "proxy"
    for scenario in ("single_stream", "multi_stream", "server", "offline"):
        assert (tmp_path / scenario / "mlperf_log_detail.txt").is_file(), scenario
    from edge_opt.deploy import DeploymentResult, TargetSimulation

    sim = TargetSimulation.from_dict("baseline", r)
    assert sim.to_dict() == r and list(sim.to_dict()) == list(r)  # the record gives the document back, in order
    for s in sim.scenarios:
        assert list(s.to_dict()) == list(r["scenarios"][s.name])
    rows = DeploymentResult((sim,)).rows()
    assert [(x.scenario, x.where) for x in rows[:2]] == [("single_stream", "host"), ("single_stream", "device")]
    assert len(rows) == 10 and rows[1].to_dict()["p90_ms"] == ss["device"]["p90_ms"]


def test_unattainable_server_target_is_invalid_with_loadgens_reason(trained_small, digits8, tmp_path):
    r = deployment_simulation(
        trained_small,
        digits8.val_loader,
        scenarios=["server"],
        server_target_qps=1e7,
        min_duration_s=0.1,
        server_search_steps=1,
        log_dir=tmp_path,
    )
    host = r["scenarios"]["server"]["host"]
    assert host["loadgen_verdict"] == "INVALID"
    assert "Performance constraints satisfied : NO" in host["loadgen_reason"]


def test_accuracy_mode_reads_loadgens_accuracy_log(trained_small, digits8, tmp_path):
    from edge_opt.deploy.scenarios import loadgen_accuracy
    from edge_opt.measure.metrics import as_variant

    variant = as_variant(trained_small, None, [(next(iter(digits8.val_loader))[0][:2], None)], "cpu")
    run = loadgen_accuracy(variant, digits8.val_loader, digits8.val_labels, tmp_path)
    logits = np.concatenate([variant.predict(x) for x, _ in digits8.val_loader])
    assert run.accuracy == pytest.approx(float((logits.argmax(1) == digits8.val_labels).mean()))
    assert (tmp_path / "mlperf_log_accuracy.json").stat().st_size > 0


def test_latency_models():
    assert device_latency_factor(0.5, "linear") == 2.0
    assert device_latency_factor(0.5, "roofline", compute_bound_fraction=0.25) == pytest.approx(1.25)
    layers = pd.DataFrame(
        {"layer": ["conv", "copy"], "roofline_time_ms": [1.0, 1.0], "bound_regime": ["compute-bound", "memory-bound"]}
    )
    scaled = scale_layer_times(layers, 0.5).set_index("layer")
    assert scaled.loc["conv", "device_time_ms"] == 2.0 and scaled.loc["copy", "device_time_ms"] == 1.0
    with pytest.raises(ValueError, match="cpu_frequency_scale"):
        device_latency_factor(0.0)


class _NoModelSweep:
    """Just what the deployment stage reads of a sweep; building a variant fails."""

    def __init__(self, cfg):
        self.cfg = cfg

    def should_stop(self):
        return False

    def parent(self, level):
        raise RuntimeError("no model here")


def test_simulate_deployment_returns_the_record(tiny_cfg, trained_small, digits8, tmp_path):
    from dataclasses import FrozenInstanceError

    from edge_opt.deploy import DeploymentResult, DeploymentTarget, SimulationError, TargetSimulation
    from edge_opt.deploy.scenarios import deployment_cache_key, simulate_deployment
    from edge_opt.study import StudyStore, baseline_point
    from edge_opt.study.store import dumps

    doc = deployment_simulation(
        trained_small,
        digits8.val_loader,
        scenarios=["single_stream", "batch"],
        min_queries=20,
        min_duration_s=0.05,
        log_dir=tmp_path / "logs",
    )
    doc.update(hardware={"roofline_efficiency": 0.5}, measured_fewer_threads={"skipped": "threads=1"})
    base = DeploymentTarget("baseline", baseline_point(tiny_cfg), {})
    rec = DeploymentTarget("recommended", baseline_point(tiny_cfg), {"x": 1})
    out = tmp_path / "out"
    with StudyStore(tmp_path / "s.sqlite") as store:
        store.set_meta(deployment_cache_key(tiny_cfg, base), doc)  # the baseline's simulation is stored: reused
        res = simulate_deployment(_NoModelSweep(tiny_cfg), [base, rec], store, out)
    assert isinstance(res, DeploymentResult) and res.loadgen_accuracy is None  # no artifact in out/model
    sim, failed = res.targets
    assert isinstance(sim, TargetSimulation) and sim.label == "baseline" and res.get("baseline") is sim
    assert dumps(sim.to_dict()) == dumps(doc)  # the stored document, read back as the record
    assert sim.scenario("single_stream") is not None and sim.measured_fewer_threads == {"skipped": "threads=1"}
    assert isinstance(failed, SimulationError) and "no model here" in failed.error and res.errors == (failed,)
    assert res.warnings == ("deployment simulation of recommended failed: no model here",)
    assert res.to_dict()["recommended"] == {"error": "RuntimeError: no model here"}
    csv = pd.read_csv(out / "deployment.csv")
    assert len(csv) == len(res.rows()) == 4 and list(csv.columns[:3]) == ["model", "scenario", "where"]
    with pytest.raises(FrozenInstanceError):
        res.warnings = ()  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        sim.backend = "x"  # type: ignore[misc]


@pytest.mark.slow
def test_study_deployment_is_loadgens(tmp_path):
    import json

    from edge_opt.config import config_from_dict
    from edge_opt.deploy.loadgen import parse_summary
    from edge_opt.pipeline import run_study

    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
        "pruning_levels": [0.0],
        "precisions": ["fp32"],
        "backends": ["torch", "onnxruntime"],
        "benchmark_repeats": 5,
        "benchmark_trials": 5,
        "memory_budgets_mb": [1.0],
        "active_memory_budget_mb": 1.0,
        "max_accuracy_drop": 0.5,
        "output_dir": str(tmp_path / "out"),
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
        "deployment": {"min_duration_s": 0.2, "server_search_steps": 1, "server_target_qps": 1e7},
    }
    res = run_study(config_from_dict(d))  # an unattainable server target: INVALID, and the study completes
    out = res.output_dir
    dep = pd.read_csv(out / "deployment.csv")
    lg = dep[dep["scenario"] != "batch"]
    assert set(lg["loadgen_verdict"]) <= {"VALID", "INVALID"} and lg["loadgen_verdict"].notna().all()
    for model in ("baseline", "recommended"):
        host = dep[(dep["model"] == model) & (dep["scenario"] == "single_stream") & (dep["where"] == "host")].iloc[0]
        text = (out / "deployment" / model / "single_stream" / "mlperf_log_summary.txt").read_text()
        assert host["p90_ms"] == pytest.approx(int(parse_summary(text)["90.00 percentile latency (ns)"]) / 1e6)
        server = dep[(dep["model"] == model) & (dep["scenario"] == "server") & (dep["where"] == "host")].iloc[0]
        assert server["loadgen_verdict"] == "INVALID" and "Performance constraints" in server["loadgen_reason"]
    acc = res.summary["deployment"]["loadgen_accuracy"]
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert acc["accuracy"] == pytest.approx(manifest["artifact_accuracy"])
    rec = res.summary["recommended"]
    row = res.sweep[res.sweep["key"] == rec["key"]].iloc[0]
    p50 = dep[(dep["model"] == "recommended") & (dep["scenario"] == "single_stream") & (dep["where"] == "host")]
    # LoadGen's p50 includes its per-query overhead (a Python callback, ~10-30 µs here): allowed on top of 15 %
    assert abs(float(p50["p50_ms"].iloc[0]) - row["latency_median_ms"]) <= 0.15 * row["latency_median_ms"] + 0.05
