"""The host around a measurement: busy-host probe and warnings, threads kept on the pinned cores, peak RSS per
stage, instances bounded by available memory (edge_opt.measure.host)."""

from __future__ import annotations

import importlib.util
import json
import math
import mmap
import os
import threading

import pandas as pd
import pytest
import torch

from conftest import tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.measure import HostLoad, StageMemory, host_loads, measure_variant, pinned
from edge_opt.measure import host as host_mod

TWO_CORES = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


def test_host_load_is_the_slowdown_against_the_quietest_probe_or_the_cpu_share_lost():
    loads = host_loads([10.0, 12.0, 20.0, math.nan], [9.5, 10.0, 11.0, math.nan], [1.0, 1.0, 0.5, 1.0])
    assert loads[0] == pytest.approx(10 / 9.5) and loads[1] == pytest.approx(12 / 9.5)
    assert loads[2] == pytest.approx(20 / 9.5)  # the probe says more than the halved CPU share (2.0)
    assert math.isnan(loads[3])  # no probe (a row measured before probes were kept): no load
    # a core shared with another process: the probe's CPU time shows the quiet figure, the share the time lost
    assert host_loads([10.0], [10.0], [0.25]) == [pytest.approx(4.0)]


def _env(wall: float, cpu: float = 10.0, share: float = 1.0, off: int | None = 0) -> dict:
    return {
        "host_probe_ms": [wall, wall],
        "host_probe_cpu_ms": [cpu, cpu],
        "host_cpu_share": share,
        "off_core_threads": off,
    }


def test_a_busy_host_is_warned_naming_the_rows_and_the_recommendation():
    rows = [("torch fp32 p0", _env(10.0)), ("onnxruntime fp32 p0", _env(10.5)), ("openvino fp32 p0", _env(14.0))]
    load = HostLoad.of(rows, threshold=0.15)
    assert load.reference_ms == 10.0 and load.busy_rows == ["openvino fp32 p0"]
    first, second = load.warnings("onnxruntime fp32 p0")
    assert "host was busy" in first and "openvino fp32 p0" in first and "torch fp32 p0" not in first
    assert "onnxruntime fp32 p0" in second and "quiet host" in second
    assert load.to_dict("onnxruntime fp32 p0")["recommended_on_busy_host"] is True
    quiet = HostLoad.of(rows[:2], threshold=0.15)
    assert quiet.warnings("torch fp32 p0") == [] and quiet.to_dict("torch fp32 p0")["recommended_on_busy_host"] is False
    assert HostLoad.of(rows, threshold=0.5).busy_rows == []  # the threshold is the config's


def test_threads_off_the_pinned_cores_are_warned():
    load = HostLoad.of([("openvino fp32 p0", _env(10.0, off=2)), ("torch fp32 p0", _env(10.0))])
    assert load.off_core == {"openvino fp32 p0": 2}
    assert any("left the pinned cores" in w and "openvino fp32 p0 (2)" in w for w in load.warnings())


def test_watch_host_records_the_probe_around_the_measurement(monkeypatch, trained_small, digits8):
    probes = iter([(20.0, 19.0), (26.0, 19.5)])
    monkeypatch.setattr(host_mod, "probe", lambda: next(probes))
    rec = measure_variant(trained_small, digits8.val_loader, benchmark_repeats=3, benchmark_trials=2)
    env = rec.environment
    assert env["host_probe_ms"] == [20.0, 26.0] and env["host_probe_cpu_ms"] == [19.0, 19.5]
    assert 0 < env["host_cpu_share"] <= 1.05
    ((_, load),) = HostLoad.of([("torch fp32 p0", env)]).loads.items()
    assert load == pytest.approx(max(26.0 / 19.0, 1 / env["host_cpu_share"]))  # the slowest probe, or the share lost


def test_the_real_probe_does_fixed_work_in_one_thread():
    wall, cpu = host_mod.probe()
    assert wall > 0 and cpu > 0 and torch.get_num_threads() >= 1


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin one")
def test_a_thread_moved_off_the_pinned_core_is_counted():
    with pinned(1) as cores:
        assert cores is not None
        assert host_mod._off_core_threads(cores) == 0
        everything = os.sched_getaffinity(0) | set(range(os.cpu_count() or 2))
        os.sched_setaffinity(threading.get_native_id(), everything)  # as a runtime re-pinning its caller would
        assert host_mod._off_core_threads(cores) >= 1


