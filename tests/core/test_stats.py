"""The one t-interval and the one set of adaptive sampling rules (``edge_opt.core.stats``), against scipy and
against the two loops they replaced (the agent's and the study's, copied here as they were)."""

import math
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy import stats

from edge_opt.core import (
    SamplingPlan,
    TimingRules,
    ci95_from_std,
    ci95_half_width,
    sample_calls,
    sample_rounds,
    sample_std,
    split_interrupted,
)


@pytest.mark.parametrize("values", [[1.0, 2.0], [1.0, 2.0, 4.0], list(np.linspace(0.5, 3.0, 7)), [5.0] * 4])
def test_ci95_half_width_is_scipys_t_interval(values):
    n, mean = len(values), float(np.mean(values))
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    if sem == 0:
        assert ci95_half_width(values) == 0.0
        return
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    assert ci95_half_width(values) == pytest.approx((high - low) / 2)
    assert ci95_half_width(np.asarray(values)) == ci95_half_width(values)
    assert ci95_from_std(sample_std(values), n) == ci95_half_width(values)


def test_below_two_values_there_is_no_interval():
    assert math.isnan(ci95_half_width([])) and math.isnan(ci95_half_width([3.0]))
    assert math.isnan(sample_std([3.0])) and math.isnan(ci95_from_std(1.0, 1))


def test_the_statistics_need_no_torch():
    code = "import sys, edge_opt.core as c; c.ci95_half_width([1.0, 2.0]); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_split_and_calls_per_sample():
    assert split_interrupted([1.0, 1.1, 5.0, 0.9], 1.5) == ([1.0, 1.1, 0.9], [5.0])
    assert split_interrupted([1.0, 5.0], 0.0) == ([1.0, 5.0], []) and split_interrupted([], 1.5) == ([], [])
    assert sample_calls(0.001, 10, 0.005) == 5  # 5 calls last the 5 ms: no fixed count on top
    assert sample_calls(0.0001, 10, 0.005) == 50
    assert sample_calls(0.017, 10, 0.005) == 1  # a call that lasts the minimum sample is a sample by itself
    assert sample_calls(0.017, 10, 0.0) == 10  # without a minimum sample time: the count given
    assert sample_calls(0.0, 1, 0.0) == 1 and sample_calls(0.0, 1, 1e-3) == 10_000  # floored at 0.1 µs a call


@dataclass
class _Series:
    rng: np.random.Generator
    samples: list[float] = field(default_factory=list)
    rounds: int = 0

    def draw(self) -> float:  # noisy, drifting, now and then interrupted
        x = 1.0 + self.rng.exponential(0.08) + 0.002 * len(self.samples)
        return x * 4 if self.rng.random() < 0.06 else x


def _old_agent_loop(s: _Series, rules: TimingRules) -> int:
    """``core.stats.time_calls``' loop before it called ``sample_rounds`` (the sample source swapped)."""
    budget = rules.repeats * (1 + rules.max_extra_rounds)
    goal, rounds = rules.repeats, 0
    while True:
        kept, _ = split_interrupted(s.samples, rules.interrupted_factor)
        if len(kept) < goal and len(s.samples) < budget:
            s.samples.append(s.draw())
            continue
        rounds += 1
        if not (
            rules.target_rel_ci > 0
            and len(s.samples) < budget
            and ci95_half_width(kept) > rules.target_rel_ci * float(np.mean(kept))
        ):
            break
        goal = len(kept) + rules.repeats
    return rounds


