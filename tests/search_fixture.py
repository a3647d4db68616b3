"""A measured search space replayed without measuring (tests/data/search_space.json, written once by
``benchmarks/search_replay.py measure``): its config, a search over it, and hypervolume scores."""

from __future__ import annotations

import json
import math
import time
from functools import cache
from pathlib import Path
from typing import Any

from edge_opt.config import StudyConfig, config_from_dict
from edge_opt.measure.records import ConfigPoint, VariantResult
from edge_opt.study.search import Judgement, SearchOutcome, hypervolume_2d, run_search, search_space

FIXTURE = Path(__file__).parent / "data" / "search_space.json"

# 19 pruning levels × (fp32, fp16, 4 int8 calibration choices) × 2 backends = 228 config points
SPACE_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "image_size": 8,
    "epochs": 3,
    "fine_tune_epochs": 1,
    "batch_size": 64,
    "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
    "pruning_range": [0.0, 0.9],
    "pruning_step": 0.05,
    "precisions": ["fp32", "fp16", "int8"],
    "backends": ["torch", "onnxruntime"],
    "quantization": {
        "calibration_method": ["minmax", "percentile"],
        "per_channel": [True, False],
        "calibration_batches": 2,
    },
    "benchmark_repeats": 5,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 2.0,
    "memory_budgets_mb": [0.005, 0.01],
    "active_memory_budget_mb": 0.01,
    "max_accuracy_drop": 0.08,
    "learning_rate": 0.01,
    "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
}


@cache
def fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def table() -> dict[ConfigPoint, Judgement]:
    out = {}
    for e in fixture()["points"]:
        p = ConfigPoint(float(e["pruning_level"]), e["precision"], e["backend"], e["calibration"])
        out[p] = Judgement(
            _num(e["accuracy"]),
            _num(e["latency_ms"]),
            _num(e["memory_mb"]),
            bool(e["feasible"]),
            e["reason"],
            tuple(float(c) for c in e["constraints"]),
        )
    return out


def replay_config(folder: Path, strategy: str, seed: int, n_trials: int | None = None, **search: Any) -> StudyConfig:
    base = config_from_dict({**SPACE_CONFIG, "output_dir": str(folder)})
    budget = n_trials or math.ceil(0.25 * search_space(base).size)
    return config_from_dict(
        {
            **SPACE_CONFIG,
            "output_dir": str(folder),
            "search": {"strategy": strategy, "n_trials": budget, "seed": seed, **search},
        }
    )


def replay_search(
    folder: Path,
    strategy: str,
    seed: int,
    n_trials: int | None = None,
    delay_s: float = 0.0,
    log: Path | None = None,
    **search: Any,
) -> SearchOutcome:
    """Run a search whose every evaluation is read back from the fixture (``log``: one line per evaluation)."""
    cfg = replay_config(folder, strategy, seed, n_trials, **search)
    values = table()

    def evaluate(p: ConfigPoint) -> tuple[VariantResult, str]:
        if log is not None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(p.__dict__) + "\n")
        time.sleep(delay_s)
        return VariantResult(point=p, key="replay"), "stored"

    return run_search(cfg, evaluate, lambda r: values[r.point], folder)


def _feasible(judgements: list[Judgement]) -> list[tuple[float, float]]:
    return [(j.accuracy, j.latency_ms) for j in judgements if j.feasible]


def reference() -> tuple[float, float]:
    """Lowest accuracy and highest device latency among the feasible points of the exhaustive grid."""
    pts = _feasible(list(table().values()))
    return min(a for a, _ in pts), max(lat for _, lat in pts)


def score(outcome: SearchOutcome) -> dict[str, Any]:
    """The search's hypervolume as a fraction of the exhaustive frontier's, and the distinct points it took
    to reach 90 % of it."""
    values, ref = table(), reference()
    full = hypervolume_2d(_feasible(list(values.values())), ref)
    seen: list[Judgement] = []
    to_90 = None
    for p in outcome.points:
        seen.append(values[p])
        if to_90 is None and hypervolume_2d(_feasible(seen), ref) >= 0.9 * full:
            to_90 = len(seen)
    got = hypervolume_2d(_feasible(seen), ref)
    return {
        "fraction": got / full,
        "trials_to_90": to_90,
        "distinct": len(outcome.points),
        "trials": len(outcome.trials),
        "space": len(values),
    }
