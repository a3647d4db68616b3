"""Measurement cost follows the precision wanted: calls per sample from the call's length, a per-variant time budget
for the latency rounds (flagged on the record), and a throughput run that does not repeat a long batch call."""

import math
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edge_opt.measure.metrics import BenchmarkSettings, MeasurementRecord, measure_variants
from edge_opt.variants import Variant


def _loader(n: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.long)), batch_size=n)


def _fake(single_s: float, batch_s: float = 0.0, slow_every: int = 0, slow_s: float = 0.0) -> tuple[Variant, dict]:
    """A variant whose single-input calls (the latency phase) sleep ``single_s`` (every ``slow_every``-th one
    ``slow_s`` more, as when another process takes the core) and whose batch calls sleep ``batch_s``; counts both."""
    calls = {"single": 0, "batch": 0}

    def run(x: torch.Tensor) -> np.ndarray:
        if len(x) == 1:
            calls["single"] += 1
            extra = slow_s if slow_every and calls["single"] % slow_every == 0 else 0.0
            if single_s or extra:
                time.sleep(single_s + extra)
        else:
            calls["batch"] += 1
            if batch_s:
                time.sleep(batch_s)
        return np.zeros((len(x), 10), dtype=np.float32)

    v = Variant("fake", "fp32", "fp32", 4, {}, prepare=lambda x: x, run=run, to_logits=lambda out: out)
    return v, calls


def _settings(**over) -> BenchmarkSettings:
    base = {"repeats": 8, "warmup": 2, "min_sample_ms": 5.0, "target_rel_ci": 0.0, "max_extra_rounds": 0}
    return BenchmarkSettings(**{**base, **over})


def test_a_call_that_lasts_the_minimum_sample_is_one_call_per_sample():
    v, _ = _fake(0.012)
    rec = measure_variants([v], _loader(), _settings(trials=10, interrupted_factor=0.0))[0]
    assert rec.latency.runs_per_sample == 1 and rec.latency.n == 8  # not the 10 `trials` of a shorter call


def test_tiny_calls_still_get_enough_calls_to_last_the_minimum_sample():
    v, _ = _fake(0.0)
    rec = measure_variants([v], _loader(), _settings(trials=10, min_sample_ms=2.0))[0]
    assert rec.latency.runs_per_sample >= 100  # a no-op call lasts well under 20 µs
    # a sample lasts about the 2 ms (a no-op call's length moves several-fold on a shared host: a wide margin)
    assert rec.latency.runs_per_sample * rec.latency.median >= 0.25 * 2.0


def test_without_a_minimum_sample_the_trials_are_the_calls_per_sample():
    v, _ = _fake(0.012)
    rec = measure_variants([v], _loader(), _settings(trials=3, min_sample_ms=0.0))[0]
    assert rec.latency.runs_per_sample == 3


def test_the_time_budget_stops_the_rounds_and_the_row_says_so():
    v, calls = _fake(0.01)
    s = _settings(repeats=40, max_extra_rounds=4, target_rel_ci=1e-9, max_s=0.3)
    rec = measure_variants([v], _loader(), s)[0]
    taken = rec.latency.n + len(rec.latency.interrupted_ms)
    # each round is one untimed call and one timed one, each ≥ 10 ms: at most 15 rounds fit in 0.3 s
    assert 2 <= taken <= 15 and rec.latency.budget_hit
    assert rec.latency.spent_s >= 0.3 and calls["single"] <= 2 * taken + 4  # warm-up and probe, then the rounds
    back = MeasurementRecord.from_dict(rec.to_dict())
    assert back.latency.budget_hit and back.latency.spent_s == rec.latency.spent_s
    assert math.isfinite(rec.metrics.latency_ci95_ms)  # the CI the budget bought


def test_a_row_that_meets_its_rules_within_the_budget_is_not_flagged():
    v, _ = _fake(0.002)
    rec = measure_variants([v], _loader(), _settings(max_s=30.0, interrupted_factor=0.0))[0]
    assert rec.latency.n == 8 and not rec.latency.budget_hit and 0 < rec.latency.spent_s < 30


