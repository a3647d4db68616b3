"""Calibration choices as sweep dimensions; percentile vs minmax on spiky calibration data; reproducible scales."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config_dict
from edge_opt.config import config_from_dict
from edge_opt.pipeline import run_study
from edge_opt.study.runner import Sweep, point_key, sweep_points
from edge_opt.variants import BuildContext, build_variant


def test_listed_calibration_options_become_config_points(trained_small, digits8, tmp_path):
    cfg = config_from_dict(
        tiny_config_dict(
            tmp_path,
            pruning_levels=[0.0],
            precisions=["fp32", "int8"],
            quantization={
                "calibration_method": ["minmax", "percentile"],
                "per_channel": [True, False],
                "percentile": 99.9,
            },
        )
    )
    points = sweep_points(cfg)
    int8 = [p for p in points if p.precision == "int8"]
    assert len([p for p in points if p.precision == "fp32"]) == 2 and len(int8) == 8
    assert {p.calibration for p in int8} == {
        "minmax/per-channel/8",
        "minmax/per-tensor/8",
        "percentile99.9/per-channel/8",
        "percentile99.9/per-tensor/8",
    }
    assert len({point_key(cfg, p) for p in points}) == len(points)
    sweep = Sweep(trained_small, digits8, cfg, tmp_path)
    skipped = [p for p in int8 if sweep.skip_reason(p)]
    assert {(p.backend, p.calibration.split("/")[0]) for p in skipped} == {("torch", "percentile99.9")}
    ctx = sweep.build_context(0.0, calibration="percentile99.9/per-tensor/8")
    assert ctx.quantization.method == "percentile" and ctx.quantization.channelwise is False
    v = build_variant("onnxruntime", trained_small, "int8", ctx)
    assert v.metadata["calibration_method"] == "percentile" and v.metadata["percentile"] == 99.9
    assert v.metadata["per_channel"] is False and v.metadata["quantization_parameters"]


def test_percentile_calibration_loses_less_than_minmax_on_spiky_data(trained_small, digits8, tmp_path):
    from edge_opt.measure.metrics import evaluate_accuracy

    rng = np.random.default_rng(0)
    calib = []
    for b in digits8.calibration_batches(4):
        b = b.clone()
        spikes = torch.from_numpy(rng.random(b.shape) < 0.001)  # rare, very large values
        b[spikes] = 500.0
        calib.append(b)
    fp32 = evaluate_accuracy(trained_small, digits8.val_loader)
    drops = {}
    for method in ("minmax", "percentile"):
        q = config_from_dict({"quantization": {"calibration_method": method, "percentile": 99.9}}).quantization
        ctx = BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path / method, quantization=q)
        drops[method] = fp32 - evaluate_accuracy(
            build_variant("onnxruntime", trained_small, "int8", ctx), digits8.val_loader
        )
    assert drops["percentile"] < drops["minmax"] and drops["minmax"] > 0.05


@pytest.mark.slow
def test_rerun_reproduces_quantization_parameters_and_reports_mixed_precision(tmp_path):
    over = {
        "pruning_levels": [0.0],
        "precisions": ["fp32", "int8", "int8_mixed"],
        "max_accuracy_drop": 0.05,
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
    }
    a = run_study(config_from_dict(tiny_config_dict(tmp_path / "a", **over)))
    b = run_study(config_from_dict(tiny_config_dict(tmp_path / "b", **over)))
    for name in ("torch_int8_p0.json", "onnxruntime_int8_p0.json", "onnxruntime_int8_mixed_p0.json"):
        ma = json.loads((a.output_dir / "variants" / name).read_text())["metadata"]
        mb = json.loads((b.output_dir / "variants" / name).read_text())["metadata"]
        key = "layers" if name.startswith("torch") else "quantization_parameters"
        assert ma[key] and json.dumps(ma[key], sort_keys=True) == json.dumps(mb[key], sort_keys=True)
    df = a.sweep
    assert df["error"].isna().all() and set(df["precision"]) == {"fp32", "int8", "int8_mixed"}
    mixed = df[df["precision"] == "int8_mixed"]
    assert (mixed["accuracy_drop"] <= 0.05 + 1e-9).all() and mixed["int8_mac_fraction"].between(0, 1).all()
    sens = (a.output_dir / "sensitivity.csv").read_text().splitlines()
    assert sens[0].startswith("pruning_level,backend,layer") and len(sens) > 3
    assert (a.output_dir / "sensitivity.png").is_file() and (a.output_dir / "mixed_precision.csv").is_file()
    assert "int8 sensitivity, recovery and mixed precision" in (a.output_dir / "report.html").read_text()


# --- how many samples min/max calibration needs (variants/calibration.py) ---------------------------------


def _stop_ctx(batches, tmp_path, **q):
    from edge_opt.config import QuantizationConfig

    return BuildContext(
        calibration=batches, example_input=batches[0][:2], workdir=tmp_path, quantization=QuantizationConfig(**q)
    )


def _repeated(digits8, n_batches=8):
    """The same 16 samples over and over: after the first 16 nothing new is ever outside the ranges."""
    x = digits8.calibration_batches(1)[0][:16]
    return [x.clone() for _ in range(n_batches)]


def test_range_tally_counts_values_outside_the_snapshot():
    from edge_opt.variants.calibration import RangeTally

    t = RangeTally()
    t.add("a", torch.tensor([0.0, 1.0]))
    assert t.outside_fraction() is None and t.ranges["a"] == (0.0, 1.0)
    t.snapshot()
    t.add("a", torch.tensor([-1.0, 0.5, 0.5, 2.0]))
    assert t.outside_fraction() == pytest.approx(0.5) and t.ranges["a"] == (-1.0, 2.0)
    t.add("b", torch.tensor([3.0, 4.0]))  # a tensor the snapshot never saw: all of it outside
    assert t.outside == 4 and t.values == 6


def test_calibration_stops_once_more_samples_add_nothing_and_every_backend_gets_that_prefix(
    trained_small, digits8, tmp_path
):
    batches = _repeated(digits8)  # 128 samples, 16 distinct
    ctx = _stop_ctx(batches, tmp_path)
    built = {b: build_variant(b, trained_small, "int8", ctx) for b in ("torch", "onnxruntime", "openvino")}
    for b, v in built.items():
        assert v.metadata["calibration_samples"] == 32, b  # the first check: samples 17–32 added nothing
        assert v.metadata["calibration_stop"].startswith("32 of 128 samples"), b
    # the ONNX file alone (no PyTorch model) is probed through ONNX Runtime and stops at the same place
    onnx_ctx = _stop_ctx(batches, tmp_path / "onnx", recovery="none")
    onnx_ctx.cache[("onnx_fp32", onnx_ctx.parent_key)] = str(next(tmp_path.glob("*_fp32.onnx")))
    v = build_variant("onnxruntime", None, "int8", onnx_ctx)
    assert v.metadata["calibration_samples"] == 32 and "32 of 128" in v.metadata["calibration_stop"]


def test_calibration_takes_every_sample_when_ranges_keep_growing_or_when_asked(trained_small, digits8, tmp_path):
    x = digits8.calibration_batches(1)[0][:16]
    growing = [x * (i + 1) for i in range(8)]  # every batch's values beyond the last: never settles
    v = build_variant("torch", trained_small, "int8", _stop_ctx(growing, tmp_path))
    assert v.metadata["calibration_samples"] == 128 and v.metadata["calibration_stop"].startswith("every sample")
    for q in ({"calibration_tolerance": 0}, {"calibration_method": "percentile"}):
        v = build_variant("onnxruntime", trained_small, "int8", _stop_ctx(_repeated(digits8), tmp_path / str(q), **q))
        assert v.metadata["calibration_samples"] == 128, q
        assert v.metadata["calibration_stop"].startswith("every sample (128:"), q


def test_calibration_tolerance_is_validated_and_in_the_point_key():
    from edge_opt.config import QuantizationConfig
    from edge_opt.variants import get_precision

    with pytest.raises(ValueError, match="calibration_tolerance"):
        QuantizationConfig(calibration_tolerance=-0.1)
    a = get_precision("int8").key_fields(QuantizationConfig())
    b = get_precision("int8").key_fields(QuantizationConfig(calibration_tolerance=0))
    assert a != b and a["calibration_tolerance"] == 1e-5
    assert "calibration_tolerance" not in get_precision("int8").key_fields(
        QuantizationConfig(calibration_method="entropy")
    )
