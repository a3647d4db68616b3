"""Per-layer sensitivity and int8_mixed on a model with a planted outlier layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_opt.variants import BuildContext, VariantBuildError, build_variant
from edge_opt.variants.layers import onnx_layers, ort_layer_precisions
from edge_opt.variants.onnx_tools import optimized_graph

SCALE = 1000.0


class Planted(nn.Module):
    """c2 (a cheap 1×1 conv) will carry the planted outliers in its output activations; c3 reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.c4 = nn.Conv2d(8, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = torch.relu(self.c4(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def planted(digits8):
    from edge_opt.inputs.training import train_model

    torch.manual_seed(0)
    m = Planted()
    train_model(m, digits8.train_loader, epochs=20, learning_rate=0.02, seed=0)
    x = torch.cat([b[0] for b in digits8.val_loader])
    before = m(x)
    with torch.no_grad():
        k = int(torch.relu(m.c2(torch.relu(m.c1(x)))).mean((0, 2, 3)).argmax())  # c2's most active channel
        # ×SCALE on c2's channel k, ÷SCALE where c3 reads it: the float function is unchanged, but the
        # activations c3 reads carry values SCALE× larger than all the others
        m.c2.weight[k] *= SCALE
        m.c2.bias[k] *= SCALE
        m.c3.weight[:, k] /= SCALE
    torch.testing.assert_close(m(x), before, rtol=1e-3, atol=1e-3)
    return m.eval()


def _ctx(digits8, tmp_path, **over):
    xs, ys = zip(*[(b[0], b[1]) for b in digits8.val_loader])
    return BuildContext(
        calibration=digits8.calibration_batches(4),
        example_input=xs[0][:2],
        workdir=tmp_path,
        parent_key="planted",
        validation=(torch.cat(xs), torch.cat(ys)),
        sensitivity_dir=tmp_path / "sensitivity",
        **over,
    )


def _acc(v, digits8) -> float:
    from edge_opt.measure.metrics import evaluate_accuracy

    return evaluate_accuracy(v, digits8.val_loader)


@pytest.mark.slow
def test_mixed_int8_recovers_the_planted_outlier_layer(planted, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path)
    fp32 = _acc(build_variant("onnxruntime", planted, "fp32", ctx), digits8)
    full = _acc(build_variant("onnxruntime", planted, "int8", ctx), digits8)
    assert fp32 - full > 0.05  # full int8 with minmax calibration loses more than 5 points
    mixed = build_variant("onnxruntime", planted, "int8_mixed", ctx)
    assert fp32 - _acc(mixed, digits8) <= 0.01  # within max_accuracy_drop
    meta = mixed.metadata
    # the planted outliers sit between c2 (writes them) and c3 (reads them): quantizing either alone
    # quantizes that tensor, so the two rank first; the mixed build keeps exactly them in float
    assert set(meta["sensitivity_rank"][:2]) == {"c2", "c3"}
    assert sorted(meta["requested_float_layers"]) == ["c2", "c3"]  # 2 of 5 layers: at most half
    assert set(meta["requested_float_layers"]) <= set(meta["float_layers"])
    # the built graph runs float ops exactly for the layers it lists, int8 for the others
    graph, _ = optimized_graph(mixed.onnx_path)
    layers = onnx_layers(tmp_path / "planted_fp32.onnx")
    prec = ort_layer_precisions(graph.node, layers)
    assert sorted(n for n, p in prec.items() if p != "int8") == sorted(meta["float_layers"])
    assert (tmp_path / "sensitivity").is_dir() and any((tmp_path / "sensitivity").iterdir())


@pytest.mark.slow
def test_mixed_int8_fails_clearly_when_the_budget_is_out_of_reach(planted, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path, max_accuracy_drop=0.0, max_float_mac_fraction=0.05)
    with pytest.raises(VariantBuildError, match="int8_mixed cannot meet max_accuracy_drop=0.0"):
        build_variant("onnxruntime", planted, "int8_mixed", ctx)


@pytest.mark.slow
def test_torch_sensitivity_and_mixed_build(planted, digits8, tmp_path):
    from edge_opt.variants.sensitivity import layer_sensitivity

    ctx = _ctx(digits8, tmp_path)
    report = layer_sensitivity("torch", planted, ctx)
    assert [x.rank for x in report.layers] == [1, 2, 3, 4, 5] and {x.layer for x in report.layers} == {
        "c1",
        "c2",
        "c3",
        "c4",
        "fc",
    }
    assert all(np.isfinite(x.sqnr_db) or x.sqnr_db == float("inf") for x in report.layers)
    again = layer_sensitivity("torch", planted, _ctx(digits8, tmp_path))  # from the JSON kept for resume
    assert again == report
    v = build_variant("torch", planted, "int8_mixed", _ctx(digits8, tmp_path, max_accuracy_drop=0.05))
    assert v.kernel_precision == "int8" and 0 < v.metadata["int8_mac_fraction"] <= 1
    assert set(v.metadata["requested_float_layers"]) == set(v.metadata["float_layers"])  # verified per module


def test_one_torch_calibration_serves_int8_and_every_mixed_search_conversion(planted, digits8, tmp_path, monkeypatch):
    from edge_opt.variants import precisions
    from edge_opt.variants.quantize import calibrate_torch_int8, convert_torch_int8, quantize_torch_int8

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return calibrate_torch_int8(*args, **kwargs)

    monkeypatch.setattr(precisions, "calibrate_torch_int8", counting)
    ctx = _ctx(digits8, tmp_path, max_accuracy_drop=0.05)
    build_variant("torch", planted, "int8", ctx)
    mixed = build_variant("torch", planted, "int8_mixed", ctx)  # 5 layers alone + the search's steps
    assert len(calls) == 1 and len(mixed.metadata["mixed_search"]) >= 2
    # a conversion of the shared calibration keeping layers float is the same model as calibrating for it
    calibration = [b.float() for b in ctx.calibration]
    shared = calibrate_torch_int8(planted, calibration)
    x = torch.cat([b[0] for b in digits8.val_loader])
    with torch.inference_mode():
        for floats in (["c2", "c3"], ["fc"], []):
            torch.testing.assert_close(
                convert_torch_int8(shared, float_layers=floats)(x),
                quantize_torch_int8(planted, calibration, float_layers=floats)(x),
                rtol=0,
                atol=0,
            )


def test_one_ort_calibration_per_parent_and_options(planted, digits8, tmp_path, monkeypatch):
    import dataclasses
    import importlib
    import json

    from edge_opt.config import QuantizationConfig
    from edge_opt.variants.onnx_tools import fp32_onnx_path
    from edge_opt.variants.precisions import int8_onnx_file, ort_calibration_cache

    made = []
    for name in ("quantize", "calibrate"):  # the modules, not their functions: quantize_static's and ours
        module = importlib.import_module(f"onnxruntime.quantization.{name}")
        real = module.create_calibrator
        monkeypatch.setattr(module, "create_calibrator", lambda *a, real=real, **k: made.append(1) or real(*a, **k))
    ctx = _ctx(digits8, tmp_path, max_accuracy_drop=0.05)
    build_variant("onnxruntime", planted, "int8", ctx)
    first = next(tmp_path.glob("planted_int8_*.onnx")).read_bytes()
    build_variant("onnxruntime", planted, "int8_mixed", ctx)  # 5 layers alone + the search's steps
    assert len(made) == 1
    fp32 = fp32_onnx_path(planted, ctx)
    again = int8_onnx_file(fp32, ctx, tmp_path / "again.onnx")  # ranges read back from the cache file
    assert (tmp_path / "again.onnx").read_bytes() == first and len(made) == 1 and again["quantization_parameters"]
    # other options or other calibration data are calibrated anew, never served stale ranges
    other = {
        ort_calibration_cache(fp32, c)
        for c in (
            ctx,
            dataclasses.replace(ctx, quantization=QuantizationConfig(calibration_method="entropy")),
            dataclasses.replace(ctx, calibration=digits8.calibration_batches(2)),
        )
    }
    assert len(other) == 3
    cache = ort_calibration_cache(fp32, ctx)
    cache.write_text('{"truncated', encoding="utf-8")  # damaged on disk: calibrated again, same file out
    int8_onnx_file(fp32, ctx, tmp_path / "repaired.onnx")
    assert (tmp_path / "repaired.onnx").read_bytes() == first and len(made) == 2 and json.loads(cache.read_text())
