"""The machine's roofs: per precision and cache level, each variant placed under its own, exceeding flagged."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from edge_opt.hardware.analysis import placed_summary, working_set_bytes
from edge_opt.hardware.roofs import cache_levels, nominal_peak_gmacs, place

MACHINE = {
    "peak_compute_gmacs": 50.0,
    "memory_bandwidth_gbps": 10.0,
    "bandwidth_source": "measured",
    "compute_roofs_gmacs": {"fp32": 50.0, "int8": 200.0, "bf16": 120.0, "fp16": None},
    "memory_roofs": [
        {"level": "L1d", "size_bytes": 32 << 10, "gbps": 30.0},
        {"level": "L2", "size_bytes": 2 << 20, "gbps": 80.0},
        {"level": "L3", "size_bytes": 32 << 20, "gbps": 40.0},
        {"level": "DRAM", "size_bytes": None, "gbps": 10.0},
    ],
}


@pytest.mark.parametrize(
    "kernels,roof",
    [("fp32", 50.0), ("int8", 200.0), ("fp32+int8", 200.0), ("bf16", 120.0), ("fp16", 50.0), (None, 50.0)],
)
def test_compute_roof_is_that_of_the_precision_the_kernels_run(kernels, roof):
    assert place(kernels, 1 << 10, MACHINE)["compute_roof_gmacs"] == roof


@pytest.mark.parametrize(
    "working_set,level,gbps",
    [(16 << 10, "L1d", 80.0), (1 << 20, "L2", 80.0), (8 << 20, "L3", 40.0), (1 << 30, "DRAM", 10.0)],
)
def test_memory_roof_is_the_level_the_working_set_fits_in(working_set, level, gbps):
    placed = place("fp32", working_set, MACHINE)
    # data that fits L1 fits L2 too: the faster L2 copy bounds it (a small copy's overhead lowers the L1 figure)
    assert placed["memory_level"] == level and placed["memory_roof_gbps"] == gbps


def test_configured_bandwidth_is_one_roof_for_every_working_set():
    machine = {**MACHINE, "bandwidth_source": "configured"}
    assert place("fp32", 16 << 10, machine)["memory_roof_gbps"] == 10.0


def _layers(macs: float, params: int, activation: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": ["a", "b"],
            "macs": [macs / 2, macs / 2],
            "parameter_bytes": [params // 2, params // 2],
            "activation_bytes": [activation, activation // 4],
        }
    )


def test_a_variant_faster_than_its_roof_is_flagged_with_the_cause():
    layers = _layers(macs=5e9, params=1 << 20, activation=1 << 10)  # compute-bound: 100 ms at 50 GMAC/s
    assert working_set_bytes(layers) == (1 << 20) + (1 << 10)
    fine = placed_summary(layers, latency_ms=150.0, ci95_ms=1.0, kernel_precision="fp32", machine=MACHINE)
    assert not fine["roof_exceeded"] and fine["roofline_efficiency"] <= 1.0 and fine["roof_note"] is None
    fast = placed_summary(layers, latency_ms=50.0, ci95_ms=1.0, kernel_precision="fp32", machine=MACHINE)
    assert fast["roof_exceeded"] and fast["roofline_efficiency"] > 1.0
    assert "fp32 compute roof (50.0 GMAC/s)" in fast["roof_note"] and "Winograd" in fast["roof_note"]
    # the same latency is fine for int8 kernels: their roof is 4× higher
    assert not placed_summary(layers, 50.0, 1.0, "int8", MACHINE)["roof_exceeded"]
    # within its CI: the slow end of the interval reaches the roofline
    assert not placed_summary(layers, 95.0, 10.0, "fp32", MACHINE)["roof_exceeded"]


def test_cache_levels_from_sysfs(tmp_path):
    for i, (kind, level, size) in enumerate(
        [("Data", 1, "48K"), ("Instruction", 1, "32K"), ("Unified", 2, "2048K"), ("Unified", 3, "32M")]
    ):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "type").write_text(kind)
        (d / "level").write_text(str(level))
        (d / "size").write_text(size)
    assert cache_levels(tmp_path) == [("L1d", 48 << 10), ("L2", 2 << 20), ("L3", 32 << 20)]


_LEVELS = [("L1d", 48 << 10), ("L2", 2 << 20), ("L3", 480 << 20)]  # a VM reporting a huge shared L3


def _copy_model(overhead_s: float, l1_gbps: float | None):
    """Seconds of a copy on a machine with a fixed call overhead and one bandwidth per level (None: L1 copies
    cost nothing beyond the call)."""
    taken: list[int] = []

    def seconds(nbytes, threads, min_run_time):
        taken.append(nbytes)
        if nbytes <= 48 << 10:
            return overhead_s + (nbytes / (l1_gbps * 1e9) if l1_gbps else 0.0)
        gbps = 100.0 if nbytes <= 2 << 20 else 30.0 if nbytes <= 32 << 20 else 14.0
        return overhead_s + nbytes / (gbps * 1e9)

    return seconds, taken


def test_the_copy_sweep_takes_the_call_overhead_off_every_point(monkeypatch):
    import edge_opt.hardware.roofs as roofs

    seconds, taken = _copy_model(overhead_s=0.6e-6, l1_gbps=400.0)
    monkeypatch.setattr(roofs, "_copy_seconds", seconds)
    levels = roofs.copy_sweep(1, 0.1, _LEVELS)
    assert [m["level"] for m in levels] == ["L1d", "L2", "L3", "DRAM"]
    gbps = {m["level"]: m["gbps"] for m in levels}
    # a 24 KB copy alone reads 24 KB / 0.66 µs = 37 GB/s, below L2: the overhead taken off, 400
    assert gbps == pytest.approx({"L1d": 400.0, "L2": 100.0, "L3": 30.0, "DRAM": 14.0}, rel=0.01)
    assert gbps["L1d"] > gbps["L2"] > gbps["L3"] > gbps["DRAM"]
    # the sweep: 1 KB of call overhead first, then a quarter and a half of each level (L3 capped), then DRAM
    assert taken == [roofs.COPY_BASE_BYTES, 12 << 10, 24 << 10, 512 << 10, 1 << 20, 16 << 20, 32 << 20, roofs.DRAM_SET]
    assert [[p["working_set_bytes"] for p in m["sweep"]] for m in levels][:3] == [
        [12 << 10, 24 << 10],
        [512 << 10, 1 << 20],
        [16 << 20, 32 << 20],
    ]
    assert all(m["method"] == "copy time less a 1 KB copy's" for m in levels)


def test_a_copy_not_told_from_the_call_overhead_is_a_lower_bound_and_says_so(monkeypatch):
    import edge_opt.hardware.roofs as roofs

    seconds, _ = _copy_model(overhead_s=0.6e-6, l1_gbps=None)  # L1 copies all overhead: nothing to subtract
    monkeypatch.setattr(roofs, "_copy_seconds", seconds)
    l1 = roofs.copy_sweep(1, 0.1, _LEVELS)[0]
    assert "lower bound" in l1["method"] and l1["gbps"] == pytest.approx((24 << 10) / 0.6e-6 / 1e9)
    # placed against the faster L2 roof all the same
    machine = {
        "peak_compute_gmacs": 50.0,
        "memory_bandwidth_gbps": 14.0,
        "memory_roofs": roofs.copy_sweep(1, 0.1, _LEVELS),
    }
    assert roofs.place("fp32", 16 << 10, machine)["memory_roof_gbps"] == pytest.approx(100.0, rel=0.01)


@pytest.mark.parametrize("ort_int8,roof", [(1200.0, 1200.0), (600.0, 800.0), (None, 800.0)])
def test_the_int8_roof_is_the_best_of_torch_and_onnxruntime_int8_kernels(monkeypatch, ort_int8, roof):
    import edge_opt.hardware.roofs as roofs

    def torch_gemm(dtype, threads, min_run_time, shapes=roofs.GEMM_SHAPES):
        return {torch.int8: 800.0, torch.float32: 100.0}.get(dtype, 50.0)

    def ort_gemm(threads, min_run_time, n=2048, op="MatMul"):
        if op == "MatMulInteger" and ort_int8 is None:
            raise ImportError("no onnxruntime")
        return {"MatMul": 90.0, "MatMulInteger": ort_int8}[op]

    monkeypatch.setattr(roofs, "_torch_gemm", torch_gemm)
    monkeypatch.setattr(roofs, "_ort_gemm", ort_gemm)
    monkeypatch.setattr(roofs, "_ort_conv", lambda threads, min_run_time: 70.0)
    monkeypatch.setattr(roofs, "copy_sweep", lambda threads, min_run_time: [])
    measured = roofs.measure_roofs(1)
    assert measured["compute_roofs_gmacs"]["int8"] == roof and measured["compute_roofs_gmacs"]["fp32"] == 100.0
    assert measured["int8_peak_sources"] == {
        "torch._int_mm best of shapes": 800.0,
        "onnxruntime MatMulInteger uint8 × int8 2048³": ort_int8,
    }


def test_nominal_peak_is_reported_with_its_method():
    nominal = nominal_peak_gmacs(1)
    assert "FMA" in nominal["nominal_method"]
    assert math.isnan(nominal["nominal_peak_gmacs"]) or nominal["nominal_peak_gmacs"] > 0


@pytest.mark.slow
def test_a_study_remeasures_once_then_flags_and_warns(tmp_path, monkeypatch):
    import edge_opt.hardware.analysis as analysis
    from edge_opt.config import config_from_dict
    from edge_opt.pipeline import run_study

    calls = []

    def tiny_roofs(out, threads, bw=None, peak=None, remeasure=False):  # a machine far slower than the variants
        calls.append(remeasure)
        return {
            "peak_compute_gmacs": 1e-3,
            "memory_bandwidth_gbps": 1e-3,
            "peak_compute_gmacs_int8": None,
            "bandwidth_source": "measured",
            "peak_source": "measured",
            "threads": threads,
            "remeasured": remeasure,
        }

    monkeypatch.setattr(analysis, "machine_calibration", tiny_roofs)
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 1,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 4, "conv2_channels": 8}},
        "pruning_levels": [0.0],
        "precisions": ["fp32"],
        "backends": ["onnxruntime"],
        "max_accuracy_drop": 0.9,
        "memory_budgets_mb": [1.0],
        "active_memory_budget_mb": 1.0,
        "output_dir": str(tmp_path / "out"),
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
    }
    res = run_study(config_from_dict(d))
    assert calls == [False, True]  # measured once more before anything is flagged
    assert res.summary["hardware"]["recommended"]["roof_exceeded"] is True
    assert any(w.startswith("roofline: ") and "faster than" in w for w in res.warnings)
    points = pd.read_csv(tmp_path / "out" / "roofline_points.csv")
    assert points["roof_exceeded"].all() and points["roof_note"].str.contains("under-measured").all()


def _counting_measure(monkeypatch):
    import edge_opt.hardware.tables as hardware

    count: list[int] = []

    def fake(threads):
        count.append(threads)
        return {
            "peak_compute_gmacs": 10.0 + len(count),
            "memory_bandwidth_gbps": 5.0,
            "hostname": __import__("socket").gethostname(),
            "cpu_model": hardware.cpu_model(),
            "threads": threads,
            "torch": hardware.torch.__version__,
            "calibration_version": hardware.CALIBRATION_VERSION,
        }

    monkeypatch.setattr(hardware, "measure_machine", fake)
    return hardware, count


def test_a_remeasurement_is_kept_for_the_host(tmp_path, monkeypatch):
    hardware, count = _counting_measure(monkeypatch)
    first = hardware.machine_calibration(tmp_path)
    again = hardware.machine_calibration(tmp_path, remeasure=True)
    later = hardware.machine_calibration(tmp_path)  # a re-run: the re-measured roofs, no third measurement
    assert len(count) == 2 and not first["remeasured"] and again["remeasured"] and later["remeasured"]
    assert later["peak_compute_gmacs"] == again["peak_compute_gmacs"] == 12.0


def test_roofs_are_cached_per_host_across_study_folders(tmp_path, monkeypatch):
    hardware, count = _counting_measure(monkeypatch)
    first = hardware.machine_calibration(tmp_path / "a")
    other = hardware.machine_calibration(tmp_path / "b")  # a fresh study folder on the same host: no new sweep
    assert len(count) == 1 and other["peak_compute_gmacs"] == first["peak_compute_gmacs"]
    assert (tmp_path / "b" / hardware.CALIBRATION_FILE).is_file()  # the study still records the roofs it used
    hardware.machine_calibration(tmp_path / "c", threads=2)  # other thread count: its own roofs
    assert count == [1, 2]


def test_an_empty_cache_dir_setting_turns_the_host_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", "")
    hardware, count = _counting_measure(monkeypatch)
    hardware.machine_calibration(tmp_path / "a")
    hardware.machine_calibration(tmp_path / "b")
    assert len(count) == 2


@pytest.mark.parametrize(
    "damage",
    [
        {"memory_roofs": "garbage"},
        {"peak_compute_gmacs": "x"},
        {"memory_bandwidth_gbps": -1.0},
        {"memory_roofs": [{"level": "L1d"}]},
        {"compute_roofs_gmacs": {"int8": float("nan")}},
        {"peak_compute_gmacs_int8": 0},
    ],
)
def test_a_damaged_stored_calibration_is_measured_again_and_replaced(tmp_path, monkeypatch, damage):
    import json

    monkeypatch.setenv("EDGE_OPT_CACHE_DIR", str(tmp_path / "host"))
    hardware, count = _counting_measure(monkeypatch)
    good = hardware.machine_calibration(tmp_path / "a")
    host_file = tmp_path / "host" / "machine_calibration-1t.json"
    for path in (host_file, tmp_path / "a" / hardware.CALIBRATION_FILE):  # same host, same version: only damaged
        path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    again = hardware.machine_calibration(tmp_path / "a")
    assert len(count) == 2 and again["peak_compute_gmacs"] == 12.0 != good["peak_compute_gmacs"]
    assert json.loads(host_file.read_text())["peak_compute_gmacs"] == 12.0  # the host's copy is replaced too


def test_graph_runtimes_fuse_activations_into_the_producing_layer():
    from edge_opt.hardware.analysis import layer_table
    from edge_opt.inputs.models import create_model

    model = create_model("small_cnn", (1, 28, 28), 10, conv1_channels=16, conv2_channels=32, hidden_units=64)
    eager, graph = (layer_table(model, "fp32", 128, (1, 28, 28), b) for b in ("torch", "onnxruntime"))
    relu = graph["layer_type"] == "ReLU"
    assert relu.any() and graph.loc[relu, "fused"].all() and not eager["fused"].any()
    assert (graph.loc[relu, "activation_bytes"] == 0).all() and (eager.loc[relu, "activation_bytes"] > 0).all()
    assert graph["macs"].sum() == eager["macs"].sum()  # fusion changes the bytes, never the work
    pool = graph["layer_type"] == "MaxPool2d"
    assert not graph.loc[pool, "fused"].any()


@pytest.mark.parametrize("conv,roof", [(120.0, 120.0), (70.0, 100.0), (None, 100.0)])
def test_the_fp32_roof_counts_onnxruntime_convolutions(monkeypatch, conv, roof):
    """A CPU whose convolution kernels beat its GEMMs (an AMD EPYC: 53 against 49 GMAC/s) gets the faster roof,
    so a CNN's convolutions are not placed above it; without onnxruntime the GEMMs give it."""
    import edge_opt.hardware.roofs as roofs

    def ort_conv(threads, min_run_time):
        if conv is None:
            raise ImportError("no onnxruntime")
        return conv

    monkeypatch.setattr(roofs, "_torch_gemm", lambda dtype, threads, min_run_time, shapes=None: 100.0)
    monkeypatch.setattr(roofs, "_ort_gemm", lambda threads, min_run_time, n=2048, op="MatMul": 90.0)
    monkeypatch.setattr(roofs, "_ort_conv", ort_conv)
    monkeypatch.setattr(roofs, "copy_sweep", lambda threads, min_run_time: [])
    measured = roofs.measure_roofs(1)
    assert measured["compute_roofs_gmacs"]["fp32"] == roof
    assert measured["fp32_peak_sources"]["onnxruntime Conv 3×3 best of shapes"] == (conv or 0.0)


def test_the_onnxruntime_convolution_probe_reads_a_plausible_rate():
    import edge_opt.hardware.roofs as roofs

    pytest.importorskip("onnxruntime")
    rate = roofs._ort_conv(1, 0.02, shapes=((1, 32, 14),))
    assert 0.1 < rate < 10_000  # GMAC/s of one thread: a real measurement, not a placeholder
