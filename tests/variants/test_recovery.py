"""int8 accuracy recovery (``quantization.recovery``): the config points it makes, and cross-layer equalization
against the invariant of the data-free quantization paper (float outputs unchanged, per-channel ranges equalized),
and the failing per-tensor case it recovers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_opt.config import ConfigError, QuantizationConfig, config_from_dict
from edge_opt.inputs.models import create_model
from edge_opt.measure import ConfigPoint
from edge_opt.study.runner import point_key, sweep_points
from edge_opt.variants import BuildContext, build_variant, equalize


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with BatchNorm statistics and affine parameters as training leaves them (not the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) * 1.8 + 0.2)
            m.bias.data.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model.eval()


def _example_spread():
    """The example's ``spread_depthwise`` (examples/recovery/spread.py): the function-preserving rescaling that spreads
    the depthwise channels' ranges, as the study's factory builds the failing case."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("recovery_spread", ROOT / "examples" / "recovery" / "spread.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.spread_depthwise


spread_depthwise = _example_spread()


def _tiny(relu6: bool) -> nn.Module:
    torch.manual_seed(0)
    return _randomized(create_model("mobilenetv2_tiny", (1, 8, 8), 10, width=8, se=False, relu6=relu6))


# --- config points ------------------------------------------------------------------------


def test_recovery_is_a_sweep_dimension_of_the_quantized_precisions(tmp_path):
    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "precisions": ["fp32", "int8"],
            "backends": ["torch"],
            "pruning_levels": [0.0],
            "quantization": {"recovery": ["none", "cle", "qat"], "qat_epochs": 2},
        }
    )
    points = sweep_points(cfg)
    assert [p.calibration for p in points if p.precision == "int8"] == [
        "minmax/per-channel/8",
        "minmax/per-channel/8/cle",
        "minmax/per-channel/8/qat2",
    ]
    assert [p.calibration for p in points if p.precision == "fp32"] == [""]
    assert len({point_key(cfg, p) for p in points}) == 4


def test_no_recovery_keeps_earlier_keys_and_a_single_recovery_labels_its_rows(tmp_path):
    base = {"output_dir": str(tmp_path), "precisions": ["int8"], "backends": ["torch"], "pruning_levels": [0.0]}
    plain = config_from_dict(base)
    none = config_from_dict({**base, "quantization": {"recovery": "none"}})
    cle = config_from_dict({**base, "quantization": {"recovery": "cle"}})
    assert sweep_points(plain) == sweep_points(none) == [ConfigPoint(0.0, "int8", "torch", "")]
    assert point_key(plain, sweep_points(plain)[0]) == point_key(none, sweep_points(none)[0])
    (p,) = sweep_points(cle)
    assert p.calibration == "minmax/per-channel/8/cle"
    assert point_key(cle, p) != point_key(plain, sweep_points(plain)[0])


@pytest.mark.parametrize("value", ["adaround", ["none", "bogus"]])
def test_unknown_recovery_names_key_allowed_and_given(value):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"quantization": {"recovery": value}})
    (msg,) = info.value.errors
    assert "'quantization.recovery'" in msg and "bias_correction" in msg and "cle" in msg and "qat" in msg
    assert ("adaround" if value == "adaround" else "bogus") in msg


def test_qat_epochs_must_be_positive():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"quantization": {"qat_epochs": 0}})
    assert "'quantization.qat_epochs'" in info.value.errors[0]


# --- cross-layer equalization --------------------------------------------------------------


def test_cle_keeps_the_float_function_and_equalizes_each_pairs_ranges():
    model = _tiny(relu6=False)
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    eq = equalize(model, absorb_bias=False)
    with torch.no_grad():
        assert torch.allclose(model(x), eq.model(x), atol=1e-5, rtol=1e-4)
    pairs = eq.metadata["cle"]["pairs_equalized"]
    assert len(pairs) == 10 and eq.metadata["cle"]["batchnorms_folded"] == 17  # expand→dw, dw→project per block
    for pair in pairs:
        first, second = (eq.model.get_submodule(n) for n in pair.split(" → "))
        r1 = first.weight.abs().amax(dim=(1, 2, 3))
        w2 = second.weight.abs()
        r2 = w2.amax(dim=(0, 2, 3)) if second.groups == 1 else w2.amax(dim=(1, 2, 3))
        assert torch.allclose(r1, r2, rtol=1e-3), pair  # the paper's optimum: equal ranges on both sides


