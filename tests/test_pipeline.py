"""End-to-end: tiny studies through the real pipeline and CLI."""

import json
import re
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PYTHON, ROOT, cli_env, tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.core.runtime import sha256_file
from edge_opt.pipeline import run_study
from edge_opt.study.store import StudyStore

pytestmark = pytest.mark.slow

ACC_COLS = ["pruning_level", "precision", "backend", "accuracy"]


def test_outputs_written(tiny_study):
    cfg, res = tiny_study
    out = res.output_dir
    for name in (
        "sweep_results.csv",
        "pareto_frontier_latency.csv",
        "pareto_frontier_energy.csv",
        "summary.json",
        "accuracy_vs_latency.png",
        "accuracy_vs_energy.png",
        "accuracy_vs_memory.png",
        "reproducibility.json",
        "layerwise_breakdown.csv",
        "precision_tradeoffs.csv",
        "hardware_summary.csv",
        "roofline.png",
        "layerwise_macs.png",
        "layerwise_activation_memory.png",
        "deployment.csv",
        "study.sqlite",
    ):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "sweep_results.csv")
    assert len(df) == 12 and set(df["backend"]) == {"torch", "onnxruntime"}
    summary = json.loads((out / "summary.json").read_text())
    dep = summary["deployment"]
    for label in ("baseline", "recommended"):
        assert set(dep[label]["scenarios"]) == {"single_stream", "multi_stream", "server", "offline", "batch"}
    for k in (
        "batch_latency_ms",
        "batch_throughput_sps",
        "stream_avg_latency_ms",
        "stream_throughput_sps",
        "hardware_summary",
    ):
        assert k in dep
    assert "roofline_efficiency" in dep["hardware_summary"]
    assert res.deployment.to_dict().keys() <= dep.keys()  # the record is what summary.json's entry is built from
    assert pd.read_csv(out / "deployment.csv").shape[0] == len(res.deployment.rows())
    repro = json.loads((out / "reproducibility.json").read_text())
    assert repro["package_versions"]["torch"].startswith("2.13") and repro["seeds"]["seed"] == cfg.seed


def test_int8_rows_really_quantized(tiny_study):
    _, res = tiny_study
    df = res.sweep
    int8 = df[df["precision"] == "int8"]
    assert int8["error"].isna().all() and (int8["kernel_precision"] == "int8").all()
    for _, r in int8.iterrows():
        fp32 = df[
            (df["precision"] == "fp32") & (df["backend"] == r["backend"]) & (df["pruning_level"] == r["pruning_level"])
        ].iloc[0]
        assert r["memory_mb"] < 0.5 * fp32["memory_mb"]
        assert abs(r["accuracy"] - fp32["accuracy"]) <= 0.05


