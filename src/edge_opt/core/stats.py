"""The latency measurement rules without torch (for the device agent, which runs with a runtime alone):
warm-up calls, calls per sample sized to a minimum sample time, and more samples while the 95 % CI is wider
than a target — the rules ``edge_opt.measure.metrics`` applies in a study."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TimingRules", "ci95_half_width", "split_interrupted", "time_calls"]


@dataclass(frozen=True)
class TimingRules:
    """``repeats`` samples of at least ``trials`` calls each, lasting at least ``min_sample_ms``; up to
    ``max_extra_rounds`` × ``repeats`` more while the CI is wider than ``target_rel_ci`` of the mean; a sample
    longer than ``interrupted_factor`` × the median is set aside and retaken (0: keep every sample)."""

    warmup: int = 5
    trials: int = 10
    repeats: int = 20
    min_sample_ms: float = 5.0
    target_rel_ci: float = 0.02
    max_extra_rounds: int = 4
    interrupted_factor: float = 1.5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimingRules:
        """From a request's ``settings`` (unknown keys and out-of-range values are a ValueError)."""
        bounds = {
            "warmup": (0, 10_000),
            "trials": (1, 1_000_000),
            "repeats": (2, 10_000),
            "min_sample_ms": (0.0, 60_000.0),
            "target_rel_ci": (0.0, 1.0),
            "max_extra_rounds": (0, 100),
            "interrupted_factor": (0.0, 100.0),
        }
        unknown = sorted(set(d) - set(bounds))
        if unknown:
            raise ValueError(f"unknown measurement settings {unknown}; allowed: {sorted(bounds)}")
        out: dict[str, Any] = {}
        for key, value in d.items():
            low, high = bounds[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"setting {key!r} must be a number in [{low}, {high}]; got {value!r}")
            out[key] = type(low)(value)
        if 0 < out.get("interrupted_factor", 0) <= 1:
            raise ValueError(f"setting 'interrupted_factor' must be 0 or above 1; got {out['interrupted_factor']!r}")
        return cls(**out)


def ci95_half_width(samples: list[float]) -> float:
    """t-based 95 % half-width of the mean (NaN below two samples)."""
    n = len(samples)
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * np.std(samples, ddof=1) / math.sqrt(n))


def _sample(run: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t0) / calls * 1e3


def split_interrupted(samples: list[float], factor: float) -> tuple[list[float], list[float]]:
    """(kept, interrupted): a sample longer than ``factor`` × the median was interrupted (``factor`` 0: none)."""
    if factor <= 0 or not samples:
        return list(samples), []
    limit = factor * float(np.median(samples))
    return [x for x in samples if x <= limit], [x for x in samples if x > limit]


def time_calls(run: Callable[[], Any], rules: TimingRules) -> tuple[list[float], int, int, list[float]]:
    """Latency samples (ms per call) of ``run`` under ``rules``: (kept samples, calls per sample, rounds,
    interrupted samples)."""
    for _ in range(rules.warmup):
        run()
    t0 = time.perf_counter()
    run()
    one = max(time.perf_counter() - t0, 1e-7)
    calls = max(rules.trials, int(math.ceil(rules.min_sample_ms / 1e3 / one)))
    budget = rules.repeats * (1 + rules.max_extra_rounds)
    samples: list[float] = []
    goal, rounds = rules.repeats, 0
    while True:
        kept, _ = split_interrupted(samples, rules.interrupted_factor)
        if len(kept) < goal and len(samples) < budget:
            samples.append(_sample(run, calls))
            continue
        rounds += 1
        if not (
            rules.target_rel_ci > 0
            and len(samples) < budget
            and ci95_half_width(kept) > rules.target_rel_ci * float(np.mean(kept))
        ):
            break
        goal = len(kept) + rules.repeats
    kept, interrupted = split_interrupted(samples, rules.interrupted_factor)
    return kept, calls, rounds, interrupted
