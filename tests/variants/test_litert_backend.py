"""LiteRT (.tflite): litert-torch conversion, ai-edge-litert's interpreter with XNNPACK, full-integer int8 for
microcontrollers, the file's kernel truth and the MCU numbers (flash, tensor arena) with their budgets."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_opt.config import ConfigError, config_from_dict
from edge_opt.device.vendor_logs import VendorLogError, read_vendor_log
from edge_opt.pipeline import run_study
from edge_opt.variants import BuildContext, VariantNotApplicable, build_variant
from edge_opt.variants.tflite_file import TfliteGraph, TfliteOp, TfliteTensor, arena_bytes, read_tflite

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None, reason="edge-opt[litert] not installed"
)


def _ctx(digits8, tmp_path, batch_sizes=(1, 4)) -> BuildContext:
    calib = [x for x, _ in list(digits8.train_loader)[:4]]
    return BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path, batch_sizes=batch_sizes)


def _accuracy(variant, digits8) -> float:
    logits = np.concatenate([variant.predict(x) for x, _ in digits8.val_loader])
    return float((logits.argmax(1) == digits8.val_labels).mean())


def test_fp32_matches_torch_on_padded_and_split_batches(trained_small, digits8, tmp_path):
    v = build_variant("litert", trained_small, "fp32", _ctx(digits8, tmp_path))
    x = next(iter(digits8.val_loader))[0]
    assert v.kernel_precision == "fp32" and v.metadata["static_batches"] == [1, 4]
    with torch.no_grad():
        for batch in (x[:1], x[:3], x[:10]):
            assert np.abs(v.predict(batch) - trained_small(batch).numpy()).max() < 1e-4
    assert [len(t) for _, t, _ in v.prepare(x[:10])] == [4, 4, 4]
    assert v.metadata["xnnpack_delegated_ops"].get("CONV_2D") and not v.metadata["builtin_kernel_ops"]
    replica = v.replicas
    assert replica is not None and np.array_equal(v.to_logits(replica()(v.prepare(x[:5]))), v.predict(x[:5]))
    assert (
        v.metadata["flash_bytes"]
        == v.parameter_bytes
        == (tmp_path / "litert" / v.metadata["tflite_files"]["1"]).stat().st_size
    )


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2_tiny"])
def test_fp32_matches_torch_on_the_residual_and_mobilenet_style_networks(name, digits8, tmp_path):
    """The other two networks of the acceptance (residual adds; depthwise, ReLU6, squeeze-and-excitation)."""
    from edge_opt.inputs import create_model

    torch.manual_seed(0)
    x = next(iter(digits8.val_loader))[0][:4]
    model = create_model(name, tuple(x.shape[1:]), 10).eval()
    v = build_variant("litert", model, "fp32", _ctx(digits8, tmp_path, batch_sizes=(4,)))
    with torch.no_grad():
        assert np.abs(v.predict(x) - model(x).numpy()).max() < 1e-4
    assert v.kernel_precision == "fp32" and v.metadata["flash_bytes"] > 0 and v.metadata["peak_ram_bytes"] > 0


def test_int8_is_full_integer_with_its_quantization_params(trained_small, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path)
    fp32 = build_variant("litert", trained_small, "fp32", ctx)
    int8 = build_variant("litert", trained_small, "int8", ctx)
    meta = int8.metadata
    assert int8.kernel_precision == "int8" and meta["int8_mac_fraction"] == 1.0 and meta["float_layers"] == []
    for t in (*meta["inputs"], *meta["outputs"]):  # int8 in and out, scale and zero point recorded
        assert t["dtype"] == "int8" and t["scale"] > 0 and -128 <= t["zero_point"] <= 127
    assert "FLOAT32" not in meta["tensor_types"]
    assert abs(_accuracy(int8, digits8) - _accuracy(fp32, digits8)) <= 0.02
    assert meta["flash_bytes"] < 0.6 * fp32.metadata["flash_bytes"]  # int8 weights; int32 biases and the schema stay
    assert meta["peak_ram_bytes"] * 4 == fp32.metadata["peak_ram_bytes"]  # the same activations, 1 byte each


def test_fp16_stores_float16_weights_and_says_the_kernels_are_fp32(trained_small, digits8, tmp_path):
    v = build_variant("litert", trained_small, "fp16", _ctx(digits8, tmp_path, batch_sizes=(1,)))
    assert v.kernel_precision == "fp32" and v.metadata["tensor_types"].get("FLOAT16")
    x = next(iter(digits8.val_loader))[0][:8]
    with torch.no_grad():
        assert np.abs(v.predict(x) - trained_small(x).numpy()).max() < 1e-2


class _NoLowering(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(x).flatten(1)  # litert-torch has no lowering for aten.i0


def test_a_model_the_converter_cannot_lower_is_not_applicable(digits8, tmp_path):
    ctx = dataclasses.replace(_ctx(digits8, tmp_path, batch_sizes=(1,)), parent_key="no_lowering")
    with pytest.raises(VariantNotApplicable, match=r"cannot convert this model: .*aten\.i0"):
        build_variant("litert", _NoLowering(), "fp32", ctx)


def _tensor(name, shape, constant=False, dtype="FLOAT32"):
    return TfliteTensor(name, dtype, shape, constant)


def test_arena_is_the_largest_set_of_live_activations():
    # in -> a -> b -> out, a also read by the last op (a skip connection); an activation lives from the op that
    # writes it (a graph input: from the start) to the last op that reads it (a graph output: to the end)
    tensors = (
        _tensor("in", (1, 10)),  # 40 B
        _tensor("a", (1, 100)),  # 400 B
        _tensor("b", (1, 50)),  # 200 B
        _tensor("out", (1, 5)),  # 20 B
        _tensor("w", (1000,), constant=True),  # weights stay in flash
    )
    ops = (
        TfliteOp(0, "FULLY_CONNECTED", (0, 4), (1,)),
        TfliteOp(1, "RELU", (1,), (2,)),
        TfliteOp(2, "ADD", (1, 2), (3,)),
    )
    graph = TfliteGraph(tensors, ops, inputs=(0,), outputs=(3,), file_bytes=0)
    assert arena_bytes(graph) == 400 + 200 + 20  # step 2: a (kept for the skip), b and out; "in" died at step 0
    no_skip = dataclasses.replace(graph, ops=(*ops[:2], TfliteOp(2, "ADD", (2, 2), (3,))))
    assert arena_bytes(no_skip) == 400 + 200  # step 1: a and b
    wide = dataclasses.replace(no_skip, tensors=(*tensors[:3], _tensor("out", (1, 500)), tensors[4]))
    assert arena_bytes(wide) == 200 + 2000  # step 2: a is dead, b and out live


def test_the_file_reader_sees_the_interpreters_tensors(trained_small, digits8, tmp_path):
    v = build_variant("litert", trained_small, "int8", _ctx(digits8, tmp_path, batch_sizes=(1,)))
    graph = read_tflite(tmp_path / "litert" / v.metadata["tflite_files"]["1"])
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp_path / "litert" / v.metadata["tflite_files"]["1"]))
    details = {d["index"]: d for d in it.get_tensor_details()}
    assert len(graph.tensors) == len(details)
    for i, t in enumerate(graph.tensors):
        assert t.dtype.lower() == np.dtype(details[i]["dtype"]).name and list(t.shape) == list(details[i]["shape"])


def test_mcu_budgets_are_positive_kilobytes():
    assert config_from_dict({"ram_budget_kb": 256, "flash_budget_kb": 1024}).ram_budget_kb == 256
    with pytest.raises(ConfigError, match="ram_budget_kb"):
        config_from_dict({"ram_budget_kb": 0})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ram_budget_rejects_the_unpruned_model_and_accepts_a_pruned_int8_one(tmp_path):
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
        "pruning_levels": [0.0, 0.5],
        "precisions": ["fp32", "int8"],
        "backends": ["litert"],
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "memory_budgets_mb": [1.0],
        "active_memory_budget_mb": 1.0,
        "max_accuracy_drop": 1.0,
        "ram_budget_kb": 1.0,
        "output_dir": str(tmp_path / "out"),
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
    }
    res = run_study(config_from_dict(d))
    rows = res.sweep.set_index(["backend", "precision", "pruning_level"])
    assert not res.sweep["error"].notna().any(), res.sweep["error"].tolist()
    unpruned, pruned = rows.loc[("litert", "fp32", 0.0)], rows.loc[("litert", "int8", 0.5)]
    assert unpruned["peak_ram_bytes"] > 1024 >= pruned["peak_ram_bytes"], (unpruned, pruned)
    assert not unpruned["accepted"] and "peak RAM" in unpruned["rejected_reason"]
    assert pruned["accepted"]
    assert rows["flash_bytes"].gt(0).all()
    assert res.recommendation is not None and res.recommendation.precision == "int8"


def _small_study(tmp_path, **over):
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
        "pruning_levels": [0.0],
        "precisions": ["int8"],
        "backends": ["litert"],
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "memory_budgets_mb": [1.0],
        "active_memory_budget_mb": 1.0,
        "max_accuracy_drop": 0.5,
        "output_dir": str(tmp_path / "out"),
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
        "memory_bandwidth_gbps": 10.0,
        "peak_compute_gmacs": 50.0,
        **over,
    }
    return run_study(config_from_dict(d))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_tflite_artifact_runs_with_ai_edge_litert_alone_and_reproduces_its_accuracy(tmp_path):
    res = _small_study(tmp_path)
    assert not res.sweep["error"].notna().any(), res.sweep["error"].tolist()
    model = res.output_dir / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["runtime"] == "litert" and [f["path"] for f in manifest["files"]] == ["model.tflite"]
    assert manifest["runtime_version"] == "2.3.0" and manifest["kernel_precision"] == "int8"
    for t in (*manifest["export"]["tflite_inputs"], *manifest["export"]["tflite_outputs"]):
        assert t["dtype"] == "int8" and t["scale"] > 0
    assert manifest["export"]["flash_bytes"] == (model / "model.tflite").stat().st_size
    script = (  # predict in a process where torch cannot be imported: ai-edge-litert alone runs the file
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from edge_opt.core import predict\n"
        f"ids = predict({str(model)!r}, np.load({str(model / 'validation_inputs.npy')!r}))\n"
        f"print(float((ids == np.load({str(model / 'validation_labels.npy')!r})).mean()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == manifest["artifact_accuracy"], out.stdout
    assert abs(manifest["artifact_accuracy"] - res.sweep["accuracy"].iloc[0]) <= 0.02


def test_the_agent_measures_a_tflite(trained_small, digits8, tmp_path):
    from agent_process import TOKEN, start_agent
    from edge_opt.device.remote import AgentClient

    v = build_variant("litert", trained_small, "int8", _ctx(digits8, tmp_path / "build", batch_sizes=(1,)))
    tflite = tmp_path / "build" / "litert" / v.metadata["tflite_files"]["1"]
    x, y = next(iter(digits8.val_loader))
    np.save(tmp_path / "x.npy", x.numpy()[:20])
    np.save(tmp_path / "y.npy", y.numpy()[:20])
    proc, url = start_agent(tmp_path / "agent")
    try:
        out = AgentClient(url, TOKEN).measure(
            "litert",
            {"model.tflite": tflite},
            "model.tflite",
            (1, *x.shape[1:]),
            {"repeats": 5, "trials": 2, "min_sample_ms": 1.0, "warmup": 2},
            validation=(tmp_path / "x.npy", tmp_path / "y.npy"),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert len(out["samples_ms"]) >= 5 and out["n_eval"] == 20
    assert out["accuracy"] == float((v.predict(x[:20]).argmax(1) == y.numpy()[:20]).mean())
    assert out["fingerprint"]["torch_imported"] is False and out["fingerprint"]["runtimes"]["ai-edge-litert"]


def test_litert_benchmark_output_and_json_are_read_as_vendor_measurements(tmp_path):
    torch.manual_seed(0)  # slow enough for the tool's 0.01 ms resolution
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.Flatten())
    x = torch.randn(2, 3, 64, 64)
    v = build_variant("litert", model.eval(), "fp32", BuildContext([x], x, tmp_path, batch_sizes=(1,)))
    tflite = tmp_path / "litert" / v.metadata["tflite_files"]["1"]
    tool = Path(sys.executable).parent / "litert-benchmark"
    argv = [str(tool), "--model", str(tflite), "--num_runs", "30", "--warmup_runs", "3", "--num_threads", "1"]
    argv += ["--result_json", str(tmp_path / "r.json")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (tmp_path / "bench.log").write_text(out.stdout + out.stderr)
    printed, stored = read_vendor_log(tmp_path / "bench.log"), read_vendor_log(tmp_path / "r.json")
    for m in (printed, stored):
        assert m.source == "litert litert-benchmark" and m.count == 30
        assert m.latency_min_ms <= m.latency_mean_ms <= m.latency_max_ms and m.latency_std_ms >= 0
    assert printed.latency_mean_ms == stored.latency_mean_ms and dict(stored.details)["num_threads"] == "1"


def test_a_litert_benchmark_output_without_its_average_is_refused(tmp_path):
    log = tmp_path / "bench.log"
    log.write_text("=====\n BENCHMARK RESULTS\n=====\nInference (min):  0.02 ms\nInference (max):  0.01 ms\n")
    with pytest.raises(VendorLogError, match="no inference average"):
        read_vendor_log(log)
    log.write_text(log.read_text() + "Inference (avg):  0.02 ms (20 runs)\n")
    with pytest.raises(VendorLogError, match="avg_ms=0.02 is above max_ms=0.01"):
        read_vendor_log(log)
    log.write_text("BENCHMARK RESULTS\nInference (avg):  0.00 ms (20 runs)\n")
    with pytest.raises(VendorLogError, match="rounds to 0.01 ms"):
        read_vendor_log(log)


def test_a_missing_litert_extra_is_one_config_error(tmp_path, capsys, monkeypatch):
    from edge_opt.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a)
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"backends": ["litert"], "output_dir": str(tmp_path / "out")}))
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edge-opt[litert]" in err[0] and not (tmp_path / "out").exists()