def test_artifact_manifest_and_predict(tiny_study):
    _, res = tiny_study
    model_dir = res.output_dir / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["sha256"] == sha256_file(model_dir / "model.onnx")
    code = (
        "import sys, numpy as np\nfrom edge_opt.core.runtime import predict\n"
        f"ids = predict({str(model_dir)!r}, np.load({str(model_dir / 'validation_inputs.npy')!r}))\n"
        f"y = np.load({str(model_dir / 'validation_labels.npy')!r})\n"
        "assert 'torch' not in sys.modules, 'predict imported torch'\nprint(float((ids == y).mean()))"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert float(out.stdout.strip()) == pytest.approx(manifest["artifact_accuracy"], abs=1e-9)
    cli = subprocess.run(
        [
            PYTHON,
            "-m",
            "edge_opt.cli",
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(model_dir / "validation_inputs.npy"),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert cli.returncode == 0
    ids = np.array(cli.stdout.split(), dtype=int)
    y = np.load(model_dir / "validation_labels.npy")
    assert float((ids == y).mean()) == pytest.approx(manifest["artifact_accuracy"])


def test_result_is_typed_records(tiny_study):
    """``goals_met`` is the bool, ``recommendation`` the record of the recommended point, summary.json its dict."""
    from dataclasses import FrozenInstanceError

    from edge_opt.deploy import DeploymentResult, TargetSimulation
    from edge_opt.measure import ConfigPoint
    from edge_opt.report import Recommendation

    _, res = tiny_study
    assert type(res.goals_met) is bool and not hasattr(res, "recommended")
    rec = res.recommendation
    assert isinstance(rec, Recommendation) and isinstance(rec.point, ConfigPoint)
    assert rec.goals_met is res.goals_met and (rec.backend, rec.precision) == (rec.point.backend, rec.point.precision)
    row = res.sweep[res.sweep["key"] == rec.key].iloc[0]
    assert (row["backend"], row["precision"], row["pruning_level"]) == (rec.backend, rec.precision, rec.pruning_level)
    assert rec.accuracy == row["accuracy"] and rec.latency_ms == row["latency_ms"] and rec.memory_mb == row["memory_mb"]
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert rec.to_dict() == summary["recommended"] == res.summary["recommended"]
    assert list(rec.to_dict()) == list(summary["recommended"])  # same keys, same order
    assert res.paths["model"] == res.output_dir / rec.artifact
    assert res.finished_points == summary["finished_points"] and res.total_points == summary["total_points"]
    dep = res.deployment
    assert isinstance(dep, DeploymentResult) and {t.label for t in dep.simulations} == {"baseline", "recommended"}
    sim = dep.get("recommended")
    assert isinstance(sim, TargetSimulation) and sim.backend == rec.backend
    single = sim.scenario("single_stream")
    assert single is not None and single.device["p90_ms"] == pytest.approx(
        single.host["p90_ms"] * sim.device_latency_factor
    )
    assert (
        dep.loadgen_accuracy is not None
        and dep.loadgen_accuracy.accuracy == summary["deployment"]["loadgen_accuracy"]["accuracy"]
    )
    for record, name in ((rec, "accuracy"), (dep, "warnings"), (sim, "backend"), (res, "goals_met")):
        with pytest.raises(FrozenInstanceError):
            setattr(record, name, None)


def test_same_config_twice_identical_accuracy(tiny_study, tmp_path):
    cfg, res = tiny_study
    again = run_study(config_from_dict(tiny_config_dict(tmp_path / "again")))
    a = res.sweep[ACC_COLS].reset_index(drop=True)
    b = again.sweep[ACC_COLS].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_budgets_reject_everything_still_export_best_effort(tmp_path):
    cfg = config_from_dict(
        tiny_config_dict(
            tmp_path / "o",
            active_memory_budget_mb=1e-6,
            pruning_levels=[0.0],
            precisions=["fp32", "int8"],
            backends=["onnxruntime"],
        )
    )
    res = run_study(cfg)
    assert res.goals_met is False and res.sweep["accepted"].sum() == 0
    manifest = json.loads((tmp_path / "o" / "model" / "manifest.json").read_text())
    assert manifest["goals_met"] is False and "budgets" in manifest["failed_goals"][0]
    assert res.summary["recommended"]["goals_met"] is False
    assert res.recommendation is not None and res.recommendation.goals_met is False  # the best effort, typed
    assert res.recommendation.failed_goals == tuple(manifest["failed_goals"])
    assert res.summary["best_accuracy_accepted"] is None


def _write_cfg(tmp_path, **over):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(tiny_config_dict(tmp_path / "out", **over)))
    return p


def _run_cli(cfg_path, *extra):
    return subprocess.Popen(
        [PYTHON, "-m", "edge_opt.cli", "run", "--config", str(cfg_path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )


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
    # groups of 6 points (one pruning level each): results are stored per group, so a kill can fall between two
    cfg_path = _write_cfg(tmp_path, benchmark_group_size=6)
    db = tmp_path / "out" / "study.sqlite"
    proc = _run_cli(cfg_path)
    assert _wait_for_points(db, 1, proc), proc.communicate()
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
    proc = _run_cli(_write_cfg(fresh_dir, benchmark_group_size=6))
    proc.communicate(timeout=300)
    fresh = pd.read_csv(fresh_dir / "out" / "sweep_results.csv")
    keep = [
        c
        for c in resumed.columns
        if not any(
            t in c
            for t in (
                "latency",
                "throughput",
                "energy",
                "speedup",
                "slower",
                "accepted",
                "rejected",
                "key",
                "samples",
                "calls_per",
                "build_s",
                "host_",  # the host's load while each group was measured: of that moment, not of the variant
                "off_core",
            )
        )
    ]
    assert "accuracy" in keep and "memory_mb" in keep
    order = ["pruning_level", "precision", "backend"]
    pd.testing.assert_frame_equal(
        resumed.sort_values(order)[keep].reset_index(drop=True), fresh.sort_values(order)[keep].reset_index(drop=True)
    )


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
    st = subprocess.run(
        [PYTHON, "-m", "edge_opt.cli", "status", str(tmp_path / "out")], capture_output=True, text=True, env=cli_env()
    )
    assert st.returncode == 0 and "1 of 1 points finished" in st.stdout


def test_multi_seed_study(tmp_path, capsys):
    from edge_opt.cli import main

    cfg_path = _write_cfg(
        tmp_path,
        pruning_levels=[0.0],
        precisions=["fp32", "int8"],
        backends=["torch"],
        deployment={"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
    )
    assert main(["run", "--config", str(cfg_path), "--seeds", "1", "2", "--quiet"]) == 0
    out = tmp_path / "out"
    assert (out / "seed_1" / "sweep_results.csv").exists() and (out / "seed_2" / "sweep_results.csv").exists()
    agg = pd.read_csv(out / "summary_multi_seed.csv")
    assert len(agg) == 2 and (agg["seeds"] == 2).all()
    assert {"accuracy_mean", "accuracy_std", "accuracy_ci95", "latency_ms_mean", "latency_ms_ci95"} <= set(agg.columns)
    assert json.loads((out / "summary_multi_seed.json").read_text())["seeds"] == [1, 2]


def test_html_report_self_contained(tiny_study):
    _, res = tiny_study
    html = (res.output_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="recommended"' in html and "data:image/png;base64," in html
    assert html.count('class="variant') == len(res.sweep)
    assert 'id="explore"' in html and "<noscript>" in html  # interactive, with the static page for no JavaScript
    # no tag loads anything from the network (the browser tests check that no request leaves the page)
    assert re.search(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", html) is None
    for section in (
        "Precision trade-offs",
        "Hardware",
        "Deployment scenarios",
        "Warnings",
        "Reproducibility",
        "Rejected variants",
    ):
        assert section in html


def test_report_command_reproduces_csvs(tiny_study):
    from edge_opt.cli import main

    _, res = tiny_study
    out = res.output_dir
    names = [
        "sweep_results.csv",
        "pareto_frontier_latency.csv",
        "pareto_frontier_energy.csv",
        "precision_tradeoffs.csv",
    ]
    before = {n: (out / n).read_bytes() for n in names}
    html_before = (out / "report.html").read_text(encoding="utf-8")
    plots = [
        "accuracy_vs_latency.png",
        "accuracy_vs_energy.png",
        "accuracy_vs_memory.png",
        "roofline.png",
        "layerwise_macs.png",
        "layerwise_activation_memory.png",
    ]
    for p in plots:
        (out / p).unlink()
    assert main(["report", str(out)]) == 0
    for p in plots:
        assert (out / p).is_file(), p  # every plot is redrawn from stored results
    for n in names:
        assert (out / n).read_bytes() == before[n], n
    assert (out / "report.html").read_text(encoding="utf-8") == html_before


def test_report_in_headless_browser(tiny_study, tmp_path):
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'); make test tries to install it")
    _, res = tiny_study
    shot = tmp_path / "shot.png"
    # a screenshot and the DOM after load, with the network disabled by proxy flags
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (res.output_dir / "report.html").as_uri()
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1400,2000", url], capture_output=True, timeout=120
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    # the DOM after load: Bokeh's root element and the details panel; the browser tests in tests/report drive it
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", "--virtual-time-budget=5000", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "data-root-id=" in dom and 'id="details"' in dom and 'id="recommended"' in dom, dom[:500]


def test_mlflow_tracking_sqlite(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="MLflow extra not installed (pip install 'edge-opt[mlflow]')")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = config_from_dict(
        tiny_config_dict(
            tmp_path / "o",
            pruning_levels=[0.0],
            precisions=["fp32", "int8"],
            backends=["torch"],
            tracking={"mlflow": {"uri": uri, "experiment": "t"}},
            deployment={"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
        )
    )
    res = run_study(cfg)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.info.run_id == res.summary["mlflow_run_id"]][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert {c.data.params["precision"] for c in children} == {"fp32", "int8"}
    accs = sorted(c.data.metrics["accuracy"] for c in children)
    assert accs == sorted(res.sweep["accuracy"].tolist())
    assert parent.data.metrics["study_rows"] == 2 and parent.data.params["model.name"] == "small_cnn"
    assert "report.html" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert (tmp_path / "mlartifacts").is_dir() and not (ROOT / "mlruns").exists()  # artifacts beside the database


def test_mlflow_missing_is_config_error(monkeypatch, tmp_path):
    import edge_opt.report.tracking as tr
    from edge_opt.pipeline import registry_errors

    monkeypatch.setattr(tr, "mlflow_available", lambda: False)
    cfg = config_from_dict(tiny_config_dict(tmp_path, tracking={"mlflow": {"uri": "sqlite:///x.db"}}))
    errs = registry_errors(cfg)
    assert len(errs) == 1 and "edge-opt[mlflow]" in errs[0]


def test_default_study_path(tmp_path):
    """The default config's model, data and budgets (fewer levels/epochs and a short simulation for speed)."""
    from edge_opt.pipeline import load_study_config

    cfg = load_study_config(
        ROOT / "configs" / "default.yaml",
        {
            "output_dir": str(tmp_path / "o"),
            "epochs": 2,
            "fine_tune_epochs": 1,
            "pruning_levels": [0.0, 0.5],
            "benchmark_repeats": 5,
            "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
        },
    )
    res = run_study(cfg)
    df = res.sweep
    assert df["accepted"].any() and (~df["accepted"]).any()
    rejected = df[~df["accepted"]]
    assert (rejected["memory_mb"] > cfg.active_memory_budget_mb).all()
    int8 = df[(df["precision"] == "int8") & (df["pruning_level"] == 0.0)]
    fp32 = df[(df["precision"] == "fp32") & (df["pruning_level"] == 0.0)]
    assert (int8["kernel_precision"] == "int8").all()
    assert int8["memory_mb"].max() < 0.3 * fp32["memory_mb"].min()
    assert fp32["memory_mb"].min() > cfg.active_memory_budget_mb > int8["memory_mb"].max()
    meta = json.loads((res.output_dir / int8[int8["backend"] == "torch"].iloc[0]["metadata_file"]).read_text())
    assert {"ConvReLU2d", "LinearReLU"} <= set(meta["metadata"]["quantized_module_types"])
    assert res.summary["recommended"]["goals_met"] is True


def test_compare_two_studies(tiny_study, tmp_path):
    from edge_opt.cli import main

    _, res = tiny_study
    other = run_study(config_from_dict(tiny_config_dict(tmp_path / "b", pruning_levels=[0.0])))
    assert main(["compare", str(res.output_dir), str(other.output_dir), "--output", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 6 and set(table["pruning_level"]) == {0.0}
    assert (table["accuracy_a"] == table["accuracy_b"]).all()  # same seed and data: same models
    assert table["latency_ratio_b_over_a"].notna().all() and "significant" in table.columns
    page = (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")
    static = page[page.index("<noscript>") : page.index("</noscript>")]  # the table without JavaScript
    assert static.count("<tr") == 7
    diff = page[page.index('id="config-diff"') :]
    assert "<dt>pruning_levels</dt>" in diff and "output_dir" not in diff  # what changed in the configs
    assert {"latency_diff_ms", "latency_diff_ci95_ms"} <= set(table.columns)
    assert (table["latency_diff_ms"] == table["latency_ms_b"] - table["latency_ms_a"]).all()
    assert main(["compare", str(tmp_path / "nope"), str(other.output_dir)]) == 2


def test_fewer_threads_measured_slowdown(tmp_path):
    cfg = config_from_dict(
        tiny_config_dict(
            tmp_path / "o",
            pruning_levels=[0.0],
            precisions=["fp32"],
            backends=["torch"],
            threads=2,
            cpu_frequency_scale=0.5,
            deployment={"scenarios": ["single_stream"], "min_queries": 50, "min_duration_s": 0.05},
        )
    )
    res = run_study(cfg)
    m = res.summary["deployment"]["baseline"]["measured_fewer_threads"]
    assert m["threads"] == 1 and m["host_threads"] == 2 and m["measured_slowdown_p90"] > 0
    one = run_study(
        config_from_dict(
            tiny_config_dict(
                tmp_path / "p",
                pruning_levels=[0.0],
                precisions=["fp32"],
                backends=["torch"],
                deployment={"scenarios": ["batch"]},
            )
        )
    )
    assert "skipped" in one.summary["deployment"]["baseline"]["measured_fewer_threads"]
