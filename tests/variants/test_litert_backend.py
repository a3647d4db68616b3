"""LiteRT (.tflite): litert-torch conversion, ai-edge-litert's interpreter with XNNPACK, full-integer int8 for
microcontrollers, the file's kernel truth and the MCU numbers (flash, tensor arena) with their budgets."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edge_opt.config import ConfigError, config_from_dict
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
