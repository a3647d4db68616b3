"""``edge-opt predict`` for models that are not classifiers: their outputs go to ``.npy`` (one file per output when
there are several), and a model with several inputs takes ``--input NAME=FILE.npy`` once per input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.core import ArtifactError, predict_outputs, sha256_file

ANOMALY = ROOT / "examples" / "tasks" / "anomaly" / "model.onnx"  # (N, 1, 8, 8) → per-pixel squared error


def _artifact(folder: Path, model: Path, metric: str | None) -> Path:
    folder.mkdir()
    shutil.copy(model, folder / "model.onnx")
    manifest = {
        "model_file": "model.onnx",
        "sha256": sha256_file(folder / "model.onnx"),
        "input": {"shape": ["batch", 1, 8, 8]},
        "normalisation": {"scale": 1.0, "mean": 0.0, "std": 1.0},
        **(
            {"metric": {"name": metric, "display_name": metric, "higher_is_better": True, "value": 1.0}}
            if metric
            else {}
        ),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _two_in_two_out(path: Path) -> Path:
    """An ONNX model with inputs ``ids`` (int64) and ``scale`` (float) and outputs ``sum`` and ``twice``."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1, 8, 8])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1, 8, 8])
    out_sum = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 1, 8, 8])
    out_twice = helper.make_tensor_value_info("twice/0", TensorProto.FLOAT, ["N", 1, 8, 8])
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["ids_f", "scale"], ["sum"]),
        helper.make_node("Add", ["scale", "scale"], ["twice/0"]),
    ]
    graph = helper.make_graph(nodes, "two", [ids, scale], [out_sum, out_twice])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32))
    return tmp_path / "x.npy"


def test_a_model_scored_by_another_metric_writes_its_outputs(tmp_path, images, capsys):
    model = _artifact(tmp_path / "model", ANOMALY, "auc")
    assert main(["predict", "--model", str(model), "--input", str(images)]) == 2  # where would they go?
    assert "--output" in capsys.readouterr().err
    out = tmp_path / "errors.npy"
    assert main(["predict", "--model", str(model), "--input", str(images), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    session = ort.InferenceSession(str(ANOMALY), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: np.load(images)})[0]
    np.testing.assert_allclose(np.load(out), want, rtol=0, atol=1e-6)
    assert str(out) in printed and "(5, 1, 8, 8)" in printed and not any(c.isdigit() for c in printed.split()[0])


def test_outputs_that_are_not_class_scores_go_to_npy_without_a_metric_in_the_manifest(tmp_path, images, capsys):
    model = _artifact(tmp_path / "model", ANOMALY, None)  # top1 by default, but the output is (N, 1, 8, 8)
    assert main(["predict", "--model", str(model), "--input", str(images), "--output", str(tmp_path / "o.npy")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (5, 1, 8, 8)
    labels = tmp_path / "y.npy"
    np.save(labels, np.zeros(5, dtype=np.int64))
    code = main(
        ["predict", "--model", str(model), "--input", str(images), "--labels", str(labels), "--output", "o.npy"]
    )
    assert code == 2 and "classifiers only" in capsys.readouterr().err


def test_several_inputs_by_name_and_one_file_per_output(tmp_path, capsys):
    model = _artifact(tmp_path / "model", _two_in_two_out(tmp_path / "two.onnx"), "sqnr_db")
    ids = np.arange(3 * 64, dtype=np.int64).reshape(3, 1, 8, 8)
    scale = np.full((3, 1, 8, 8), 0.5, dtype=np.float32)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "scale.npy", scale)
    args = ["predict", "--model", str(model), "--output", str(tmp_path / "out.npy")]
    both = ["--input", f"ids={tmp_path / 'ids.npy'}", "--input", f"scale={tmp_path / 'scale.npy'}"]
    assert main([*args, *both]) == 0
    printed = capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "out.sum.npy"), ids + scale)
    np.testing.assert_array_equal(np.load(tmp_path / "out.twice_0.npy"), 2 * scale)  # '/' is no file name
    assert "sum: " in printed and "twice/0: " in printed
    assert main([*args, "--input", f"ids={tmp_path / 'ids.npy'}", "--input", f"mask={tmp_path / 'scale.npy'}"]) == 2
    err = capsys.readouterr().err
    assert "Missing: ['scale']" in err and "unknown: ['mask']" in err
    assert main([*args, "--input", str(tmp_path / "ids.npy")]) == 2  # one plain file for a two-input model
    assert "Missing: ['ids', 'scale']" in capsys.readouterr().err


def test_predict_outputs_refuses_fractions_for_an_integer_input(tmp_path):
    model = _artifact(tmp_path / "model", _two_in_two_out(tmp_path / "two.onnx"), "sqnr_db")
    manifest = json.loads((model / "manifest.json").read_text())
    shape = ["batch", 1, 8, 8]
    manifest["inputs"] = [{"name": "ids", "shape": shape, "dtype": "int64"}, {"name": "scale", "shape": shape}]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="'inputs' must list each model input"):  # a dtype missing
        predict_outputs(model, {})
    manifest["inputs"][1]["dtype"] = "float32"
    (model / "manifest.json").write_text(json.dumps(manifest))
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    with pytest.raises(ArtifactError, match="whole numbers"):
        predict_outputs(model, {"ids": x, "scale": x})
    with pytest.raises(ArtifactError, match=r"must have shape \('batch', 1, 8, 8\)"):
        predict_outputs(model, {"ids": np.ones((2, 8, 8)), "scale": x})
    outputs, _ = predict_outputs(model, {"ids": np.ones_like(x), "scale": x})  # whole floats become int64
    assert list(outputs) == ["sum", "twice/0"] and float(outputs["sum"].max()) == 1.5


def test_a_model_that_takes_its_input_as_given_skips_the_image_rules(tmp_path, capsys):
    """One int64 input listed in the manifest's ``inputs``: a plain --input, no --scale asked for, no normalisation."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])
    out = helper.make_tensor_value_info("half", TensorProto.FLOAT, ["N", 6])
    nodes = [
        helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])),
        helper.make_node("Div", ["f", "two"], ["half"]),
    ]
    graph = helper.make_graph(nodes, "one", [ids], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "ids.onnx"))
    model = _artifact(tmp_path / "model", tmp_path / "ids.onnx", "mae")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["inputs"] = [{"name": "ids", "shape": ["batch", 6], "dtype": "int64"}]
    manifest["input"] = {**manifest["inputs"][0], "layout": None}
    (model / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.int64).reshape(2, 6))
    args = ["predict", "--model", str(model), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npy")]
    assert main(args) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.arange(12).reshape(2, 6) / 2)