@pytest.mark.skipif(not TWO_CORES, reason="needs two cores to pin one")
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="edge-opt[openvino] not installed")
def test_openvino_runs_on_the_pinned_core(trained_small, digits8, tmp_path):
    """OpenVINO's own CPU pinning (on by default) resets the calling thread's affinity at every call once a request
    has run (to the mask it saw then); the study compiles without it, so every thread stays on the measuring core
    (with it, this row and every row measured after it counted one thread off the pinned core)."""
    from edge_opt.variants import BuildContext, build_variant

    calib = [x for x, _ in list(digits8.train_loader)[:2]]
    ctx = BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path)
    v = build_variant("openvino", trained_small, "fp32", ctx)
    v.predict(calib[0])  # run once unpinned first (with OpenVINO's pinning, every later call then resets it)
    rec = measure_variant(v, digits8.val_loader, benchmark_repeats=3, benchmark_trials=2)
    assert rec.environment["pinned_cores"] and rec.environment["off_core_threads"] == 0


def test_instances_are_bounded_by_the_available_memory(monkeypatch):
    from edge_opt.measure.metrics import instance_count
    from edge_opt.variants.torch_backend import wrap_torch_module

    v = wrap_torch_module(torch.nn.Linear(64, 64), "fp32")
    assert instance_count(v, 8) == 8
    monkeypatch.setattr(host_mod, "available_memory_bytes", lambda: 4 * 3 * v.parameter_bytes)  # a quarter: 3 copies
    assert instance_count(v, 8) == 3
    monkeypatch.setattr(host_mod, "available_memory_bytes", lambda: 16)
    assert instance_count(v, 8) == 1  # at least the one copy, whatever is left
    monkeypatch.setattr(host_mod, "available_memory_bytes", lambda: None)  # unreadable: the fixed budget
    assert instance_count(v, 8) == 8


def test_available_memory_is_read_where_the_host_tells():
    free = host_mod.available_memory_bytes()
    assert free is None or free > 0


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux: per-stage peak RSS")
def test_stage_memory_gives_each_stage_its_own_peak():
    mem = StageMemory()
    # A stage that peaks 200 MB higher and gives it back before it ends. An anonymous mapping, not a bytearray:
    # malloc may serve a bytearray from heap pages an earlier test freed but kept resident (CI's worker did), and
    # then the peak never moves.
    block = mmap.mmap(-1, 200 * 2**20)
    for page in range(0, len(block), mmap.PAGESIZE):
        block[page] = 1  # touch every page
    block.close()
    big, _ = mem.lap()
    after, children = mem.lap()  # the next stage starts from the RSS at the lap, not from the earlier peak
    assert big > after + 150 and after > 0 and children >= 0


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux: per-stage peak RSS")
def test_stage_memory_counts_live_child_processes_not_ended_ones():
    import subprocess
    import sys

    code = (
        "import time; b = bytearray(80 << 20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(30)"
    )
    mem = StageMemory()
    subprocess.run(["true"], check=True)  # an ended fork+exec child would report this process's RSS: not counted
    _, none = mem.lap()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"1"
        _, live = mem.lap()
    finally:
        child.kill()
        child.wait()
    assert none < 50 and live >= 80


def test_a_study_records_peak_rss_by_stage_and_host_load(tmp_path):
    from edge_opt.pipeline import run_study

    cfg = config_from_dict(
        tiny_config_dict(tmp_path / "out", pruning_levels=[0.0], precisions=["fp32"], backends=["torch", "onnxruntime"])
    )
    result = run_study(cfg)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    peaks = summary["peak_rss_mb"]
    assert {"data", "training", "variants", "deployment"} <= set(peaks) and all(v > 0 for v in peaks.values())
    assert set(summary["children_peak_rss_mb"]) == set(peaks)
    assert result.peak_rss_mb["report"] > 0  # the report stage's own peak, after summary.json was written
    host = summary["host_load"]
    assert host["reference_probe_ms"] > 0 and host["max"] >= 1 and host["threshold"] == cfg.host_load_threshold
    frame = pd.read_csv(tmp_path / "out" / "sweep_results.csv")
    assert (frame["host_load"] >= 1).all() and (frame["host_probe_ms"] > 0).all()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no thread affinity on this platform")
def test_a_thread_that_ends_while_pinning_does_not_unpin_the_measurement(monkeypatch):
    """A thread listed in /proc/self/task that has ended by the time it is pinned (a worker pool just joined: the
    accuracy passes run in one right before the rounds) is skipped, not read as the host refusing pinning."""
    from edge_opt.measure import metrics

    gone = 10**9  # no such thread
    monkeypatch.setattr(metrics, "_task_ids", lambda: [int(t) for t in os.listdir("/proc/self/task")] + [gone])
    real_get, real_set = os.sched_getaffinity, os.sched_setaffinity

    def set_(tid, mask):
        if tid == gone:  # listed, read, then ended before it was pinned
            raise ProcessLookupError(3, "No such process")
        real_set(tid, mask)

    monkeypatch.setattr(os, "sched_getaffinity", lambda tid: real_get(0 if tid == gone else tid))
    monkeypatch.setattr(os, "sched_setaffinity", set_)
    with pinned(1) as cores:
        assert cores is not None and len(cores) == 1
