import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from edge_opt.bench.repeated import aggregate_multi_seed, bootstrap_ci, ci95, pareto_modes, run_repeated_benchmarks
from edge_opt.bench.setup import benchmark_one_setup
from edge_opt.cli import main

SEED_KEYS = ["precision_mode", "repeats"] + [
    f"{m}_{s}" for m in ("train_time", "latency", "memory", "accuracy", "energy") for s in ("mean", "std", "ci95")
]


@pytest.mark.parametrize("n", [2, 5, 30])
def test_ci95_t_against_scipy(n):
    v = np.random.default_rng(n).normal(size=n)
    expected = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
    assert ci95(v) == pytest.approx(expected)
    assert ci95(v, method="normal") == pytest.approx(1.96 * v.std(ddof=1) / math.sqrt(n))
    assert ci95(v) > ci95(v, method="normal")


def test_ci95_small_n_is_nan_and_bad_method():
    assert math.isnan(ci95([1.0])) and math.isnan(ci95([]))
    with pytest.raises(ValueError, match="'method'"):
        ci95([1.0, 2.0], method="wald")


def test_bootstrap_seeded():
    v = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert bootstrap_ci(v, seed=1) == bootstrap_ci(v, seed=1)
    lo, hi = bootstrap_ci(v, seed=1)
    assert lo < np.mean(v) < hi


def test_pareto_modes_ties():
    rows = [
        {"precision_mode": "a", "latency_mean": 1.0, "accuracy_mean": 0.9},
        {"precision_mode": "b", "latency_mean": 1.0, "accuracy_mean": 0.9},
        {"precision_mode": "c", "latency_mean": 2.0, "accuracy_mean": 0.8},
    ]
    assert pareto_modes(rows) == ["a", "b"]


def test_int8_mode_really_quantized():
    row = benchmark_one_setup([64, 32, 10], ["relu", "relu", "softmax"], "int8", 32, 128, 1, 0)
    assert row["quantized"] and row["inference_dtype"] == "int8" and row["dataset"] == "digits"
    assert row["energy_source"] in ("proxy", "rapl") and row["latency"] > 0


def test_synthetic_when_shapes_do_not_fit():
    row = benchmark_one_setup([16, 3], ["relu", "softmax"], "bfloat16", 16, 64, 1, 0)
    assert row["dataset"] == "synthetic" and row["inference_dtype"] == "bfloat16"


def test_repeated_benchmarks_files_keys_and_determinism(tmp_path):
    args = ([64, 32, 10], ["relu", "relu", "softmax"], ["float32", "int8"], 32, 128, 1, 2, 7)
    a = run_repeated_benchmarks(*args, output_dir=tmp_path / "a")
    b = run_repeated_benchmarks(*args, output_dir=tmp_path / "b")
    assert [list(r)[: len(SEED_KEYS)] for r in a] == [SEED_KEYS] * 2
    assert [r["accuracy_mean"] for r in a] == [r["accuracy_mean"] for r in b]
    for name in (
        "raw_runs.csv",
        "summary_stats.csv",
        "summary_stats.json",
        "accuracy_vs_latency.png",
        "accuracy_vs_energy.png",
        "accuracy_vs_memory.png",
        "pareto_frontier.png",
    ):
        assert (tmp_path / "a" / name).is_file()
    # standard readers take both files as they are
    csv = pd.read_csv(tmp_path / "a" / "summary_stats.csv")
    assert list(csv.columns[: len(SEED_KEYS)]) == SEED_KEYS and csv.columns[0] == "precision_mode"
    assert list(csv["precision_mode"]) == ["float32", "int8"] and set(csv["ci_method"]) == {"t"}
    rows = json.loads((tmp_path / "a" / "summary_stats.json").read_text())
    assert isinstance(rows, list) and [list(r)[: len(SEED_KEYS)] for r in rows] == [SEED_KEYS] * 2
    assert rows[0]["accuracy_mean"] == pytest.approx(csv["accuracy_mean"][0])
    assert "Student t" in json.loads((tmp_path / "a" / "summary_stats_meta.json").read_text())["ci_note"]
    raw = pd.read_csv(tmp_path / "a" / "raw_runs.csv")
    assert len(raw) == 4 and sorted(raw["seed"].unique()) == [7, 8]


def test_bench_cli(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "--repeats",
                "2",
                "--precisions",
                "float32",
                "--samples",
                "64",
                "--epochs",
                "1",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "float32" in capsys.readouterr().out and (tmp_path / "summary_stats.json").exists()
    assert main(["bench", "--precisions", "int4"]) == 2


def test_aggregate_multi_seed():
    def f(acc, lat):
        return pd.DataFrame(
            {
                "pruning_level": [0.0],
                "precision": ["fp32"],
                "backend": ["torch"],
                "accuracy": [acc],
                "latency_ms": [lat],
                "accepted": [True],
            }
        )

    agg = aggregate_multi_seed({1: f(0.9, 1.0), 2: f(0.8, 2.0), 3: f(0.85, 3.0)})
    r = agg.iloc[0]
    assert r["seeds"] == 3 and r["accuracy_mean"] == pytest.approx(0.85)
    assert r["latency_ms_ci95"] == pytest.approx(ci95([1.0, 2.0, 3.0]))
