"""The runtimes edge devices ship: OpenVINO (CPU plugin, NNCF int8) and ExecuTorch (XNNPACK, PT2E int8)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.config import config_from_dict
from edge_opt.pipeline import run_study
from edge_opt.variants import BuildContext, build_variant

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="edge-opt[openvino] not installed"),
    pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="edge-opt[executorch] not installed"),
]


def _ctx(digits8, tmp_path, batch_sizes=(1, 64)) -> BuildContext:
    calib = [x for x, _ in list(digits8.train_loader)[:4]]
    return BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path, batch_sizes=batch_sizes)


def _accuracy(variant, digits8) -> float:
    logits = np.concatenate([variant.predict(x) for x, _ in digits8.val_loader])
    return float((logits.argmax(1) == digits8.val_labels).mean())


def _torch_logits(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "executorch"])
def test_fp32_matches_torch_and_int8_is_real_and_close(backend, trained_small, digits8, tmp_path):
    ctx = _ctx(digits8, tmp_path)
    x = next(iter(digits8.val_loader))[0]
    fp32 = build_variant(backend, trained_small, "fp32", ctx)
    assert fp32.kernel_precision == "fp32"
    for batch in (x[:1], x[:7], x, torch.cat([x, x[:5]])):  # static programs: padded and split batches too
        assert np.abs(fp32.predict(batch) - _torch_logits(trained_small, batch)).max() < 1e-4
    int8 = build_variant(backend, trained_small, "int8", ctx)
    assert int8.kernel_precision == "int8"
    if backend == "openvino":  # quantized compute nodes in the compiled runtime graph
        assert any(k.endswith(":int8") for k in int8.metadata["runtime_compute_nodes"])
    else:  # quantize/dequantize ops delegated to XNNPACK with the convolutions
        ops = int8.metadata["xnnpack_delegated_ops"]
        assert any("quantize_per" in op for op in ops) and any("convolution" in op for op in ops)
        assert int8.metadata["delegated_fraction"] > 0.5
    assert abs(_accuracy(int8, digits8) - _accuracy(fp32, digits8)) <= 0.02
    assert int8.parameter_bytes < fp32.parameter_bytes


def test_openvino_fp16_reports_the_kernels_that_run(trained_small, digits8, tmp_path):
    from edge_opt.variants.openvino_backend import compile_ir, ir_kernel_precision, openvino_runtime_ops

    v = build_variant("openvino", trained_small, "fp16", _ctx(digits8, tmp_path))
    xml = tmp_path / "openvino" / v.metadata["ir_file"]
    seen = ir_kernel_precision(openvino_runtime_ops(compile_ir(xml, "f16", 1)))
    assert v.kernel_precision == seen and seen in ("fp16", "bf16")  # bf16 where the CPU has no fp16 kernels


def test_executorch_refuses_precisions_it_does_not_run(trained_small, digits8, tmp_path):
    from edge_opt.variants.base import VariantBuildError

    with pytest.raises(VariantBuildError, match="does not support precision 'fp16'"):
        build_variant("executorch", trained_small, "fp16", _ctx(digits8, tmp_path))


@pytest.mark.parametrize("backend,extra", [("openvino", "edge-opt[openvino]"), ("executorch", "edge-opt[executorch]")])
def test_missing_extra_is_one_config_error(backend, extra, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"backends": [backend], "output_dir": str(tmp_path / "out")}))
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and extra in err[0] and not (tmp_path / "out").exists()


def _study(tmp_path, backends, **over):
    d = {
        "dataset": "digits",
        "image_size": 8,
        "epochs": 2,
        "fine_tune_epochs": 0,
        "batch_size": 64,
        "model": {"name": "small_cnn", "params": {"conv1_channels": 8, "conv2_channels": 16, "hidden_units": 32}},
        "pruning_levels": [0.0],
        "precisions": ["fp32", "int8"],
        "backends": backends,
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
@pytest.mark.parametrize(
    "backend,files,precisions",
    [("openvino", {"model.xml", "model.bin"}, ["fp32", "int8"]), ("executorch", {"model.pte"}, ["int8"])],
)
def test_artifact_is_what_the_runtime_loads_and_predict_reproduces_it(backend, files, precisions, tmp_path, capsys):
    res = _study(tmp_path, [backend], precisions=precisions)
    assert not res.sweep["error"].notna().any(), res.sweep["error"].tolist()
    model = res.output_dir / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert (
        manifest["runtime"] == backend
        and {f["path"] for f in manifest["files"]} == files
        and manifest["runtime_version"]
    )
    assert res.recommendation is not None and res.recommendation.artifact == f"model/{manifest['model_file']}"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(model / "validation_inputs.npy"),
                "--labels",
                str(model / "validation_labels.npy"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"accuracy: {manifest['artifact_accuracy']:.6f}" in err
    assert res.sweep["build_s"].gt(0).all()


@pytest.mark.slow
def test_a_bring_your_own_onnx_model_runs_on_openvino(tmp_path):
    byo = ROOT / "examples" / "bring_your_own"
    d = {
        "model": {"onnx": str(byo / "model.onnx")},
        "dataset": "npz",
        "data_path": str(byo / "digits.npz"),
        "pruning_levels": [0.0],
        "precisions": ["fp32", "int8"],
        "backends": ["onnxruntime", "openvino"],  # executorch: tests/inputs/test_onnx_convert.py
        "benchmark_repeats": 3,
        "benchmark_trials": 2,
        "benchmark_warmup": 1,
        "output_dir": str(tmp_path / "out"),
        "deployment": {"scenarios": ["batch"], "min_queries": 5, "min_duration_s": 0.01},
    }
    res = run_study(config_from_dict(d))
    rows = res.sweep.set_index(["backend", "precision"])
    assert not rows["error"].notna().any()
    ort, ov = rows.loc[("onnxruntime", "fp32"), "accuracy"], rows.loc[("openvino", "fp32"), "accuracy"]
    assert ort == ov and rows.loc[("openvino", "int8"), "kernel_precision"] == "int8"


def test_static_batch_runner_pads_and_splits(tmp_path, trained_small, digits8):
    v = build_variant("executorch", trained_small, "fp32", _ctx(digits8, tmp_path, batch_sizes=(1, 4)))
    x = next(iter(digits8.val_loader))[0][:10]
    prepared = v.prepare(x)
    assert [len(t) for _, t, _ in prepared] == [4, 4, 4] and [n for *_, n in prepared] == [4, 4, 2]
    assert v.predict(x).shape == (10, 10)
    assert Path(tmp_path / "executorch").is_dir()  # the lowered programs are cached as files
