"""The statistics of timing, without torch (the device agent runs with a runtime alone), written once for every
stage: the t-based 95 % confidence interval of a mean, and the adaptive sampling rules — calls per sample sized to a
minimum sample time, more samples while the 95 % CI is wider than a target (up to a cap), samples interrupted by
another process set aside and retaken. ``time_calls`` applies them to one callable (the agent);
``edge_opt.measure`` applies them to several variants in interleaved rounds (a study)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

__all__ = [
    "SampleSeries",
    "SamplingPlan",
    "TimingRules",
    "ci95_from_std",
    "ci95_half_width",
    "sample_calls",
    "sample_rounds",
    "sample_std",
    "split_interrupted",
    "time_calls",
    "CallTimes",
]


def sample_std(values: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (ddof=1; NaN below two values)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def ci95_from_std(std: float, n: int) -> float:
    """t-based 95 % half-width of the mean of ``n`` values whose sample standard deviation is ``std``:
    t(0.975, n−1)·std/√n (NaN below two values)."""
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def ci95_half_width(values: Sequence[float] | np.ndarray) -> float:
    """t-based 95 % half-width of the mean of ``values`` (NaN below two values)."""
    return ci95_from_std(sample_std(values), len(values))


def ci_too_wide(kept: Sequence[float], target_rel_ci: float) -> bool:
    """Whether the 95 % CI of ``kept`` is wider than ``target_rel_ci`` of their mean (never with a target of 0 or
    below two samples)."""
    return target_rel_ci > 0 and len(kept) > 1 and ci95_half_width(kept) > target_rel_ci * float(np.mean(kept))


def split_interrupted(samples: Sequence[float], factor: float) -> tuple[list[float], list[float]]:
    """(kept, interrupted): a sample longer than ``factor`` × the median was interrupted (``factor`` 0: none)."""
    if factor <= 0 or not samples:
        return list(samples), []
    limit = factor * float(np.median(samples))
    return [x for x in samples if x <= limit], [x for x in samples if x > limit]


def sample_calls(one_call_s: float, minimum: int, min_sample_s: float) -> int:
    """Calls per sample when one call took ``one_call_s``: enough that one sample lasts ``min_sample_s`` (short calls
    are dominated by timer resolution and scheduler noise otherwise), and one when a call already lasts that long —
    the cost of a sample follows the precision it buys, not a fixed count (a 17 ms call timed ten times a sample
    made every sample 170 ms). ``minimum`` is the count without a minimum sample time (``min_sample_s`` ≤ 0)."""
    if min_sample_s <= 0:
        return minimum
    return max(1, int(math.ceil(min_sample_s / max(one_call_s, 1e-7))))


@dataclass(frozen=True)
class SamplingPlan:
    """When to take more latency samples: ``repeats`` kept samples first, taken ``per_round`` at a time; then,
    while the 95 % CI of the kept samples is wider than ``target_rel_ci`` of their mean (0: never), ``step`` more
    (``repeats`` kept in all at least), until ``budget`` = ``repeats`` × (1 + ``max_extra_rounds``) samples were
    taken; a sample longer than ``interrupted_factor`` × the median is set aside and another one taken (0: keep
    every sample). With ``max_s`` a series also stops once it has spent that many seconds (set-aside samples and
    untimed warm-up calls count: a busy host cannot keep a series going) and holds two kept samples (a CI needs
    them); None: no time budget."""

    repeats: int
    max_extra_rounds: int
    target_rel_ci: float
    interrupted_factor: float
    step: int
    per_round: int = 1
    max_s: float | None = None

    @property
    def budget(self) -> int:
        return self.repeats * (1 + self.max_extra_rounds)

    def goal(self, samples: Sequence[float]) -> int:
        """The kept samples wanted by the end of the next pass."""
        return max(self.repeats, len(split_interrupted(samples, self.interrupted_factor)[0]) + self.step)

    def short(self, samples: Sequence[float], goal: int) -> int:
        """Samples still to take toward ``goal`` kept ones (kept ones count), within the budget."""
        kept = split_interrupted(samples, self.interrupted_factor)[0]
        return min(goal - len(kept), self.budget - len(samples))

    def wants_more(self, samples: Sequence[float]) -> bool:
        """Whether another pass is due: the budget is not spent and the CI of the kept samples is too wide."""
        kept = split_interrupted(samples, self.interrupted_factor)[0]
        return len(samples) < self.budget and ci_too_wide(kept, self.target_rel_ci)

    def out_of_time(self, samples: Sequence[float], spent_s: float) -> bool:
        """Whether a series that spent ``spent_s`` seconds is at its time budget (two kept samples at least)."""
        if self.max_s is None or spent_s < self.max_s:
            return False
        return len(split_interrupted(samples, self.interrupted_factor)[0]) >= 2

    def budget_hit(self, samples: Sequence[float], spent_s: float) -> bool:
        """Whether a budget ended the series short of its rules — the time budget, or the count budget (``budget``
        samples) — leaving fewer than ``repeats`` kept samples or a CI still wider than the target."""
        if not self.out_of_time(samples, spent_s) and len(samples) < self.budget:
            return False
        kept = split_interrupted(samples, self.interrupted_factor)[0]
        return len(kept) < self.repeats or ci_too_wide(kept, self.target_rel_ci)


class SampleSeries(Protocol):
    """What ``sample_rounds`` samples: anything that keeps its latency samples (ms) in a list."""

    samples: list[float]


S = TypeVar("S", bound=SampleSeries)


def sample_rounds(
    series: Sequence[S],
    take: Callable[[S, int], None],
    plan: SamplingPlan,
    spent: Callable[[S], float] | None = None,
) -> int:
    """Sample every series under ``plan`` in interleaved rounds: each round visits the series still short of their
    goal (the order reversed every other round) and ``take(s, n)`` appends ``n`` (at most ``plan.per_round``)
    samples to ``s.samples``; after each pass the series whose CI is still too wide get another one. With
    ``plan.max_s``, ``spent(s)`` gives the seconds a series has taken so far, and a series at its time budget
    (``plan.out_of_time``) is visited no more.

    Returns:
        The number of passes (the times the stopping rule was checked).
    """

    def timed_out(s: S) -> bool:
        return spent is not None and plan.out_of_time(s.samples, spent(s))

    def short(s: S, goal: int) -> int:
        return 0 if timed_out(s) else plan.short(s.samples, goal)

    pending, i, passes = list(series), 0, 0
    while pending:
        goal = {id(s): plan.goal(s.samples) for s in pending}
        while any(short(s, goal[id(s)]) > 0 for s in pending):
            for s in pending if i % 2 == 0 else pending[::-1]:
                n = short(s, goal[id(s)])
                if n > 0:
                    take(s, min(plan.per_round, n))
            i += 1
        passes += 1
        pending = [s for s in series if plan.wants_more(s.samples) and not timed_out(s)]
    return passes


@dataclass(frozen=True)
class TimingRules:
    """``repeats`` samples of at least ``trials`` calls each, lasting at least ``min_sample_ms``; up to
    ``max_extra_rounds`` × ``repeats`` more while the CI is wider than ``target_rel_ci`` of the mean; a sample
    longer than ``interrupted_factor`` × the median is set aside and retaken (0: keep every sample); with
    ``max_s``, the samples stop once they have spent that many seconds (``SamplingPlan.max_s``)."""

    warmup: int = 5
    trials: int = 10
    repeats: int = 20
    min_sample_ms: float = 5.0
    target_rel_ci: float = 0.02
    max_extra_rounds: int = 4
    interrupted_factor: float = 1.5
    max_s: float | None = None

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
            "max_s": (0.001, 86_400.0),
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

    def plan(self) -> SamplingPlan:
        """The sampling plan of these rules: one sample at a time, ``repeats`` more per extra pass."""
        return SamplingPlan(
            self.repeats,
            self.max_extra_rounds,
            self.target_rel_ci,
            self.interrupted_factor,
            step=self.repeats,
            max_s=self.max_s,
        )


@dataclass
class _Calls:
    """The samples of one callable and the seconds spent calling it, for ``sample_rounds``."""

    samples: list[float] = field(default_factory=list)
    spent_s: float = 0.0

    def take(self, run: Callable[[], Any], calls: int, n: int) -> None:
        begin = time.perf_counter()
        self.samples.extend(_sample(run, calls) for _ in range(n))
        self.spent_s += time.perf_counter() - begin


def _sample(run: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - t0) / calls * 1e3


@dataclass(frozen=True)
class CallTimes:
    """What ``time_calls`` measured: the kept samples (ms per call), calls per sample, passes of the stopping rule,
    the set-aside (interrupted) samples, the seconds spent calling (warm-up included) and whether a budget
    (``max_s`` or the sample count) ended the samples short of their CI target (``SamplingPlan.budget_hit``)."""

    samples: list[float]
    calls: int
    rounds: int
    interrupted: list[float]
    spent_s: float
    budget_hit: bool


def time_calls(run: Callable[[], Any], rules: TimingRules) -> CallTimes:
    """Latency samples of ``run`` under ``rules`` (``CallTimes``); the warm-up and the sizing call count toward
    ``rules.max_s``."""
    series = _Calls()
    begin = time.perf_counter()
    for _ in range(rules.warmup):
        run()
    t0 = time.perf_counter()
    run()
    calls = sample_calls(time.perf_counter() - t0, rules.trials, rules.min_sample_ms / 1e3)
    series.spent_s = time.perf_counter() - begin
    plan = rules.plan()
    rounds = sample_rounds([series], lambda s, n: s.take(run, calls, n), plan, lambda s: s.spent_s)
    kept, interrupted = split_interrupted(series.samples, rules.interrupted_factor)
    hit = plan.budget_hit(series.samples, series.spent_s)
    return CallTimes(kept, calls, rounds, interrupted, series.spent_s, hit)