def test_cle_undoes_a_function_preserving_spread_and_bias_absorption_stays_close():
    model = _tiny(relu6=False)
    spread = spread_depthwise(model, orders=4.0)
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    eq = equalize(spread)
    with torch.no_grad():
        assert torch.allclose(model(x), spread(x), atol=1e-4)
        assert torch.allclose(spread(x), eq.model(x), atol=1e-3)
    dw = eq.model.get_submodule("4.block.3").weight.detach().abs().amax(dim=(1, 2, 3))
    assert float(dw.max() / dw.min()) < 100  # 4 orders of magnitude before


def test_cle_leaves_relu6_pairs_as_they_are_and_says_why():
    model = _tiny(relu6=True)
    eq = equalize(model)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), eq.model(x), atol=1e-5)
    assert eq.metadata["cle"]["pairs_equalized"] == []
    skipped = eq.metadata["cle"]["pairs_skipped"]
    assert len(skipped) == 10 and all("ReLU6" in s and "not positively homogeneous" in s for s in skipped)


def test_cle_reaches_every_backend_through_build_variant(tmp_path):
    model = spread_depthwise(_tiny(relu6=False))
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    q = QuantizationConfig(per_channel=False, recovery="cle", calibration_batches=2)
    ctx = BuildContext(calibration=[x[:8], x[8:]], example_input=x[:2], workdir=tmp_path, quantization=q)
    for backend in ("torch", "onnxruntime"):
        v = build_variant(backend, model, "int8", ctx)
        assert v.metadata["recovery"] == "cle" and v.metadata["cle"]["pairs_equalized"], backend
    assert (tmp_path / "model-cle_fp32.onnx").is_file()  # the equalized parent's own export
    plain = build_variant("torch", model, "int8", BuildContext(calibration=[x], example_input=x[:2], workdir=tmp_path))
    assert plain.metadata["recovery"] == "none" and "cle" not in plain.metadata


# --- the failing case: per-tensor int8 on spread depthwise ranges ---------------------------


@pytest.fixture(scope="module")
def trained_relu_mobilenet():
    from edge_opt.inputs.data import load_data
    from edge_opt.inputs.training import train_model

    data = load_data("digits", image_size=16, batch_size=64, dataloader_seed=0)
    torch.manual_seed(0)
    model = create_model("mobilenetv2_tiny", data.input_shape, data.num_classes, width=16, se=False, relu6=False)
    train_model(model, data.train_loader, epochs=3, learning_rate=0.01, seed=0)
    return model, data


def test_cle_recovers_per_tensor_int8_on_spread_depthwise_ranges(trained_relu_mobilenet, tmp_path):
    model, data = trained_relu_mobilenet
    spread = spread_depthwise(model, orders=3.0)
    xs, ys = zip(*[(b[0], b[1]) for b in data.val_loader])
    x, y = torch.cat(xs), torch.cat(ys).numpy()

    def accuracy(recovery: str, precision: str = "int8") -> tuple[float, float]:
        q = QuantizationConfig(per_channel=False, recovery=recovery, calibration_batches=4)
        ctx = BuildContext(
            calibration=data.calibration_batches(4), example_input=x[:2], workdir=tmp_path, quantization=q
        )
        v = build_variant("torch", spread, precision, ctx)
        return float((np.argmax(v.predict(x), 1) == y).mean()), v.metadata.get("int8_mac_fraction", 0.0)

    fp32 = accuracy("none", "fp32")[0]
    plain, plain_macs = accuracy("none")
    cle, cle_macs = accuracy("cle")
    assert fp32 - plain >= 0.03  # the failure: per-tensor int8 loses far more than 3 points
    assert fp32 - cle <= 0.01 and cle_macs >= 0.95 and plain_macs >= 0.95


# --- bias correction (NNCF) ----------------------------------------------------------------


def _ctx(tmp_path, x, **q) -> BuildContext:
    quantization = QuantizationConfig(calibration_batches=2, **q)
    return BuildContext(calibration=[x[:8], x[8:]], example_input=x[:2], workdir=tmp_path, quantization=quantization)