def test_an_always_interrupted_host_stops_at_the_budget():
    # every third latency call is held up 40 ms: a third of the samples set aside and retaken, and the CI target
    # is never met; the count cap (8 × 101 samples) is far: the time budget ends it
    v, _ = _fake(0.006, slow_every=3, slow_s=0.04)
    s = _settings(max_extra_rounds=100, target_rel_ci=1e-9, max_s=0.5)
    rec = measure_variants([v], _loader(), s)[0]
    assert rec.latency.interrupted_ms and rec.latency.budget_hit
    assert rec.latency.n + len(rec.latency.interrupted_ms) < 8 * 101 // 4


def test_a_long_batch_call_is_timed_once_for_throughput():
    v, calls = _fake(0.006, batch_s=0.12)
    rec = measure_variants([v], _loader(), _settings(throughput_min_time_s=0.1))[0]
    # the accuracy pass (one batch), then the throughput run: a first call, then one timed call that lasts the
    # 0.1 s minimum by itself (blocked_autorange would time one more call to size its blocks)
    assert calls["batch"] == 3 and len(rec.batch_latency.samples_ms) == 1 and rec.batch_latency.runs_per_sample == 1


@pytest.mark.parametrize("max_s", [0.0, -1.0, float("nan"), float("inf")])
def test_a_time_budget_out_of_range_is_refused(max_s):
    with pytest.raises(ValueError, match="'max_s'"):
        BenchmarkSettings(max_s=max_s)


def test_accuracy_passes_of_several_variants_run_side_by_side(monkeypatch):
    """The accuracy passes are not timings: with two cores they run one variant per worker thread, at the same
    time (each sleeps while the other runs), before the latency rounds pin the process; results keep their order."""
    import threading

    from edge_opt.measure import metrics

    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    both = threading.Barrier(2, timeout=5)  # only passes when both variants' passes are running at once

    def variant(name: str, label: int) -> Variant:
        def run(x: torch.Tensor) -> np.ndarray:
            if len(x) > 1 and not seen[name]:
                seen[name].add(threading.get_ident())
                both.wait()
            out = np.zeros((len(x), 10), dtype=np.float32)
            out[:, label] = 1.0
            return out

        return Variant(name, "fp32", "fp32", 4, {}, prepare=lambda x: x, run=run, to_logits=lambda out: out)

    monkeypatch.setattr(metrics, "_usable_cores", lambda: 2)
    recs = measure_variants([variant("a", 0), variant("b", 1)], _loader(), _settings(threads=1))
    assert [r.metrics.accuracy for r in recs] == [1.0, 0.0]  # the loader's labels are all 0
    assert seen["a"] and seen["b"] and seen["a"] != seen["b"]  # two threads, neither of them waiting for the other
    monkeypatch.setattr(metrics, "_usable_cores", lambda: 1)
    assert [r.metrics.accuracy for r in measure_variants([variant("a", 0)], _loader(), _settings())] == [1.0]


def test_a_pass_at_the_evaluation_batch_runs_on_a_fresh_instance_dropped_when_it_ends(monkeypatch):
    """The accuracy and throughput passes each take a fresh instance (``replicas``) that nothing keeps once the
    pass returns (a runtime session keeps the buffers of its largest batch), and freed memory is handed back."""
    import platform
    import weakref

    from edge_opt.measure import host, metrics

    made: list[weakref.ref] = []

    class Run:
        def __call__(self, x: torch.Tensor) -> np.ndarray:
            return np.zeros((len(x), 10), dtype=np.float32)

    def replicate() -> Run:
        r = Run()
        made.append(weakref.ref(r))
        return r

    v = Variant(
        "fake", "fp32", "fp32", 4, {}, prepare=lambda x: x, run=Run(), to_logits=lambda o: o, replicate=replicate
    )
    trims: list[bool] = []
    monkeypatch.setattr(metrics, "release_freed_memory", lambda: trims.append(True) or True)
    out = metrics._on_fresh(v, lambda instance: instance.predict(torch.zeros(2, 1, 2, 2)).shape)
    assert out == (2, 10) and len(made) == 1 and made[0]() is None and trims == [True]
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert host.release_freed_memory() is True  # malloc_trim found and called
