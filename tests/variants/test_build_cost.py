"""What int8 building costs: ORT's calibration in bounded runs on the study's threads with ORT's own ranges, torch's
min/max observers for the min/max method, one fingerprint of the calibration batches per study."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

import pytest
import torch

from edge_opt.config import QuantizationConfig
from edge_opt.variants import BuildContext, build_variant, precisions
from edge_opt.variants.onnx_tools import CalibrationReader, fp32_onnx_path, onnx_input_names


def _ctx(digits8, tmp_path, **over) -> BuildContext:
    calib = [x for x, _ in list(digits8.train_loader)[:3]]
    return BuildContext(calibration=calib, example_input=calib[0][:2], workdir=tmp_path, **over)


def _ort_own_int8(fp32, ctx, out) -> dict:
    """ORT's quantize_static calibrating by itself (the whole batches, its own session), as builds did before."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    try:
        quantize_static(
            onnx.load(str(fp32)),
            str(out),
            CalibrationReader(ctx.calibration, onnx_input_names(fp32)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)
    return precisions._qdq_parameters(out)


def test_ort_calibration_runs_split_on_study_threads_with_ort_own_ranges(trained_small, digits8, tmp_path, monkeypatch):
    import onnxruntime as ort

    ctx = _ctx(digits8, tmp_path / "a")
    fp32 = fp32_onnx_path(trained_small, ctx)
    monkeypatch.setattr(precisions, "CALIBRATION_RUN_VALUES", 64 * 10)  # 10 digits (1×8×8) per run
    sessions, real = [], ort.InferenceSession

    def spy(path, *a, **k):
        sessions.append((str(path), k.get("sess_options", a[0] if a else None)))
        return real(path, *a, **k)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    runs = precisions._calibration_runs(ctx.calibration, "minmax")
    assert len(runs) == sum(-(-len(b) // 10) for b in ctx.calibration) > len(ctx.calibration)
    meta = precisions.int8_onnx_file(fp32, ctx, tmp_path / "ours.onnx")
    calibrating = [so for path, so in sessions if path.endswith("augmented_model.onnx")]
    assert calibrating[-1].intra_op_num_threads == ctx.threads  # the session that ran (ORT's own made first)
    monkeypatch.setattr(ort, "InferenceSession", real)
    assert meta["quantization_parameters"] == _ort_own_int8(fp32, ctx, tmp_path / "theirs.onnx")


def test_histogram_methods_calibrate_whole_batches_and_small_inputs_are_not_split(digits8):
    batches = [torch.zeros(32, 3, 224, 224), torch.zeros(5, 3, 224, 224)]
    assert precisions._calibration_runs(batches, "entropy") == batches
    runs = precisions._calibration_runs(batches, "minmax")
    per_run = precisions.CALIBRATION_RUN_VALUES // (3 * 224 * 224)
    assert [len(r) for r in runs] == [per_run] * (32 // per_run) + [32 % per_run] * bool(32 % per_run) + [per_run, 2]
    small = [x for x, _ in list(digits8.train_loader)[:2]]  # 64 values a sample: whole batches
    assert all(r is b for r, b in zip(precisions._calibration_runs(small, "minmax"), small, strict=True))


@pytest.mark.parametrize(("method", "observer"), [("minmax", "MinMaxObserver"), ("entropy", "HistogramObserver")])
def test_torch_int8_observes_activations_as_the_calibration_method(trained_small, digits8, tmp_path, method, observer):
    ctx = _ctx(digits8, tmp_path, quantization=QuantizationConfig(calibration_method=method))
    v = build_variant("torch", trained_small, "int8", ctx)
    calibrated = precisions.torch_int8_calibration(trained_small, ctx)
    kinds = {type(m).__name__ for n, m in calibrated.prepared.named_modules() if "activation_post_process" in n}
    assert v.kernel_precision == "int8" and v.metadata["activation_observer"] == method.replace("entropy", "histogram")
    assert observer in kinds and kinds <= {observer, "FixedQParamsObserver"}


def test_calibration_batches_are_fingerprinted_once_per_study(trained_small, digits8, tmp_path, monkeypatch):
    ctx = _ctx(digits8, tmp_path)
    fp32 = fp32_onnx_path(trained_small, ctx)
    first = precisions.ort_calibration_cache(fp32, ctx)
    monkeypatch.setattr(precisions, "batch_map", lambda *a: pytest.fail("the batches were summed again"))
    again = precisions.ort_calibration_cache(fp32, dataclasses.replace(ctx, quantization=QuantizationConfig()))
    assert again == first
    monkeypatch.undo()
    other = [x + 1 for x in ctx.calibration]  # other batches (a new list): fingerprinted anew
    assert precisions.ort_calibration_cache(fp32, dataclasses.replace(ctx, calibration=other)) != first


@pytest.mark.skipif(importlib.util.find_spec("executorch") is None, reason="edge-opt[executorch] not installed")
def test_executorch_lowers_one_program_per_measured_batch_size_from_one_calibration(
    trained_small, digits8, tmp_path, monkeypatch
):
    from edge_opt.variants import executorch_backend

    lowered, calibrated = [], []
    real_lower, real_int8 = executorch_backend.lower_program, executorch_backend._int8_module
    monkeypatch.setattr(
        executorch_backend, "lower_program", lambda m, x, p: lowered.append(len(x)) or real_lower(m, x, p)
    )
    monkeypatch.setattr(executorch_backend, "_int8_module", lambda m, c: calibrated.append(1) or real_int8(m, c))
    v = build_variant("executorch", trained_small, "int8", _ctx(digits8, tmp_path, batch_sizes=(4, 1, 4)))
    assert sorted(lowered) == [1, 4] and v.metadata["static_batches"] == [1, 4] and calibrated == [1]
    assert sorted(p.name.rsplit("_", 1)[1] for p in (tmp_path / "executorch").glob("*.pte")) == ["b1.pte", "b4.pte"]


def test_torch_minmax_calibration_runs_in_bounded_runs_with_the_same_ranges(
    trained_small, digits8, tmp_path, monkeypatch
):
    """torch's min/max calibration sees the same samples in runs of at most CALIBRATION_RUN_VALUES input values
    (a real-size batch of 32 took twice the time per sample of a 3-sample run), so its ranges are those of whole
    batches; the histogram observer keeps whole batches."""

    batches = _ctx(digits8, tmp_path).calibration  # the train loader shuffles: the same batches for each build

    def observed(bound: int, method: str = "minmax", where: str = "x"):
        monkeypatch.setattr(precisions, "CALIBRATION_RUN_VALUES", bound)
        q = QuantizationConfig(calibration_method=method)
        ctx = BuildContext(calibration=batches, example_input=batches[0][:2], workdir=tmp_path / where, quantization=q)
        cal = precisions.torch_int8_calibration(trained_small, ctx)
        states = {n: m.state_dict() for n, m in cal.prepared.named_modules() if "activation_post_process" in n}
        return [len(b) for b in cal.calibration], states, ctx

    sizes, split, ctx = observed(64 * 10, where="a")  # 10 digits (1×8×8) a run
    assert max(sizes) == 10 and sum(sizes) == sum(len(b) for b in ctx.calibration)
    whole_sizes, whole, _ = observed(1 << 30, where="b")
    assert whole_sizes == [len(b) for b in ctx.calibration]
    diff = [
        (n, k, split[n][k], whole[n][k]) for n in split for k in split[n] if not torch.equal(split[n][k], whole[n][k])
    ]
    assert split.keys() == whole.keys() and not diff, diff[:3]
    assert observed(64 * 10, "entropy", "c")[0] == whole_sizes
