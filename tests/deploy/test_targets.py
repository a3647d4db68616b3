"""A study measured on the host and on a device agent (started on 127.0.0.1): target rows with raw samples,
CI and fingerprint; the target's numbers choose; wrong token and a killed agent give error rows; a resume
re-measures only the failed points; vendor benchmark logs imported as rows of a named target."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from agent_process import TOKEN, start_agent
from conftest import cli_env, tiny_config_dict
from edge_opt.config import ConfigError, config_from_dict
from edge_opt.device.vendor_logs import VendorLogError, parse_benchmark_model_log, read_vendor_log

DATA = Path(__file__).resolve().parents[1] / "data"


def _cfg(out: Path, url: str, timeout_s: float = 20, **over):
    d = tiny_config_dict(
        out,
        pruning_levels=[0.0],
        precisions=["fp32", "int8"],
        backends=["torch", "onnxruntime"],
        targets=[{"name": "local-agent", "url": url, "token_env": "EDGE_OPT_TEST_TOKEN", "timeout_s": timeout_s}],
        measure_on=["host", "local-agent"],
        **over,
    )
    return config_from_dict(d)


def test_target_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="measure_on"):
        config_from_dict(tiny_config_dict(tmp_path, measure_on=["host", "nowhere"]))
    with pytest.raises(ConfigError, match="recommend_for"):
        config_from_dict(tiny_config_dict(tmp_path, recommend_for="nowhere"))
    with pytest.raises(ConfigError, match="targets"):
        config_from_dict(tiny_config_dict(tmp_path, targets=[{"name": "host", "url": "http://x", "token_env": "T"}]))
    cfg = config_from_dict(
        tiny_config_dict(
            tmp_path, targets=[{"name": "pi", "url": "http://x:1", "token_env": "T"}], measure_on=["host", "pi"]
        )
    )
    assert cfg.recommendation_target == "pi"  # the first target by default


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_study_on_host_and_agent(tmp_path, monkeypatch):
    from edge_opt.pipeline import run_study

    monkeypatch.setenv("EDGE_OPT_TEST_TOKEN", TOKEN)
    proc, url = start_agent(tmp_path / "agent")
    try:
        res = run_study(_cfg(tmp_path / "out", url, recommend_for="local-agent"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    df = res.sweep
    on_agent = df[df["measured_on"] == "local-agent"]
    assert len(on_agent) == 2 and (on_agent["backend"] == "onnxruntime").all()  # torch rows cannot run there
    assert on_agent["error"].isna().all() and (on_agent["latency_ci95_ms"] > 0).all()
    assert (on_agent["latency_samples"] >= 3).all()
    # protocol 3: the study's benchmark_max_s reaches the agent, whose answer says the seconds spent and the flag
    assert (on_agent["latency_measure_s"] > 0).all() and on_agent["latency_budget_hit"].notna().all()
    target = res.summary["targets"]["local-agent"]
    assert target["fingerprint"]["cpu_model"] and target["fingerprint"]["torch_imported"] is False
    assert target["simulation_vs_measured"]["points"] == 2
    assert len(target["skipped"]) == 2 and all("torch" in s["reason"] for s in target["skipped"])
    rec = res.summary["recommended"]
    assert rec["backend"] == "onnxruntime" and res.summary["recommend_for"] == "local-agent"
    assert rec["key"].endswith("@local-agent")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Targets (measured on the device)" in html and 'id="target-local-agent"' in html
    assert "Simulation vs measurement" in html


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wrong_token_then_an_agent_dying_mid_study_then_resume(tmp_path, monkeypatch):
    import os
    import signal

    from edge_opt.pipeline import run_study

    proc, url = start_agent(tmp_path / "agent")
    try:
        monkeypatch.setenv("EDGE_OPT_TEST_TOKEN", "not-the-token-at-all")
        res = run_study(_cfg(tmp_path / "out", url))
        on_agent = res.sweep[res.sweep["measured_on"] == "local-agent"]
        assert len(on_agent) == 2 and on_agent["error"].str.contains("401 unauthorized").all()
        assert any("target local-agent" in w and "401" in w for w in res.warnings)
        monkeypatch.setenv("EDGE_OPT_TEST_TOKEN", TOKEN)
        hung = []

        def stop_the_agent_after_its_first_point(kind, **info):
            if kind == "target_point" and not hung:  # the device hangs mid-study
                os.kill(proc.pid, signal.SIGSTOP)
                hung.append(True)

        res = run_study(_cfg(tmp_path / "out", url, timeout_s=3), on_event=stop_the_agent_after_its_first_point)
        on_agent = res.sweep[res.sweep["measured_on"] == "local-agent"]
        assert hung and on_agent["error"].isna().sum() == 1  # the study completed with the point measured before
        assert on_agent["error"].str.contains("timeout after 3 s").sum() == 1
        assert res.summary["recommended"] is not None
    finally:
        proc.kill()
        proc.wait(timeout=20)
    proc, url2 = start_agent(tmp_path / "agent2")  # the device is back (at another port)
    try:
        res = run_study(_cfg(tmp_path / "out", url2))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    on_agent = res.sweep[res.sweep["measured_on"] == "local-agent"]
    assert on_agent["error"].isna().all() and len(on_agent) == 2
    assert res.summary["targets"]["local-agent"]["measured_now"] == 1  # only the failed point
    assert res.computed == 0  # the host points are reused
    proc_dead_url = url  # the first agent is gone: a refused connection is its own reason
    res = run_study(_cfg(tmp_path / "dead", proc_dead_url))
    assert res.sweep.loc[res.sweep["measured_on"] == "local-agent", "error"].str.contains("connection refused").all()


# --- vendor logs ------------------------------------------------------------------------------------------------


def test_benchmark_app_report_keeps_only_what_the_tool_gives():
    m = read_vendor_log(DATA / "benchmark_app_report.json")
    assert m.source == "openvino benchmark_app" and m.latency_mean_ms == pytest.approx(0.41)
    assert m.latency_median_ms == pytest.approx(0.39) and m.count == 14562
    assert m.latency_ci95_ms != m.latency_ci95_ms  # no spread reported: no CI invented


def test_benchmark_model_log_gives_a_ci_from_its_std_and_count():
    m = read_vendor_log(DATA / "benchmark_model.log")
    assert m.source == "litert benchmark_model" and m.count == 150
    assert m.latency_mean_ms == pytest.approx(1.21447) and m.latency_std_ms == pytest.approx(0.083)
    assert 0 < m.latency_ci95_ms < m.latency_std_ms


def test_a_log_of_neither_tool_is_refused(tmp_path):
    (tmp_path / "x.log").write_text("hello\n")
    with pytest.raises(VendorLogError, match="not a benchmark_model log"):
        read_vendor_log(tmp_path / "x.log")
    with pytest.raises(VendorLogError, match="execution_results"):
        read_vendor_log(_json(tmp_path, {"a": 1}))
    with pytest.raises(VendorLogError, match="statistics line"):
        parse_benchmark_model_log("INFO: STARTING!\n")
    with pytest.raises(VendorLogError, match="positive 'avg latency'"):
        read_vendor_log(_json(tmp_path, {"execution_results": {"avg latency": "-3"}}))
    with pytest.raises(VendorLogError, match="out of range"):
        parse_benchmark_model_log("count=5 first=1 curr=1 min=1 max=1 avg=0 std=0")


def _json(tmp_path: Path, doc) -> Path:
    (tmp_path / "r.json").write_text(json.dumps(doc))
    return tmp_path / "r.json"


# the document import-bench has always stored: the sweep-table columns, then the tool's report
VENDOR_DOC_KEYS = [
    "key",
    "pruning_level",
    "precision",
    "backend",
    "calibration",
    "measured_on",
    "source",
    "error",
    "accuracy",
    "accuracy_source",
    "latency_ms",
    "latency_median_ms",
    "latency_std_ms",
    "latency_ci95_ms",
    "latency_p95_ms",
    "device_latency_ms",
    "latency_samples",
    "throughput_sps",
    "memory_mb",
    "runtime_memory_mb",
    "accepted",
    "rejected_reason",
    "vendor",
]


@pytest.mark.parametrize("log", ["benchmark_app_report.json", "benchmark_model.log"])
def test_vendor_row_is_a_frozen_record_that_round_trips_through_the_store(tmp_path, log):
    from dataclasses import FrozenInstanceError
    from types import SimpleNamespace

    from edge_opt.deploy import vendor_row
    from edge_opt.measure import ConfigPoint
    from edge_opt.study import VENDOR_KIND, StudyStore, VendorRow, stored_vendor_rows
    from edge_opt.study.store import dumps

    point = ConfigPoint(0.0, "fp32", "onnxruntime")
    host = SimpleNamespace(
        key="abc", point=point, metrics=SimpleNamespace(accuracy=0.87, memory_mb=0.0146), runtime_parameter_bytes=14952
    )
    m = read_vendor_log(DATA / log)
    row = vendor_row(None, host, m, "board")
    assert isinstance(row, VendorRow) and row.key == "abc@board" and row.point == point
    assert row.latency_ms == m.latency_mean_ms and row.latency_samples == m.count and row.accuracy == 0.87
    with pytest.raises(FrozenInstanceError):
        row.latency_ms = 1.0  # type: ignore[misc]
    with StudyStore(tmp_path / "s.sqlite") as store:
        store.put(row.key, row.to_dict(), kind=VENDOR_KIND)
        doc = store.get(row.key)
        (back,) = stored_vendor_rows(store)
    assert list(row.to_dict()) == VENDOR_DOC_KEYS and set(doc) == set(VENDOR_DOC_KEYS)  # the same shape on disk
    assert isinstance(back, VendorRow) and back.point == point and back.vendor is not None
    assert dumps(back.to_dict()) == dumps(row.to_dict()) == dumps(doc)  # NaN kept
    assert back.vendor.to_dict().keys() == m.to_dict().keys()
    table = back.row()  # the sweep-table row: the document without the tool's report, in the store's key order
    assert list(table) == sorted(set(VENDOR_DOC_KEYS) - {"vendor"}) and table["measured_on"] == "board"
    assert table["accepted"] is False and table["device_latency_ms"] == table["latency_ms"]
    old = {k: v for k, v in doc.items() if k != "vendor"}  # a store written before the record still reads back
    assert dumps(VendorRow.from_dict(old).row()) == dumps(table) and VendorRow.from_dict(old).vendor is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_import_bench_adds_rows_under_their_target(tmp_path):
    from edge_opt.pipeline import run_study

    cfg = config_from_dict(
        tiny_config_dict(tmp_path / "out", pruning_levels=[0.0], precisions=["fp32"], backends=["onnxruntime"])
    )
    run_study(cfg)
    for target, log in (("board-ov", "benchmark_app_report.json"), ("pixel", "benchmark_model.log")):
        shutil.copy(DATA / log, tmp_path / log)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_opt.cli",
                "import-bench",
                str(tmp_path / log),
                "--study",
                str(tmp_path / "out"),
                "--target",
                target,
                "--point",
                "backend=onnxruntime,precision=fp32,pruning_level=0",
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
        )
        assert r.returncode == 0, r.stderr
    from edge_opt.core.atomic import FolderLock

    db = tmp_path / "out" / "study.sqlite"
    before = db.read_bytes()
    with FolderLock(tmp_path / "out", command="a running study"):  # a study holds the folder: refused, untouched
        busy = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_opt.cli",
                "import-bench",
                str(DATA / log),
                "--study",
                str(tmp_path / "out"),
                "--target",
                "other",
                "--point",
                "backend=onnxruntime,precision=fp32,pruning_level=0",
            ],
            capture_output=True,
            text=True,
            env=cli_env(),
        )
    assert busy.returncode == 2 and "in use" in busy.stderr and db.read_bytes() == before
    df = pd.read_csv(tmp_path / "out" / "sweep_results.csv")
    ov = df[df["measured_on"] == "board-ov"].iloc[0]
    assert ov["source"] == "openvino benchmark_app" and ov["latency_ms"] == pytest.approx(0.41)
    assert pd.isna(ov["latency_ci95_ms"])
    px = df[df["measured_on"] == "pixel"].iloc[0]
    assert px["source"] == "litert benchmark_model" and px["latency_ci95_ms"] > 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "board-ov" in html and "pixel" in html
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_opt.cli",
            "import-bench",
            str(tmp_path / log),
            "--study",
            str(tmp_path / "out"),
            "--target",
            "pixel",
            "--point",
            "backend=onnxruntime,precision=int4",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
