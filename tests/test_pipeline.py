"""End-to-end: tiny studies through the real pipeline and CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from edge_opt.config import config_from_dict
from edge_opt.pipeline import run_study
from edge_opt.runtime import sha256_file
from edge_opt.store import StudyStore

from conftest import PYTHON, ROOT, cli_env, tiny_config_dict

pytestmark = pytest.mark.slow

ACC_COLS = ["pruning_level", "precision", "backend", "accuracy"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    cfg = config_from_dict(tiny_config_dict(out))
    return cfg, run_study(cfg)


def test_outputs_written(tiny_study):
    cfg, res = tiny_study
    out = res.output_dir
    for name in ("sweep_results.csv", "pareto_frontier_latency.csv", "pareto_frontier_energy.csv", "summary.json",
                 "accuracy_vs_latency.png", "accuracy_vs_energy.png", "accuracy_vs_memory.png", "reproducibility.json",
                 "layerwise_breakdown.csv", "precision_tradeoffs.csv", "hardware_summary.csv", "roofline.png",
                 "layerwise_macs.png", "layerwise_activation_memory.png", "deployment.csv", "study.sqlite"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "sweep_results.csv")
    assert len(df) == 12 and set(df["backend"]) == {"torch", "onnxruntime"}
    summary = json.loads((out / "summary.json").read_text())
    dep = summary["deployment"]
    for label in ("baseline", "recommended"):
        assert set(dep[label]["scenarios"]) == {"single_stream", "server", "offline", "batch"}
    for k in ("batch_latency_ms", "batch_throughput_sps", "stream_avg_latency_ms", "stream_throughput_sps",
              "hardware_summary"):
        assert k in dep
    assert "roofline_efficiency" in dep["hardware_summary"]
    repro = json.loads((out / "reproducibility.json").read_text())
    assert repro["package_versions"]["torch"].startswith("2.13") and repro["seeds"]["seed"] == cfg.seed


def test_int8_rows_really_quantized(tiny_study):
    _, res = tiny_study
    df = res.sweep
    int8 = df[df["precision"] == "int8"]
    assert int8["error"].isna().all() and (int8["kernel_precision"] == "int8").all()
    for _, r in int8.iterrows():
        fp32 = df[(df["precision"] == "fp32") & (df["backend"] == r["backend"]) &
                  (df["pruning_level"] == r["pruning_level"])].iloc[0]
        assert r["memory_mb"] < 0.5 * fp32["memory_mb"]
        assert abs(r["accuracy"] - fp32["accuracy"]) <= 0.05


def test_artifact_manifest_and_predict(tiny_study):
    _, res = tiny_study
    model_dir = res.output_dir / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["sha256"] == sha256_file(model_dir / "model.onnx")
    code = ("import sys, numpy as np\nfrom edge_opt.runtime import predict\n"
            f"ids = predict({str(model_dir)!r}, np.load({str(model_dir / 'validation_inputs.npy')!r}))\n"
            f"y = np.load({str(model_dir / 'validation_labels.npy')!r})\n"
            "assert 'torch' not in sys.modules, 'predict imported torch'\nprint(float((ids == y).mean()))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert float(out.stdout.strip()) == pytest.approx(manifest["artifact_accuracy"], abs=1e-9)
    cli = subprocess.run([PYTHON, "-m", "edge_opt.cli", "predict", "--model", str(model_dir), "--input",
                          str(model_dir / "validation_inputs.npy")], capture_output=True, text=True, env=cli_env())
    assert cli.returncode == 0
    ids = np.array(cli.stdout.split(), dtype=int)
    y = np.load(model_dir / "validation_labels.npy")
    assert float((ids == y).mean()) == pytest.approx(manifest["artifact_accuracy"])


def test_same_config_twice_identical_accuracy(tiny_study, tmp_path):
    cfg, res = tiny_study
    again = run_study(config_from_dict(tiny_config_dict(tmp_path / "again")))
    a = res.sweep[ACC_COLS].reset_index(drop=True)
    b = again.sweep[ACC_COLS].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_budgets_reject_everything_still_export_best_effort(tmp_path):
    cfg = config_from_dict(tiny_config_dict(tmp_path / "o", active_memory_budget_mb=1e-6, pruning_levels=[0.0],
                                            precisions=["fp32", "int8"], backends=["onnxruntime"]))
    res = run_study(cfg)
    assert not res.recommended and res.sweep["accepted"].sum() == 0
    manifest = json.loads((tmp_path / "o" / "model" / "manifest.json").read_text())
    assert manifest["goals_met"] is False and "budgets" in manifest["failed_goals"][0]
    assert res.summary["recommended"]["goals_met"] is False
    assert res.summary["best_accuracy_accepted"] is None


def _write_cfg(tmp_path, **over):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "out", **over)))
    return p


def _run_cli(cfg_path, *extra):
    return subprocess.Popen([PYTHON, "-m", "edge_opt.cli", "run", "--config", str(cfg_path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)


def _wait_for_points(db, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            break
        if db.exists():
            try:
                with StudyStore(db) as s:
                    if s.count() >= n:
                        return True
            except Exception:  # noqa: BLE001 — the database may be mid-creation
                pass
        time.sleep(0.05)
    return False


def test_sigkill_then_resume_recomputes_nothing_finished(tmp_path):
    cfg_path = _write_cfg(tmp_path)
    db = tmp_path / "out" / "study.sqlite"
    proc = _run_cli(cfg_path)
    assert _wait_for_points(db, 2, proc), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with StudyStore(db) as s:
        finished_before = set(s.keys())
    assert 0 < len(finished_before) < 12
    proc = _run_cli(cfg_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), stderr
    assert f"reused {len(finished_before)} stored points, computed {12 - len(finished_before)}" in stdout
    resumed = pd.read_csv(tmp_path / "out" / "sweep_results.csv")
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    proc = _run_cli(_write_cfg(fresh_dir))
    proc.communicate(timeout=300)
    fresh = pd.read_csv(fresh_dir / "out" / "sweep_results.csv")
    keep = [c for c in resumed.columns if not any(t in c for t in ("latency", "throughput", "energy", "speedup",
                                                                    "slower", "accepted", "rejected", "key"))]
    assert "accuracy" in keep and "memory_mb" in keep
    order = ["pruning_level", "precision", "backend"]
    pd.testing.assert_frame_equal(resumed.sort_values(order)[keep].reset_index(drop=True),
                                  fresh.sort_values(order)[keep].reset_index(drop=True))


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_after_variant_and_writes_outputs(tmp_path, sig, code):
    cfg_path = _write_cfg(tmp_path)
    db = tmp_path / "out" / "study.sqlite"
    proc = _run_cli(cfg_path)
    assert _wait_for_points(db, 1, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Resume with: edge-opt run --config" in stderr
    df = pd.read_csv(tmp_path / "out" / "sweep_results.csv")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["finished_points"] == len(df) >= 1


def test_fresh_starts_over_and_status(tmp_path):
    cfg_path = _write_cfg(tmp_path, pruning_levels=[0.0], precisions=["fp32"], backends=["torch"])
    first = _run_cli(cfg_path)
    first.communicate(timeout=300)
    again = _run_cli(cfg_path, "--fresh")
    out, _ = again.communicate(timeout=300)
    assert "reused 0 stored points, computed 1" in out
    st = subprocess.run([PYTHON, "-m", "edge_opt.cli", "status", str(tmp_path / "out")], capture_output=True,
                        text=True, env=cli_env())
    assert st.returncode == 0 and "1 of 1 points finished" in st.stdout
