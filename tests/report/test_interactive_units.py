"""The interactive page's Pareto axes show small values in units that fit them (no browser needed)."""

from __future__ import annotations

import pandas as pd

from edge_opt.report.interactive import sweep_page


def _frame(latency_ms: list[float], energy_j: list[float], memory_mb: list[float]) -> pd.DataFrame:
    n = len(latency_ms)
    return pd.DataFrame(
        {
            "backend": ["onnxruntime"] * n,
            "precision": ["int8"] * n,
            "pruning_level": [0.0, 0.5, 0.25][:n],
            "accuracy": [0.9, 0.8, 0.85][:n],
            "latency_ms": latency_ms,
            "energy_proxy_j": energy_j,
            "memory_mb": memory_mb,
            "accepted": [True] * n,
            "key": [f"k{i}" for i in range(n)],
        }
    )


def _labels(script: str) -> set[str]:
    text = script.replace("\\\\u00b5", "µ").replace("\\u00b5", "µ")  # µ as Bokeh escapes it (JSON in a JS string)
    return {
        u
        for u in ("latency (µs)", "latency (ms)", "energy (mJ)", "energy (J)", "memory (kB)", "memory (MB)")
        if f'"{u}"' in text
    }


def test_sub_millisecond_latency_in_microseconds_energy_in_millijoules_memory_in_kilobytes():
    page = sweep_page(_frame([0.05, 0.2, 0.9], [0.002, 0.004, 0.01], [0.2, 0.4, 0.8]), "accuracy", "k0", {})
    assert page is not None
    assert _labels(page.script) == {"latency (µs)", "energy (mJ)", "memory (kB)"}


def test_larger_values_keep_milliseconds_joules_megabytes():
    page = sweep_page(_frame([0.5, 2.0, 3.5], [1.5, 2.0, 3.0], [0.5, 1.2, 3.3]), "accuracy", None, {})
    assert page is not None
    assert _labels(page.script) == {"latency (ms)", "energy (J)", "memory (MB)"}
