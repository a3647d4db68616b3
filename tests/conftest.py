"""Shared fixtures: tiny, fast configs and data on real code paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def tiny_config_dict(output_dir: Path, **over) -> dict:
    """A study that runs in seconds: 8×8 digits, a narrow CNN, two pruning levels."""
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 1,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
        "pruning_levels": [0.0, 0.5],
        "precisions": ["fp32", "fp16", "int8"],
        "backends": ["torch", "onnxruntime"],
        "quantization": {"calibration_batches": 2},
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "memory_budgets_mb": [0.01, 0.1],
        "active_memory_budget_mb": 0.01,
        "max_accuracy_drop": 0.05,
        "output_dir": str(output_dir),
        "learning_rate": 0.01,
        "deployment": {"min_queries": 20, "min_duration_s": 0.05, "server_search_steps": 3},
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
    }
    d.update(over)
    return d


@pytest.fixture
def tiny_cfg(tmp_path):
    from edge_opt.config import config_from_dict

    return config_from_dict(tiny_config_dict(tmp_path / "out"))


@pytest.fixture(scope="session")
def digits8():
    from edge_opt.inputs.data import load_data

    return load_data("digits", image_size=8, batch_size=64, dataloader_seed=0)


@pytest.fixture(scope="session")
def trained_small(digits8):
    from edge_opt.inputs.models import create_model
    from edge_opt.inputs.training import train_model

    torch.manual_seed(0)
    m = create_model(
        "small_cnn", digits8.input_shape, digits8.num_classes, conv1_channels=8, conv2_channels=16, hidden_units=32
    )
    train_model(m, digits8.train_loader, epochs=3, learning_rate=0.01, seed=0)
    return m


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study run once per test module through the real pipeline: (config, StudyResult)."""
    from edge_opt.config import config_from_dict
    from edge_opt.pipeline import run_study

    out = tmp_path_factory.mktemp("study") / "out"
    cfg = config_from_dict(tiny_config_dict(out))
    return cfg, run_study(cfg)


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _own_host_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own per-host cache (machine roofs), so no test reads another's or the user's."""
    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", str(tmp_path_factory.mktemp("host_cache")))
