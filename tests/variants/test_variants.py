import numpy as np
import pytest
import torch

from edge_opt.core.registry import UnknownNameError
from edge_opt.measure.metrics import evaluate_accuracy, model_memory_mb
from edge_opt.variants import (
    BuildContext,
    VariantBuildError,
    backend_supports,
    build_variant,
    list_backends,
    list_precisions,
)
from edge_opt.variants.onnx_tools import optimized_graph_ops
from edge_opt.variants.quantize import is_quantized_module


def _ctx(data, tmp_path, **kw):
    calib = data.calibration_batches(2)
    xs, ys = zip(*[(b[0], b[1]) for b in data.val_loader])
    kw.setdefault("validation", (torch.cat(xs), torch.cat(ys)))
    kw.setdefault("max_accuracy_drop", 0.05)
    return BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path, **kw)


@pytest.mark.parametrize("backend", list_backends())
@pytest.mark.parametrize("precision", list_precisions())
def test_every_backend_precision_builds_and_says_what_it_is(backend, precision, trained_small, digits8, tmp_path):
    if not backend_supports(backend, precision):
        with pytest.raises(VariantBuildError, match=f"backend {backend!r} does not support precision {precision!r}"):
            build_variant(backend, trained_small, precision, _ctx(digits8, tmp_path))
        return
    v = build_variant(backend, trained_small, precision, _ctx(digits8, tmp_path))
    assert v.backend == backend and v.precision == precision and v.kernel_precision
    x, _ = next(iter(digits8.val_loader))
    logits = v.predict(x)
    assert logits.shape == (len(x), 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert v.parameter_bytes > 0
    assert evaluate_accuracy(v, digits8.val_loader) > 0.5


def test_torch_int8_is_really_quantized_and_smaller(trained_small, digits8, tmp_path):
    fp32 = build_variant("torch", trained_small, "fp32", _ctx(digits8, tmp_path))
    int8 = build_variant("torch", trained_small, "int8", _ctx(digits8, tmp_path))
    assert any(is_quantized_module(m) for m in int8.module.modules())
    assert {"ConvReLU2d", "LinearReLU"} <= set(int8.metadata["quantized_module_types"])
    assert int8.kernel_precision == "int8"
    assert model_memory_mb(int8.module) < 0.4 * model_memory_mb(fp32.module)
    assert int8.metadata["calibration_batches"] == 2 and int8.metadata["layers"]
    layer = next(iter(int8.metadata["layers"].values()))
    assert "output_scale" in layer and "weight_scales" in layer


def test_the_fx_flow_records_no_stack_traces_and_restores_the_setting(trained_small, digits8):
    import torch.fx.config as fx_config

    from edge_opt.variants.quantize import calibrate_torch_int8, convert_torch_int8

    before = fx_config.do_not_emit_stack_traces
    calibrated = calibrate_torch_int8(trained_small, digits8.calibration_batches(2))
    converted = convert_torch_int8(calibrated, float_layers=["fc"] if hasattr(trained_small, "fc") else ())
    nodes = [*calibrated.prepared.graph.nodes, *converted.graph.nodes]
    assert nodes and all(not n.stack_trace for n in nodes)  # FX would otherwise record one per node
    assert fx_config.do_not_emit_stack_traces == before  # the user's setting is left as it was


def test_torch_fp16_halves_memory(trained_small, digits8, tmp_path):
    fp32 = build_variant("torch", trained_small, "fp32", _ctx(digits8, tmp_path))
    fp16 = build_variant("torch", trained_small, "fp16", _ctx(digits8, tmp_path))
    assert fp16.parameter_bytes * 2 == fp32.parameter_bytes and fp16.kernel_precision == "fp16"


def test_ort_fp32_matches_torch_logits(trained_small, digits8, tmp_path):
    ort = build_variant("onnxruntime", trained_small, "fp32", _ctx(digits8, tmp_path))
    for x, _ in digits8.val_loader:
        with torch.no_grad():
            ref = trained_small(x).numpy()
        np.testing.assert_allclose(ort.predict(x), ref, atol=1e-4, rtol=0)


def test_ort_int8_verified_and_close_to_fp32(trained_small, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path)
    fp32 = build_variant("onnxruntime", trained_small, "fp32", ctx)
    int8 = build_variant("onnxruntime", trained_small, "int8", ctx)
    assert int8.kernel_precision == "int8"
    assert {"QLinearConv", "QuantizeLinear"} & set(int8.metadata["quantized_op_types"])
    assert abs(evaluate_accuracy(int8, digits8.val_loader) - evaluate_accuracy(fp32, digits8.val_loader)) <= 0.02


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_ort_histogram_calibration_prints_nothing_on_the_study_display(
    method, trained_small, digits8, tmp_path, capsys, caplog
):
    import logging

    from edge_opt.config import QuantizationConfig

    ctx = _ctx(digits8, tmp_path, quantization=QuantizationConfig(calibration_method=method))
    with caplog.at_level(logging.DEBUG, logger="edge_opt.variants.precisions"):
        v = build_variant("onnxruntime", trained_small, "int8", ctx)
    assert v.kernel_precision == "int8" and v.metadata["calibration_method"] == method
    assert capsys.readouterr().out == ""  # ORT prints "Collecting tensor data …" for these calibrators
    assert "histogram" in caplog.text  # kept, for whoever turns on debug logging


def test_ort_int8_without_quantized_ops_is_an_error(trained_small, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path, ort_op_types_to_quantize=["LSTM"])  # nothing in the graph matches
    with pytest.raises(VariantBuildError, match="no quantized op"):
        build_variant("onnxruntime", trained_small, "int8", ctx)


def test_ort_fp16_reports_real_kernel_precision(trained_small, digits8, tmp_path):
    v = build_variant("onnxruntime", trained_small, "fp16", _ctx(digits8, tmp_path))
    # The label must be what ORT's optimised graph really holds (on x86 CPUs it folds the fp16
    # weights back to fp32 kernels), read independently here from the optimised graph.
    _, weight_types, runtime_bytes = optimized_graph_ops(v.onnx_path)
    really = "+".join(sorted({{1: "fp32", 10: "fp16"}[t] for t in weight_types.values()}))
    assert v.kernel_precision == really
    assert v.metadata["runtime_parameter_bytes"] == runtime_bytes
    if really == "fp32":
        assert runtime_bytes > v.parameter_bytes  # fp32 weights held at run time, fp16 on disk


def test_ort_calibration_uses_exact_batches(trained_small, digits8, tmp_path):
    v = build_variant("onnxruntime", trained_small, "int8", _ctx(digits8, tmp_path))
    assert v.metadata["calibration_batches"] == 2
    assert v.metadata["calibration_samples"] == sum(len(b) for b in digits8.calibration_batches(2))


def test_unknown_backend_or_precision(trained_small, digits8, tmp_path):
    with pytest.raises(UnknownNameError, match="'backends'"):
        build_variant("tflite", trained_small, "fp32", _ctx(digits8, tmp_path))
    with pytest.raises(UnknownNameError, match="'precisions'"):
        build_variant("torch", trained_small, "int4", _ctx(digits8, tmp_path))


def test_int8_builds_report_float_layers_and_int8_mac_share(tmp_path):
    from edge_opt.inputs.models import create_model

    torch.manual_seed(0)
    m = create_model("mobilenetv2_tiny", (1, 16, 16), 10).eval()
    x = torch.randn(8, 1, 16, 16)
    ctx = BuildContext(calibration=[x], example_input=x[:2], workdir=tmp_path, parent_key="mnv2")
    ort = build_variant("onnxruntime", m, "int8", ctx)
    meta = ort.metadata
    # ORT leaves some convolutions float between quantize/dequantize pairs: the row must say so
    assert 0 < meta["int8_mac_fraction"] < 1 and meta["float_layers"]
    assert {meta["layer_precisions"][n] for n in meta["float_layers"]} <= {"fp32", "fp32 (int8 QDQ emulated)"}
    assert set(meta["layer_precisions"]) == set(meta["layer_macs"]) and "0" in meta["layer_macs"]
    tq = build_variant("torch", m, "int8", ctx).metadata
    assert tq["int8_mac_fraction"] == 1.0 and tq["float_layers"] == []
    assert sum(tq["layer_macs"].values()) == sum(meta["layer_macs"].values())  # one layer naming on both backends
    assert "float_layers" not in build_variant("onnxruntime", m, "fp32", ctx).metadata


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_either_exporter_gives_the_same_logits_and_says_which_made_the_file(exporter, trained_small, digits8, tmp_path):
    ort = build_variant("onnxruntime", trained_small, "fp32", _ctx(digits8, tmp_path, onnx_exporter=exporter))
    assert ort.metadata["exporter"] == f"torch.onnx.export(dynamo={exporter == 'dynamo'})"
    x, _ = next(iter(digits8.val_loader))
    with torch.no_grad():
        np.testing.assert_allclose(ort.predict(x), trained_small(x).numpy(), atol=1e-4, rtol=0)
    q = build_variant("onnxruntime", trained_small, "int8", _ctx(digits8, tmp_path / "q", onnx_exporter=exporter))
    from edge_opt.variants.layers import torch_layers

    # layers keep their module names through either exporter (no folding renames a weight)
    assert set(q.metadata["layer_precisions"]) == {layer.name for layer in torch_layers(trained_small, x[:1])}
