"""The quantizable layers of ONNX files as other tools write them, and what ORT / OpenVINO run each in."""

from __future__ import annotations

import pytest
import torch
from onnx import helper

from edge_opt.variants import onnx_layers, onnx_node_stats, torch_layers
from edge_opt.variants.layers import LayerInfo, ort_layer_precisions
from onnx_models import MobileNetV3Style, build

FORMS = ["constants", "dynamic", "external"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The trained classifier's files (one build per session) and the PyTorch original."""
    paths = build(tmp_path_factory.getbasetemp() / "onnx_models")
    model = MobileNetV3Style()
    model.load_state_dict(torch.load(paths["state_dict"], weights_only=True))
    return paths, model.eval()


@pytest.mark.parametrize("form", FORMS)
def test_onnx_layers_match_the_pytorch_original_in_every_storage_form(models, form):
    paths, model = models
    want = {layer.name: layer.macs for layer in torch_layers(model, torch.zeros(1, 1, 8, 8))}
    layers = onnx_layers(paths[form], (1, 8, 8))
    # Constant-node weights (constants, dynamic) and external data (external) alike: every Conv/Gemm is found,
    # named by its weight as the PyTorch module, with the same MACs per sample
    assert {layer.name: layer.macs for layer in layers} == want
    assert sum(want.values()) == 129536
    assert all(layer.weight == f"{layer.name}.weight" and layer.node for layer in layers)


def test_a_dynamic_graph_is_counted_at_the_shape_it_is_given(models):
    paths, _ = models
    with pytest.raises(ValueError, match="dynamic input dimensions"):
        onnx_layers(paths["dynamic"])
    small = {layer.name: layer.macs for layer in onnx_layers(paths["dynamic"], (1, 8, 8))}
    big = {layer.name: layer.macs for layer in onnx_layers(paths["dynamic"], (1, 16, 16))}
    after_pooling = {n for n in small if n == "fc" or ".se." in n}  # 1×1 spatially at any input size
    assert all(big[n] == (1 if n in after_pooling else 4) * small[n] for n in small) and len(after_pooling) == 5
    with pytest.raises(ValueError, match="fixed shape"):
        onnx_node_stats(paths["constants"], (1, 1, 16, 16))  # its H and W are fixed at 8


def test_ort_precisions_read_initializer_and_constant_node_weights():
    a = LayerInfo("a", "Conv", 10, 1, "n_a", "a.weight")
    b = LayerInfo("b", "Conv", 30, 1, "n_b", "b_w")
    c = LayerInfo("c", "Gemm", 60, 1, "n_c", "c.weight")
    nodes = [
        helper.make_node("QLinearConv", ["x", "s", "z", "a.weight_quantized"], ["y1"]),  # initializer weight
        helper.make_node("QLinearConv", ["y1", "s", "z", "b_w_QuantizeLinear_Output"], ["y2"]),  # Constant weight
        helper.make_node("Gemm", ["y2", "c.weight_DequantizeLinear_Output"], ["y3"]),
    ]
    assert ort_layer_precisions(nodes, [a, b, c]) == {"a": "int8", "b": "int8", "c": "fp32 (int8 QDQ emulated)"}


def test_openvino_finds_every_layer_in_its_runtime_graph(models):
    pytest.importorskip("openvino")
    from edge_opt.variants.openvino_backend import compile_ir, openvino_layer_precisions

    paths, _ = models
    for form in ("constants", "external"):
        layers = onnx_layers(paths[form], (1, 8, 8))
        precisions = openvino_layer_precisions(compile_ir(paths[form], "f32", 1), layers, paths[form])
        assert precisions == {layer.name: "fp32" for layer in layers}  # none "unknown": each node was found
