import json

import pandas as pd

from edge_opt.report.files import build_summary, write_outputs, write_plots

SEED_KEYS = [
    "baseline",
    "memory_budgets_mb",
    "active_memory_budget_mb",
    "cpu_frequency_scale",
    "latency_multiplier",
    "study_rows",
    "accepted_rows",
    "rejected_rows",
    "best_accuracy_accepted",
    "lowest_latency_ms_accepted",
    "deployment",
]


def _sweep(accepted):
    return pd.DataFrame(
        {
            "precision": ["fp32", "int8", "fp16"],
            "backend": ["torch"] * 3,
            "pruning_level": [0.0] * 3,
            "accuracy": [0.9, 0.85, 0.88],
            "latency_ms": [2.0, 1.0, 1.5],
            "memory_mb": [4.0, 1.0, 2.0],
            "energy_proxy_j": [0.02, 0.01, 0.015],
            "accepted": accepted,
            "error": [None] * 3,
            "key": ["a", "b", "c"],
            "latency_samples_ms": [[1.0]] * 3,
        }
    )


def test_build_summary_with_accepted_rows():
    s = build_summary({"accuracy": 0.9}, [1.0, 2.0], 2.0, 0.5, 2.0, _sweep([False, True, True]), {"x": 1})
    assert list(s)[: len(SEED_KEYS)] == SEED_KEYS
    assert (s["study_rows"], s["accepted_rows"], s["rejected_rows"]) == (3, 2, 1)
    assert s["best_accuracy_accepted"] == 0.88 and s["lowest_latency_ms_accepted"] == 1.0
    assert s["deployment"] == {"x": 1}


def test_build_summary_without_accepted_rows():
    s = build_summary({}, [1.0], 1.0, 1.0, 1.0, _sweep([False] * 3), {})
    assert s["accepted_rows"] == 0 and s["best_accuracy_accepted"] is None and s["lowest_latency_ms_accepted"] is None


def test_write_outputs_files_format(tmp_path):
    df = _sweep([True, True, False])
    s = build_summary({"accuracy": 0.9}, [1.0], 1.0, 1.0, 1.0, df, {"note": "é"})
    paths = write_outputs(tmp_path / "o", df, df.iloc[:1], df.iloc[1:2], s)
    names = sorted(p.name for p in paths.values())
    assert names == ["pareto_frontier_energy.csv", "pareto_frontier_latency.csv", "summary.json", "sweep_results.csv"]
    text = (tmp_path / "o" / "summary.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "baseline"') and "é" in text
    assert json.loads(text)["study_rows"] == 3
    back = pd.read_csv(tmp_path / "o" / "sweep_results.csv")
    assert "Unnamed: 0" not in back.columns and "latency_samples_ms" not in back.columns and len(back) == 3
    assert not list((tmp_path / "o").glob("*.tmp*"))  # atomic writes leave no temporaries


def test_plots_written(tmp_path):
    df = _sweep([True, True, False])
    paths = write_plots(tmp_path, df, df.iloc[:2], df.iloc[:2], recommended_key="b")
    for p in paths.values():
        assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"
