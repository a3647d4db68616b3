"""Ray executor on a local test cluster (skipped only when Ray cannot be imported)."""

import os
import signal
import threading
import time

import pandas as pd
import pytest

from conftest import ROOT, tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.pipeline import run_study

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edge-opt[ray]')")
pytestmark = pytest.mark.slow

COLS = ["pruning_level", "precision", "backend", "accuracy", "memory_mb"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    from edge_opt.study.executors import PID_DIR_ENV

    pid_dir = tmp_path_factory.mktemp("pids")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {PID_DIR_ENV: str(pid_dir)}},
    )
    yield pid_dir
    ray.shutdown()


def _cfg(out, **over):
    d = tiny_config_dict(out, deployment={"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01}, **over)
    return config_from_dict(d)


def test_killed_worker_is_retried(ray_cluster, tmp_path):
    pid_dir = ray_cluster
    for f in pid_dir.glob("*.pid"):
        f.unlink()
    cfg = _cfg(
        tmp_path / "o",
        executor="ray",
        pruning_levels=[0.0],
        precisions=["fp32", "int8"],
        backends=["torch"],
        benchmark_repeats=20,
        ray={"max_retries": 2},
    )
    killed: dict = {}

    def killer():
        t0 = time.time()
        while time.time() - t0 < 120 and not killed:
            files = list(pid_dir.glob("*.pid"))
            if files:
                pid = int(files[0].read_text() or 0)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.update(file=files[0], pid=pid)
            time.sleep(0.005)

    th = threading.Thread(target=killer)
    th.start()
    res = run_study(cfg)
    th.join()
    assert killed, "no Ray worker was seen"
    assert res.sweep["error"].isna().all(), res.sweep["error"].tolist()
    assert len(res.sweep) == 2
    assert int(killed["file"].read_text()) != killed["pid"]  # the lost point ran again in a new worker


def test_bring_your_own_factory_model_on_ray(ray_cluster, tmp_path):
    """Ray gives the local accuracy columns, on the factory + weights route: the factory's module is imported on
    the workers from the config's folder and each pruned parent is rebuilt through it."""
    from edge_opt.pipeline import load_study_config

    examples = ROOT / "examples" / "bring_your_own"
    over = {
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "benchmark_min_sample_ms": 0.0,
        "benchmark_target_rel_ci": 0.0,
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
        "pruning_levels": [0.0, 0.5],
        "fine_tune_epochs": 1,
    }
    local = run_study(load_study_config(examples / "factory.yaml", {**over, "output_dir": str(tmp_path / "l")}))
    remote = run_study(
        load_study_config(examples / "factory.yaml", {**over, "output_dir": str(tmp_path / "r"), "executor": "ray"})
    )
    order = ["pruning_level", "precision", "backend"]
    pd.testing.assert_frame_equal(
        local.sweep.sort_values(order)[COLS].reset_index(drop=True),
        remote.sweep.sort_values(order)[COLS].reset_index(drop=True),
    )
    assert remote.sweep["error"].isna().all() and remote.sweep["node_id"].notna().all()
    assert set(remote.sweep["model_sha256"]) == set(local.sweep["model_sha256"])
    assert (tmp_path / "r" / "variants").is_dir() and any((tmp_path / "r" / "variants").iterdir())
    # resume works across executors: the local run's store is reused by a ray run of the same folder
    again = run_study(
        load_study_config(examples / "factory.yaml", {**over, "output_dir": str(tmp_path / "l"), "executor": "ray"})
    )
    assert again.reused == len(local.sweep) and again.computed == 0


def test_an_onnx_model_ships_to_workers_with_its_external_data(tmp_path):
    """What a Ray worker receives: the model and its .data file side by side, loadable there (no cluster needed)."""
    import numpy as np
    import onnxruntime as ort

    import onnx_models
    from edge_opt.study.executors import _materialise, shipped_files

    model = onnx_models.build(tmp_path / "models")["external"]
    d = tiny_config_dict(tmp_path / "out")
    d["model"] = {"onnx": str(model), "simplify": False}
    files = shipped_files(config_from_dict(d))
    assert sorted(name for name, _ in files.values())[:2] == ["model.onnx", "model.onnx.data"]
    worker = tmp_path / "worker"
    worker.mkdir()
    moved = _materialise(config_from_dict(d).model_dump(), files, worker)
    sess = ort.InferenceSession(moved["model"]["onnx"], providers=["CPUExecutionProvider"])
    x = onnx_models.digits()["x_val"][:4]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(sess.run(None, {sess.get_inputs()[0].name: x})[0], want)
