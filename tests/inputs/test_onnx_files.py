"""ONNX files as other tools write them: the weights' bytes in every storage form (inline initializers, Constant
nodes, external data) up to the study's rows, external data read beside the model from any working folder, and
the normalised graph (``model.simplify``: onnxslim, checked, cached, recorded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

import onnx_models
from conftest import ROOT
from edge_opt.config import SIMPLIFY_DEFAULT, ConfigError, config_from_dict
from edge_opt.inputs import (
    ModelSource,
    ModelSourceError,
    check_model_fits,
    onnx_files,
    onnx_input_spec,
    onnx_model_files,
    onnx_weight_bytes,
    onnxslim_label,
)
from edge_opt.pipeline import run_study

EXAMPLES = ROOT / "examples" / "bring_your_own"
FAST = {
    "dataset": "npz",
    "data_path": str(EXAMPLES / "digits.npz"),
    "pruning_levels": [0.0],
    "backends": ["onnxruntime"],
    "benchmark_repeats": 2,
    "benchmark_trials": 1,
    "benchmark_warmup": 0,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream"], "min_queries": 10, "min_duration_s": 0.01},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    paths = onnx_models.build(tmp_path_factory.mktemp("onnx_models"))
    return {**paths, "inline": EXAMPLES / "model.onnx"}


def _study(path: Path, out: Path, precisions: list[str], **model):
    cfg = config_from_dict(
        {**FAST, "model": {"onnx": str(path), **model}, "precisions": precisions, "output_dir": str(out)}
    )
    return run_study(cfg)


def _row(res, precision: str):
    df = res.sweep
    return df[(df["backend"] == "onnxruntime") & (df["precision"] == precision)].iloc[0]


@pytest.mark.parametrize("form", ["inline", "constants", "external"])
def test_weight_bytes_count_every_storage_form(models, form):
    path = models[form]
    assert onnx_weight_bytes(path) == onnx_models.expected_weight_bytes(path) > 10_000
    assert onnx_weight_bytes(onnx.load(str(path))) == onnx_weight_bytes(path)  # a loaded model counts alike
    if form == "external":
        assert [f.name for f in onnx_model_files(path)] == ["model.onnx", "model.onnx.data"]


@pytest.mark.parametrize("form", ["inline", "constants", "external"])
def test_rows_report_the_bytes_their_files_hold(models, form, tmp_path):
    """The fp32 row's memory is the weights' bytes to the byte; fp16 and int8 rows count what their files hold
    (Constant-node weights included: not just the int8 scales)."""
    path = models[form]
    res = _study(path, tmp_path / "out", ["fp32", "fp16", "int8"], simplify=False)
    fp32, fp16, int8 = (_row(res, p) for p in ("fp32", "fp16", "int8"))
    assert fp32["memory_mb"] == onnx_models.expected_weight_bytes(path) / 1e6
    assert fp32["parameter_bytes"] == onnx_models.expected_weight_bytes(path)
    assert {fp32["graph_transform"], int8["graph_transform"]} == {"none"}
    meta = {p: json.loads((res.output_dir / _row(res, p)["metadata_file"]).read_text()) for p in ("fp16", "int8")}
    files = {p: res.output_dir / "onnx" / meta[p]["metadata"]["onnx_file"] for p in meta}
    assert fp16["memory_mb"] == onnx_weight_bytes(files["fp16"]) / 1e6 < fp32["memory_mb"]
    assert int8["memory_mb"] == onnx_weight_bytes(files["int8"]) / 1e6
    if form == "constants":  # weights quantized as activations stay fp32 Constants in the int8 file
        assert int8["memory_mb"] > fp32["memory_mb"]


def test_external_data_is_read_beside_the_model_from_any_working_folder(models, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(models["external"].parent, folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    name, dims = onnx_input_spec(folder / "model.onnx")
    assert dims[1:] == (1, 8, 8)
    (folder / "model.onnx.data").rename(tmp_path / "moved.data")
    with pytest.raises(ModelSourceError) as err:  # checked again at every call, though the model file is unchanged
        onnx_input_spec(folder / "model.onnx")
    message = str(err.value)
    assert "'model.onnx' file" in message and str(folder / "model.onnx") in message
    assert "'model.onnx.data'" in message and str(folder / "model.onnx.data") in message


def test_dynamic_height_and_width_take_the_datas_and_static_ones_must_match(models):
    assert onnx_input_spec(models["dynamic"])[1] == (None, 1, None, None)
    sample = torch.zeros(2, 1, 8, 8)
    dynamic = ModelSource("onnx", "onnx:dynamic.onnx", None, models["dynamic"], None, True)
    assert check_model_fits(dynamic, (1, 8, 8), 10, sample) == 10
    static = ModelSource("onnx", "onnx:constants.onnx", None, models["constants"], None, True)
    with pytest.raises(ModelSourceError, match=r"\(1, 16, 16\).*\(1, 8, 8\)"):
        check_model_fits(static, (1, 16, 16), 10, torch.zeros(2, 1, 16, 16))


def test_simplify_goes_with_onnx_only():
    with pytest.raises(ConfigError, match="'simplify' goes with 'onnx'"):
        config_from_dict({"model": {"name": "small_cnn", "simplify": True}})
    assert config_from_dict({"model": {"onnx": "m.onnx"}}).model.simplify_graph == SIMPLIFY_DEFAULT
    assert not config_from_dict({"model": {"onnx": "m.onnx", "simplify": False}}).model.simplify_graph
    assert not config_from_dict({}).model.simplify_graph


def test_simplified_study_folds_constants_and_batchnorm_records_it_and_reuses_it(models, tmp_path):
    path = models["constants"]
    res = _study(path, tmp_path / "out", ["fp32", "int8"], simplify=True)
    graph = res.summary["graph_transform"]
    assert graph["applied"] and graph["tool"] == onnxslim_label()
    assert (graph["nodes_before"], graph["nodes_after"], graph["constants_folded"], graph["batchnorm_folded"]) == (
        88,
        30,
        50,
        8,
    )
    assert graph["max_abs_diff"] <= graph["tolerance"] and graph["weight_bytes_before"] == 38200
    slim = res.output_dir / "onnx" / graph["graph"]
    fp32, int8 = _row(res, "fp32"), _row(res, "int8")
    assert res.sweep.columns[-1] == "graph_transform" and set(res.sweep["graph_transform"]) == {onnxslim_label()}
    assert fp32["memory_mb"] == onnx_weight_bytes(slim) / 1e6 == graph["weight_bytes_after"] / 1e6
    d = onnx_models.digits()  # the normalised graph keeps the model's accuracy
    logits = _plain_logits(path, d["x_val"])
    assert fp32["accuracy"] == float((logits.argmax(1) == d["y_val"]).mean())
    # ORT quantizes the folded weights per channel as int8 initializers (Constant weights: as activations)
    meta = json.loads((res.output_dir / int8["metadata_file"]).read_text())
    qgraph = onnx.load(str(res.output_dir / "onnx" / meta["metadata"]["onnx_file"])).graph
    assert sum(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4 for i in qgraph.initializer) == 12
    again = _study(path, tmp_path / "out", ["fp32", "int8"], simplify=True)
    assert again.summary["graph_transform"]["reused"] and again.reused == 2 and again.computed == 0


def _plain_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_a_normalised_graph_that_differs_is_not_used(models, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_files, "SLIM_TOLERANCE", -1.0)  # any difference, even none, is too large
    x = onnx_models.digits()["x_val"][:4]
    graph = onnx_files.normalise_onnx(models["dynamic"], tmp_path / "cache", x)
    assert graph.label == "none" and graph.path == models["dynamic"] and not graph.details["applied"]
    assert "differs from the input" in graph.warning and "largest |difference|" in graph.warning
    assert not list((tmp_path / "cache").glob("*.onnx"))  # the rejected graph is not kept
    monkeypatch.setattr(onnx_files, "SLIM_TOLERANCE", 1e-4)  # the record of the rejection is reused as it is
    assert onnx_files.normalise_onnx(models["dynamic"], tmp_path / "cache", x).details["reused"]
    kept = onnx_files.normalise_onnx(models["dynamic"], tmp_path / "other", x)
    assert kept.label == onnxslim_label() and kept.path.parent == tmp_path / "other" and kept.warning is None
    assert onnx_input_spec(kept.path)[1] == (None, 1, None, None)  # dynamic H/W stay dynamic


def _fixed_batch_export(model: torch.nn.Module, path: Path) -> Path:
    """A TorchScript export with no dynamic axis: the batch is fixed at 1, as many exporters write it."""
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["x"])
    return path


class _HardCodedBatch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).reshape(1, -1))  # the batch of 1 written into the graph


@pytest.mark.parametrize("simplify", [True, False])
def test_a_fixed_batch_of_one_is_made_dynamic_checked_and_recorded(tmp_path, simplify):
    path = _fixed_batch_export(onnx_models.trained_model(epochs=3), tmp_path / "fixed.onnx")
    assert onnx_files.fixed_batch(path) == 1
    res = _study(path, tmp_path / "out", ["fp32", "int8"], simplify=simplify)
    df = res.sweep
    assert df["error"].isna().all() and len(df) == 2, df["error"].tolist()
    summary = json.loads((res.output_dir / "summary.json").read_text())
    made = summary["graph_transform"]["batch_made_dynamic"]
    assert made["from"] == 1 and made["max_abs_diff"] <= 1e-4 and (res.output_dir / "onnx" / made["graph"]).is_file()
    assert onnx_files.fixed_batch(res.output_dir / "onnx" / made["graph"]) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.onnx", "out"]  # the user's file untouched


def test_a_graph_that_hard_codes_its_batch_is_refused_naming_it(tmp_path, capsys):
    from edge_opt.cli import main

    path = _fixed_batch_export(_HardCodedBatch().eval(), tmp_path / "hard.onnx")
    cfg = {**FAST, "model": {"onnx": str(path)}, "precisions": ["fp32"], "output_dir": str(tmp_path / "out")}
    (tmp_path / "study.yaml").write_text(json.dumps(cfg))
    assert main(["run", "--config", str(tmp_path / "study.yaml"), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "fixed batch of 1" in err[0] and "hard.onnx" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_batch_of_minus_one_is_dynamic_as_paddle2onnx_writes_it(models, tmp_path):
    m = onnx.load(str(models["constants"]))
    for value in (m.graph.input[0], m.graph.output[0]):  # Paddle2ONNX writes -1 on inputs and outputs alike
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = -1
    onnx.save(m, str(tmp_path / "paddle_style.onnx"))
    assert onnx_files.fixed_batch(tmp_path / "paddle_style.onnx") is None
    assert onnx_input_spec(tmp_path / "paddle_style.onnx")[1][0] is None
    from edge_opt.variants import onnx_layers

    assert sum(layer.macs for layer in onnx_layers(tmp_path / "paddle_style.onnx", (1, 8, 8))) == 129_536


def test_an_opset_11_graph_quantizes_per_channel_to_a_valid_int8_model(tmp_path):
    """Paddle2ONNX and tf2onnx often write opset 11, below the opset of per-channel QDQ (13)."""
    path = tmp_path / "opset11.onnx"
    torch.onnx.export(
        onnx_models.trained_model(epochs=2), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
        opset_version=11, input_names=["x"], dynamic_axes={"x": {0: "n"}},
    )  # fmt: skip
    assert onnx.load(str(path)).opset_import[0].version == 11
    res = _study(path, tmp_path / "out", ["int8"], simplify=False)
    row = _row(res, "int8")
    assert pd.isna(row["error"]) and row["kernel_precision"] == "int8", row["error"]
    assert row["int8_mac_fraction"] > 0, row["float_layers"]


def test_an_ir3_graph_stays_valid_after_onnxslim_drops_its_initializers_from_the_inputs(tmp_path):
    """Caffe2-era exports (IR 3) list every initializer as a graph input, as IR 3 requires; onnxslim drops them
    from the inputs. The normalised graph is raised to IR 4, so ONNX's version converter (the int8 build's opset
    13 step) accepts it: at IR 3 it refused it ("Input ... is undefined!")."""
    from onnx import version_converter

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    src = tmp_path / "ir3.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(src), dynamo=False, opset_version=9, keep_initializers_as_inputs=True
    )
    old = onnx.load(str(src))
    old.ir_version = 3
    onnx.save(old, str(src))
    out = tmp_path / "slim.onnx"
    onnx_files._run_onnxslim(src, out)
    slim = onnx.load(str(out))
    inputs = {i.name for i in slim.graph.input}
    assert any(t.name not in inputs for t in slim.graph.initializer)  # what onnxslim does to an IR 3 graph
    assert slim.ir_version == 4
    assert version_converter.convert_version(slim, 13).opset_import[0].version == 13
