"""ONNX → PyTorch: the ONNX forms other tools write convert into modules that match ONNX Runtime and prune; an
operator the converter does not handle is named; a study on an ONNX model gets pruned and torch rows."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from conftest import ROOT
from edge_opt.config import config_from_dict
from edge_opt.inputs import convert_onnx
from edge_opt.pipeline import run_study
from edge_opt.variants import load_checkpoint, prune_model, pruning_report, save_checkpoint
from onnx_models import MobileNetV3Style, build, digits

TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build(tmp_path_factory.mktemp("onnx_models"))


@pytest.fixture(scope="module")
def x_val():
    return digits()["x_val"][:64]


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _count(module, cls):
    return sum(isinstance(m, cls) for m in module.modules())


@pytest.mark.parametrize("form", ["constants", "external", "dynamic"])
def test_each_onnx_form_converts_to_layers_that_match_onnx_runtime(models, x_val, form):
    conv = convert_onnx(models[form], x_val)
    assert conv.ok, conv.reason
    ref = _ort(models[form], x_val)
    assert conv.checked_on == 64 and conv.tolerance == pytest.approx(1e-4 * max(1.0, float(np.abs(ref).max())))
    assert conv.max_abs_diff <= conv.tolerance
    module = conv.module
    # the weights became layers Torch-Pruning can prune: 12 convolutions (stem, 2 blocks × 5, head), one Linear
    assert _count(module, nn.Conv2d) == 12 and _count(module, nn.Linear) == 1
    assert _count(module, nn.BatchNorm2d) == (0 if form == "external" else 8)  # the dynamo export folds BN
    original = MobileNetV3Style()
    original.load_state_dict(torch.load(models["state_dict"], weights_only=True))
    with torch.no_grad():  # the same function as the PyTorch original, on another batch size
        x = torch.from_numpy(x_val[:3])
        assert torch.allclose(module(x), original.eval()(x), atol=1e-4)


def test_dynamic_height_and_width_stay_dynamic(models):
    conv = convert_onnx(models["dynamic"], digits()["x_val"][:8])
    x = np.random.default_rng(0).random((2, 1, 12, 10), dtype=np.float32)
    with torch.no_grad():
        got = conv.module(torch.from_numpy(x)).numpy()
    assert np.abs(got - _ort(models["dynamic"], x)).max() <= 1e-4


def test_a_converted_module_prunes_and_keeps_its_output(models, x_val):
    module = convert_onnx(models["constants"], x_val).module
    pruned = prune_model(module, 0.5, torch.from_numpy(x_val[:2]))
    report = pruning_report(module, pruned, 0.5)
    assert report.problem() is None and report.param_fraction < 0.5
    with torch.no_grad():
        assert pruned(torch.from_numpy(x_val[:5])).shape == (5, 10)


def test_a_converted_module_exports_for_executorch(models, x_val):
    module = convert_onnx(models["external"], x_val).module
    x = torch.from_numpy(x_val[:4])
    program = torch.export.export(module, (x,))  # the ExecuTorch backend's first step
    with torch.no_grad():
        assert torch.allclose(program.module()(x), module(x), atol=1e-5)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _save(path, nodes, inits, opset=18, out_shape=("n", 5)):
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _cnn_ops(path):
    """Asymmetric conv padding, padded pooling, Clip by inputs, Flatten, MatMul + bias Add, Softmax."""
    r = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 1, 1, 0], strides=[1, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("Flatten", ["a"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bm"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1),
    ]
    inits = [
        _init("w", r.normal(size=(4, 3, 3, 3)).astype(np.float32)),
        _init("b", r.normal(size=4).astype(np.float32)),
        _init("lo", np.float32(0.0)),
        _init("hi", np.float32(6.0)),
        _init("wm", r.normal(size=(36, 5)).astype(np.float32)),
        _init("bm", r.normal(size=5).astype(np.float32)),
    ]
    return _save(path, nodes, inits)


def _shape_ops(path):
    """A flatten written as Shape → Gather → Concat → Reshape, reductions, squeeze/unsqueeze, slice, transpose,
    concat and elementwise arithmetic with a per-channel weight."""
    r = np.random.default_rng(2)
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["s"]),
        helper.make_node("Sub", ["s", "half"], ["d"]),
        helper.make_node("LeakyRelu", ["d"], ["l"], alpha=0.1),
        helper.make_node("Slice", ["l", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Transpose", ["sl"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Concat", ["t", "l"], ["cat"], axis=3),
        helper.make_node("Shape", ["cat"], ["shape"]),
        helper.make_node("Gather", ["shape", "first"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("ReduceMean", ["cat", "hw"], ["pooled"], keepdims=1),
        helper.make_node("Squeeze", ["pooled", "hw"], ["sq"]),
        helper.make_node("Reshape", ["sq", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["g"], transB=1, alpha=0.5),
        helper.make_node("Sigmoid", ["g"], ["y"]),
    ]
    inits = [
        _init("scale", r.random((1, 3, 1, 1)).astype(np.float32)),
        _init("half", np.float32(0.5)),
        _init("starts", np.array([1], np.int64)),
        _init("ends", np.array([5], np.int64)),
        _init("axes", np.array([2], np.int64)),
        _init("zero", np.array([0], np.int64)),
        _init("first", np.array(0, np.int64)),
        _init("minus1", np.array([-1], np.int64)),
        _init("hw", np.array([2, 3], np.int64)),
        _init("wg", r.normal(size=(5, 3)).astype(np.float32)),
        _init("bg", r.normal(size=5).astype(np.float32)),
    ]
    return _save(path, nodes, inits)


@pytest.mark.parametrize("make", [_cnn_ops, _shape_ops])
def test_common_operators_match_onnx_runtime_at_any_batch_size(tmp_path, make):
    path = make(tmp_path / f"{make.__name__}.onnx")
    rng = np.random.default_rng(0)
    conv = convert_onnx(path, rng.normal(size=(4, 3, 6, 6)).astype(np.float32))
    assert conv.ok, conv.reason
    x = rng.normal(size=(7, 3, 6, 6)).astype(np.float32)  # another batch size than the one it was traced on
    with torch.no_grad():
        got = conv.module(torch.from_numpy(x)).numpy()
    assert np.abs(got - _ort(path, x)).max() <= 1e-4
    assert _count(conv.module, nn.Linear) == 1
    linear = next(m for m in conv.module.modules() if isinstance(m, nn.Linear))
    assert linear.bias is not None  # MatMul + Add became one layer; Gemm's alpha and bias are in it


def test_a_per_channel_weight_outside_a_layer_prunes_with_its_channels_and_reloads(tmp_path):
    r = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "scale"], ["m"]),  # one weight per channel of c1, outside any layer
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1),
    ]
    inits = [
        _init("w1", r.normal(size=(8, 3, 3, 3)).astype(np.float32)),
        _init("scale", r.random((1, 8, 1, 1)).astype(np.float32)),
        _init("w2", r.normal(size=(8, 8, 3, 3)).astype(np.float32)),
        _init("wf", r.normal(size=(5, 8)).astype(np.float32)),
    ]
    path = _save(tmp_path / "scaled.onnx", nodes, inits)
    x = torch.from_numpy(r.random((4, 3, 6, 6)).astype(np.float32))
    module = convert_onnx(path, x.numpy()).module
    pruned = prune_model(module, 0.5, x[:2])
    assert pruned.state_dict()["scale"].shape == (1, 4, 1, 1)
    save_checkpoint(pruned, tmp_path / "pruned.pt")
    reloaded, _ = load_checkpoint(tmp_path / "pruned.pt", copy.deepcopy(module))  # as the study reloads parents
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned(x))


def _lrn_model(path):
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("LRN", ["c"], ["n"], name="norm", size=3),
            helper.make_node("ReduceMean", ["n"], ["y"], name="mean", axes=[2, 3], keepdims=0),
        ],
        "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_an_unsupported_operator_gives_no_module_and_names_the_op(tmp_path, x_val):
    conv = convert_onnx(_lrn_model(tmp_path / "lrn.onnx"), x_val)
    assert conv.module is None and not conv.ok
    assert "LRN" in conv.reason and "unsupported" in conv.reason
    assert conv.to_dict()["converted"] is False and "LRN" in conv.note()


def test_a_sample_that_is_not_an_image_batch_is_refused(models):
    with pytest.raises(ValueError, match="N, C, H, W"):
        convert_onnx(models["constants"], np.zeros((8, 8), np.float32))


def test_study_on_an_onnx_model_prunes_it_on_both_backends(models, tmp_path):
    d = {
        **TINY,
        "model": {"onnx": str(models["constants"])},
        "dataset": "npz",
        "data_path": str(ROOT / "examples" / "bring_your_own" / "digits.npz"),
        "pruning_levels": [0.0, 0.5],
        "precisions": ["fp32", "int8"],
        "backends": ["torch", "onnxruntime"],
        "fine_tune_epochs": 1,
        "output_dir": str(tmp_path / "out"),
    }
    res = run_study(config_from_dict(d))
    df = res.sweep
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    pruned = df[df["pruning_level"] == 0.5]
    assert set(pruned["backend"]) == {"torch", "onnxruntime"} and pruned["accuracy"].notna().all()
    # each row names the graph it was built from: the normalised file for the unpruned ONNX Runtime rows, the
    # conversion for the torch rows and every pruned row
    by_graph = df.groupby(df["graph_transform"].str.split(" ").str[0])["backend"].count().to_dict()
    file_rows = (df["pruning_level"] == 0.0) & (df["backend"] == "onnxruntime")
    assert df.loc[file_rows, "graph_transform"].str.startswith("onnxslim-").all()
    assert df.loc[~file_rows, "graph_transform"].str.startswith("torch.fx (edge_opt.onnx_convert").all(), by_graph
    exporters = {
        (r.pruning_level, r.precision): _variant_meta(res.output_dir, r.metadata_file).get("exporter")
        for r in df[df["backend"] == "onnxruntime"].itertuples()
    }
    assert exporters[(0.0, "fp32")] is None and exporters[(0.0, "int8")] is None  # the user's file: no export ran
    assert str(exporters[(0.5, "fp32")]).startswith("torch.onnx.export")  # the pruned, converted module's export
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["baseline"]["backend"] == "onnxruntime"  # the file itself stays the baseline
    conversion = summary["onnx_conversion"]
    assert conversion["converted"] and conversion["max_abs_diff"] <= conversion["tolerance"]
    assert conversion["checked_on"] == 64 and conversion["converter"].startswith("edge_opt.onnx_convert")
    assert any("converted to PyTorch" in w for w in summary["warnings"])


def _variant_meta(out, metadata_file) -> dict:
    doc = json.loads((out / str(metadata_file)).read_text())
    return doc.get("metadata", doc)
