"""Repeated-run benchmarks (``edge-opt bench``): one setup trained and timed per seed, confidence intervals over
runs, multi-seed aggregation.
"""

from __future__ import annotations

from .repeated import aggregate_multi_seed, bootstrap_ci, ci95, run_repeated_benchmarks
from .setup import PRECISION_MODES, benchmark_one_setup

__all__ = [
    "PRECISION_MODES",
    "aggregate_multi_seed",
    "benchmark_one_setup",
    "bootstrap_ci",
    "ci95",
    "run_repeated_benchmarks",
]