def test_bias_correction_is_nncfs_full_algorithm_on_onnxruntime_and_openvino(tmp_path):
    pytest.importorskip("nncf")
    model = equalize(spread_depthwise(_tiny(relu6=False))).model
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    none = build_variant("onnxruntime", model, "int8", _ctx(tmp_path, x, per_channel=False))
    corrected = build_variant(
        "onnxruntime", model, "int8", _ctx(tmp_path, x, per_channel=False, recovery="bias_correction")
    )
    assert corrected.metadata["recovery"] == "bias_correction" and corrected.kernel_precision == "int8"
    assert "nncf.quantize" in corrected.metadata["quantizer"] and "quantize_static" in none.metadata["quantizer"]
    assert corrected.metadata["quantization_parameters"] and corrected.onnx_path != none.onnx_path
    pytest.importorskip("openvino")
    fast = build_variant("openvino", model, "int8", _ctx(tmp_path, x))
    full = build_variant("openvino", model, "int8", _ctx(tmp_path, x, recovery="bias_correction"))
    assert "fast" in fast.metadata["bias_correction"] and "full" in full.metadata["bias_correction"]
    assert fast.metadata["ir_file"] != full.metadata["ir_file"]


def test_bias_correction_is_skipped_where_no_build_applies_it(tmp_path):
    from edge_opt.study.runner import Sweep

    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "dataset": "digits",
            "image_size": 8,
            "precisions": ["int8", "int8_mixed"],
            "backends": ["torch", "onnxruntime"],
            "pruning_levels": [0.0],
            "quantization": {"recovery": "bias_correction"},
        }
    )
    sweep = Sweep.__new__(Sweep)  # only the config is read by skip_reason here
    sweep.cfg, sweep.source = cfg, None
    reasons = {(p.backend, p.precision): sweep._recovery_skip(p) for p in sweep_points(cfg)}
    assert reasons[("onnxruntime", "int8")] is None
    assert all("bias_correction" in r for k, r in reasons.items() if k != ("onnxruntime", "int8"))
    with pytest.raises(Exception, match="bias_correction"):
        build_variant(
            "torch", _tiny(relu6=False), "int8", _ctx(tmp_path, torch.randn(16, 1, 8, 8), recovery="bias_correction")
        )


def test_the_same_recovery_config_twice_gives_identical_scales_and_outputs(tmp_path):
    model = spread_depthwise(_tiny(relu6=False))
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    runs = []
    for i in range(2):
        ctx = _ctx(tmp_path / str(i), x, per_channel=False, recovery="cle")
        ort_v, torch_v = (build_variant(b, model, "int8", ctx) for b in ("onnxruntime", "torch"))
        runs.append(
            (
                ort_v.metadata["quantization_parameters"],
                torch_v.metadata["layers"],
                ort_v.predict(x),
                torch_v.predict(x),
            )
        )
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert np.array_equal(runs[0][2], runs[1][2]) and np.array_equal(runs[0][3], runs[1][3])


# --- quantization-aware training (PT2E) -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_qat_trains_lowers_to_xnnpack_int8_and_repeats_exactly(tmp_path):
    pytest.importorskip("executorch")
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = _tiny(relu6=False)
    runs = []
    for i in range(2):
        q = QuantizationConfig(calibration_batches=1, recovery="qat", qat_epochs=1, per_channel=False)
        ctx = BuildContext(
            calibration=[x[:32]], example_input=x[:2], workdir=tmp_path / str(i), quantization=q, train_loader=loader
        )
        v = build_variant("executorch", model, "int8", ctx)
        assert v.kernel_precision.startswith("int8") and "quantization-aware" in v.metadata["quantizer"]
        runs.append((v.metadata["qat"], v.predict(x[:16])))
    assert runs[0][0]["quantize_ops"] > 0 and runs[0][0]["losses"][0] > 0
    assert runs[0][0]["scales_sha256"] == runs[1][0]["scales_sha256"]  # the same config: the same scales
    assert np.array_equal(runs[0][1], runs[1][1])
    plain = build_variant(
        "executorch", model, "int8", BuildContext(calibration=[x[:32]], example_input=x[:2], workdir=tmp_path / "p")
    )
    assert not np.array_equal(plain.predict(x[:16]), runs[0][1])  # trained: not the post-training model


def test_qat_points_are_skipped_where_no_build_runs_them(tmp_path):
    from edge_opt.study.runner import Sweep

    cfg = config_from_dict(
        {
            "output_dir": str(tmp_path),
            "precisions": ["int8", "int8_mixed"],
            "backends": ["torch", "onnxruntime", "executorch"],
            "pruning_levels": [0.0],
            "quantization": {"recovery": "qat"},
        }
    )
    sweep = Sweep.__new__(Sweep)
    sweep.cfg, sweep.source = cfg, None
    sweep.data = type("Data", (), {"train_loader": object()})()
    reasons = {(p.backend, p.precision): sweep._recovery_skip(p) for p in sweep_points(cfg)}
    assert reasons.pop(("executorch", "int8")) is None
    assert all("'qat'" in r for r in reasons.values())
