import math

import pandas as pd
import pytest

from edge_opt.study.pareto import pareto_frontier


def _df(rows):
    return pd.DataFrame(rows, columns=["name", "latency_ms", "accuracy", "accepted"])


def test_dominated_points_dropped():
    df = _df([("a", 1.0, 0.90, True), ("b", 2.0, 0.95, True), ("c", 3.0, 0.94, True), ("d", 2.5, 0.80, True)])
    assert list(pareto_frontier(df, "latency_ms")["name"]) == ["a", "b"]


def test_equal_points_do_not_dominate_each_other():
    df = _df([("a", 1.0, 0.9, True), ("b", 1.0, 0.9, True), ("c", 2.0, 0.9, True)])
    assert sorted(pareto_frontier(df, "latency_ms")["name"]) == ["a", "b"]


def test_nan_never_enters_and_rejected_excluded():
    df = _df([("a", 1.0, 0.9, True), ("n", math.nan, 0.99, True), ("m", 0.5, math.nan, True), ("r", 0.1, 0.99, False)])
    assert list(pareto_frontier(df, "latency_ms")["name"]) == ["a"]


def test_sorted_and_clean_index():
    df = _df([("b", 2.0, 0.95, True), ("a", 1.0, 0.90, True)])
    out = pareto_frontier(df, "latency_ms")
    assert list(out.index) == [0, 1] and list(out["latency_ms"]) == [1.0, 2.0]


def test_use_ci_treats_overlap_as_equal_cost():
    df = pd.DataFrame(
        {
            "name": ["fast", "slow_acc"],
            "latency_ms": [1.0, 1.05],
            "accuracy": [0.90, 0.95],
            "latency_ci95_ms": [0.1, 0.1],
            "accepted": [True, True],
        }
    )
    assert list(pareto_frontier(df, "latency_ms", use_ci=True)["name"]) == ["slow_acc"]
    assert list(pareto_frontier(df, "latency_ms", use_ci=False)["name"]) == ["fast", "slow_acc"]


def test_missing_column():
    with pytest.raises(ValueError, match="energy"):
        pareto_frontier(_df([]), "energy")