def _old_study_loop(timings, repeats, rounds, target, max_extra, factor) -> list[int]:
    """``measure.metrics._interleaved`` before it called ``sample_rounds``; gives the order of the visits."""
    per_round = 1 if rounds is None else max(1, math.ceil(repeats / max(rounds, 1)))
    budget = repeats * (1 + max_extra)

    def kept(t):
        return split_interrupted(t.samples, factor)[0]

    def short(t, goal):
        return min(goal - len(kept(t)), budget - len(t.samples))

    def too_wide(t):
        k = kept(t)
        return target > 0 and ci95_half_width(k) > target * float(np.mean(k))

    visits, pending, i = [], list(timings), 0
    while pending:
        goal = {id(t): max(repeats, len(kept(t)) + max(per_round, repeats // 4)) for t in pending}
        while any(short(t, goal[id(t)]) > 0 for t in pending):
            for t in pending if i % 2 == 0 else pending[::-1]:
                if short(t, goal[id(t)]) > 0:
                    t.samples += [t.draw() for _ in range(min(per_round, short(t, goal[id(t)])))]
                    t.rounds += 1
                    visits.append(timings.index(t))
            i += 1
        pending = [t for t in timings if len(t.samples) < budget and too_wide(t)]
    return visits


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("target", "factor"), [(0.0, 1.5), (0.02, 1.5), (0.01, 0.0), (0.05, 2.0)])
def test_the_agents_rules_take_the_same_samples_as_its_old_loop(seed, target, factor):
    rules = TimingRules(repeats=8, target_rel_ci=target, max_extra_rounds=3, interrupted_factor=factor)
    old, new = _Series(np.random.default_rng(seed)), _Series(np.random.default_rng(seed))
    old_rounds = _old_agent_loop(old, rules)

    def take(s: _Series, n: int) -> None:
        assert n == 1  # the agent takes one sample at a time
        s.samples.append(s.draw())

    assert sample_rounds([new], take, rules.plan()) == old_rounds
    assert new.samples == old.samples


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("repeats", "rounds", "target", "factor"),
    [(8, None, 0.0, 1.5), (8, 4, 0.02, 1.5), (12, 3, 0.01, 0.0), (20, None, 0.03, 2.0), (5, 0, 0.02, 1.5)],
)
def test_the_studys_rules_take_the_same_samples_in_the_same_order_as_its_old_loop(
    seed, repeats, rounds, target, factor
):
    from edge_opt.measure.metrics import BenchmarkSettings, _sampling_plan

    s = BenchmarkSettings(
        repeats=repeats, rounds=rounds, target_rel_ci=target, max_extra_rounds=3, interrupted_factor=factor
    )
    old = [_Series(np.random.default_rng(100 * seed + k)) for k in range(3)]
    new = [_Series(np.random.default_rng(100 * seed + k)) for k in range(3)]
    old_visits = _old_study_loop(old, repeats, rounds, target, 3, factor)
    new_visits: list[int] = []

    def take(t: _Series, n: int) -> None:
        t.samples += [t.draw() for _ in range(n)]
        t.rounds += 1
        new_visits.append(new.index(t))

    sample_rounds(new, take, _sampling_plan(s))
    assert new_visits == old_visits
    assert [(t.samples, t.rounds) for t in new] == [(t.samples, t.rounds) for t in old]


def test_a_plan_stops_at_its_budget_and_sets_interrupted_samples_aside():
    plan = SamplingPlan(repeats=4, max_extra_rounds=2, target_rel_ci=1e-9, interrupted_factor=1.5, step=4)
    series = _Series(np.random.default_rng(0))
    passes = sample_rounds([series], lambda s, n: s.samples.extend(s.draw() for _ in range(n)), plan)
    assert len(series.samples) == plan.budget == 12 and passes == 3  # the target is never met: the cap ends it
    kept, interrupted = split_interrupted(series.samples, 1.5)
    assert len(kept) + len(interrupted) == 12


@dataclass
class _Clocked:
    """A series whose every sample costs ``cost_s`` (set-aside ones too) on a counter, not a clock."""

    draws: list[float]
    cost_s: float = 1.0
    samples: list[float] = field(default_factory=list)
    spent_s: float = 0.0

    def take(self, n: int) -> None:
        for _ in range(n):
            self.samples.append(self.draws[len(self.samples) % len(self.draws)])
            self.spent_s += self.cost_s


def _clocked_rounds(series: list[_Clocked], plan: SamplingPlan) -> int:
    return sample_rounds(series, lambda s, n: s.take(n), plan, lambda s: s.spent_s)


def test_a_time_budget_stops_the_rounds_and_says_so():
    plan = SamplingPlan(repeats=10, max_extra_rounds=4, target_rel_ci=1e-9, interrupted_factor=1.5, step=10, max_s=6)
    s = _Clocked([1.0, 1.1, 0.9])
    _clocked_rounds([s], plan)
    assert len(s.samples) == 6 and s.spent_s == 6  # at its budget, short of the 10 samples asked
    assert plan.budget_hit(s.samples, s.spent_s)
    no_budget = SamplingPlan(10, 4, 1e-9, 1.5, step=10)
    t = _Clocked([1.0, 1.1, 0.9])
    _clocked_rounds([t], no_budget)
    # at the count budget with the CI still wider than asked: flagged too (a budget, not the rules, ended it)
    assert len(t.samples) == no_budget.budget == 50 and no_budget.budget_hit(t.samples, t.spent_s)
    met = SamplingPlan(3, 4, 0.5, 1.5, step=3)
    u = _Clocked([1.0, 1.0, 1.0])
    _clocked_rounds([u], met)
    assert len(u.samples) == 3 and not met.budget_hit(u.samples, u.spent_s)  # the CI target met: not flagged


def test_a_series_that_meets_its_target_within_the_budget_is_not_flagged():
    plan = SamplingPlan(repeats=4, max_extra_rounds=4, target_rel_ci=0.5, interrupted_factor=1.5, step=4, max_s=100)
    s = _Clocked([1.0, 1.01])
    _clocked_rounds([s], plan)
    assert len(s.samples) == 4 and not plan.budget_hit(s.samples, s.spent_s)


def test_an_always_interrupted_series_stops_at_its_budget():
    # every third sample is interrupted: retaken again and again, the count cap (808) far away; the seconds end it
    plan = SamplingPlan(repeats=8, max_extra_rounds=100, target_rel_ci=1e-9, interrupted_factor=1.5, step=8, max_s=30)
    s = _Clocked([1.0, 1.05, 9.0])
    _clocked_rounds([s], plan)
    kept, interrupted = split_interrupted(s.samples, 1.5)
    assert len(s.samples) == 30 and interrupted and plan.budget_hit(s.samples, s.spent_s)


def test_a_budget_too_short_for_two_samples_still_takes_two():
    plan = SamplingPlan(repeats=10, max_extra_rounds=0, target_rel_ci=0.0, interrupted_factor=1.5, step=10, max_s=0.5)
    s = _Clocked([1.0, 1.2])
    _clocked_rounds([s], plan)
    assert len(s.samples) == 2 and plan.budget_hit(s.samples, s.spent_s)  # a CI needs two


def test_the_budget_is_per_series_in_interleaved_rounds():
    plan = SamplingPlan(repeats=10, max_extra_rounds=0, target_rel_ci=0.0, interrupted_factor=0.0, step=10, max_s=4)
    slow, fast = _Clocked([1.0, 1.1], cost_s=1.0), _Clocked([1.0, 1.1], cost_s=0.1)
    _clocked_rounds([slow, fast], plan)
    assert len(slow.samples) == 4 and len(fast.samples) == 10
    assert plan.budget_hit(slow.samples, slow.spent_s) and not plan.budget_hit(fast.samples, fast.spent_s)
