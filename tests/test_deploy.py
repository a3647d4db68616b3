import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edge_opt.deploy import (
    deployment_simulation,
    device_latency_factor,
    max_rate_within,
    scale_layer_times,
    simulate_server,
)


def test_empty_loader():
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="No batches"):
        deployment_simulation(torch.nn.Flatten(), empty)


def test_single_stream_honours_min_queries_and_duration(trained_small, digits8):
    r = deployment_simulation(trained_small, digits8.val_loader, min_queries=50, min_duration_s=0.01,
                              scenarios=["single_stream"])
    assert r["scenarios"]["single_stream"]["host"]["queries"] >= 50
    r = deployment_simulation(trained_small, digits8.val_loader, min_queries=1, min_duration_s=0.3,
                              scenarios=["single_stream"])
    host = r["scenarios"]["single_stream"]["host"]
    assert host["duration_s"] >= 0.3 and host["p90_ms"] <= host["p99_ms"]


def test_all_scenarios_and_linear_half_clock_doubles(trained_small, digits8):
    r = deployment_simulation(trained_small, digits8.val_loader, cpu_frequency_scale=0.5, min_queries=30,
                              min_duration_s=0.01, latency_model="linear")
    assert set(r["scenarios"]) == {"single_stream", "server", "offline", "batch"}
    ss = r["scenarios"]["single_stream"]
    assert ss["device"]["p90_ms"] == pytest.approx(2 * ss["host"]["p90_ms"])
    b = r["scenarios"]["batch"]
    assert b["device"]["batch_latency_ms"] == pytest.approx(2 * b["host"]["batch_latency_ms"])
    assert r["batch_latency_ms"] == b["device"]["batch_latency_ms"]  # the reference's keys
    assert r["scenarios"]["offline"]["host"]["throughput_sps"] > 0
    assert ss["host"]["energy_source"] == "proxy"


def test_server_latency_includes_queueing_and_grows_with_rate():
    service = np.full(2000, 1.0)
    low = simulate_server(service, 100.0, seed=1)
    high = simulate_server(service, 900.0, seed=1)
    assert (low >= service - 1e-12).all() and (high >= service - 1e-12).all()
    assert np.percentile(high, 99) > np.percentile(low, 99)


def test_max_rate_search_keeps_p99_in_budget():
    rng = np.random.default_rng(0)
    service = rng.uniform(0.5, 1.5, 3000)
    res = max_rate_within(service, bound_ms=5.0, steps=10, seed=3)
    assert res["max_rate_qps"] > 0
    again = simulate_server(service, res["max_rate_qps"], seed=3)
    assert np.percentile(again, 99) <= 5.0


def test_latency_models():
    assert device_latency_factor(0.5, "linear") == 2.0
    assert device_latency_factor(0.5, "roofline", compute_bound_fraction=0.25) == pytest.approx(1.25)
    layers = pd.DataFrame({"layer": ["conv", "copy"], "roofline_time_ms": [1.0, 1.0],
                           "bound_regime": ["compute-bound", "memory-bound"]})
    scaled = scale_layer_times(layers, 0.5).set_index("layer")
    assert scaled.loc["conv", "device_time_ms"] == 2.0 and scaled.loc["copy", "device_time_ms"] == 1.0
    with pytest.raises(ValueError, match="cpu_frequency_scale"):
        device_latency_factor(0.0)
