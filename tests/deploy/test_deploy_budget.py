"""The deployment stage within a per-model time budget: scenarios planned from the model's measured latency, one
that does not fit skipped with its reason, the server's rate search cut short, and fixed-count loops bounded."""

import math
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edge_opt.deploy.results import TargetSimulation
from edge_opt.deploy.scenarios import DeploymentSettings, _bounded_calls, deployment_simulation
from edge_opt.variants import Variant


def _slow_variant(call_s: float) -> Variant:
    """A variant whose every call (a query or a batch) sleeps ``call_s``."""

    def run(x: torch.Tensor) -> np.ndarray:
        time.sleep(call_s)
        return np.zeros((len(x), 10), dtype=np.float32)

    return Variant("fake", "fp32", "fp32", 4, {}, prepare=lambda x: x, run=run, to_logits=lambda out: out)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)), batch_size=4)


def test_a_scenario_that_does_not_fit_the_budget_is_skipped_with_its_reason(tmp_path):
    # multi-stream needs 16 queries × 8 samples × 10 ms ≈ 1.3 s: more than the whole 1 s budget
    s = DeploymentSettings(
        min_queries=16, min_duration_s=0.05, multi_stream_samples_per_query=8, max_s=1.0, log_dir=tmp_path
    )
    r = deployment_simulation(_slow_variant(0.01), _loader(), scenarios=["single_stream", "multi_stream"], settings=s)
    assert set(r["scenarios"]) == {"single_stream"}
    why = r["skipped_scenarios"]["multi_stream"]
    assert "deployment.max_s" in why and "planned" in why
    sim = TargetSimulation.from_dict("baseline", r)
    assert sim.skipped_scenarios == {"multi_stream": why} and sim.scenario("multi_stream") is None
    assert TargetSimulation.from_dict("baseline", sim.to_dict()).skipped_scenarios == sim.skipped_scenarios


def test_without_a_budget_nothing_is_skipped(tmp_path):
    s = DeploymentSettings(min_queries=8, min_duration_s=0.05, multi_stream_samples_per_query=2, log_dir=tmp_path)
    r = deployment_simulation(_slow_variant(0.002), _loader(), scenarios=["single_stream", "multi_stream"], settings=s)
    assert set(r["scenarios"]) == {"single_stream", "multi_stream"} and "skipped_scenarios" not in r


def test_the_server_rate_search_stops_at_the_budget(tmp_path):
    # 20 ms queries: the warm-up, the single-stream run and the server's own run (16 queries at 25/s) take 1.2 s;
    # five search steps of 16 queries below 50/s (the first at 25/s) 1.9 s more: not in a 2 s budget
    s = DeploymentSettings(min_queries=16, min_duration_s=0.05, server_search_steps=5, max_s=2.0, log_dir=tmp_path)
    r = deployment_simulation(_slow_variant(0.02), _loader(), scenarios=["server"], settings=s)
    host = r["scenarios"]["server"]["host"]
    assert host["search_steps"] < 5
    assert host["search_steps"] > 0 or math.isnan(host["search_max_rate_qps"])  # no step run: no rate found


@pytest.mark.parametrize(("call_s", "calls"), [(0.02, 8), (0.0, 64)])
def test_fixed_count_loops_stop_after_their_time_past_their_least_count(call_s, calls):
    def fn(_x):
        if call_s:
            time.sleep(call_s)

    # 20 ms calls: the 0.1 s pass after five, but eight are the least; no-op calls: all 64 within the 0.1 s
    assert len(_bounded_calls(fn, [None], most=64, least=8, within_s=0.1)) == calls


def test_a_budget_out_of_range_is_refused():
    with pytest.raises(ValueError, match="'max_s'"):
        DeploymentSettings(max_s=0.0)
