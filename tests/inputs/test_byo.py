"""Bring your own model and data: the example routes end to end, and every bad input as one clear error."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.pipeline import load_study_config, run_study

EXAMPLES = ROOT / "examples" / "bring_your_own"
TINY = {
    "benchmark_repeats": 3,
    "benchmark_trials": 2,
    "benchmark_warmup": 1,
    "benchmark_min_sample_ms": 0.0,
    "benchmark_target_rel_ci": 0.0,
    "memory_bandwidth_gbps": 10.0,
    "peak_compute_gmacs": 50.0,
    "deployment": {"scenarios": ["single_stream", "batch"], "min_queries": 20, "min_duration_s": 0.05},
}
ROUTE_SECONDS: dict[str, float] = {}


def _route(name: str, out: Path, **over):
    cfg = load_study_config(EXAMPLES / f"{name}.yaml", {**TINY, "output_dir": str(out), **over})
    t0 = time.perf_counter()
    res = run_study(cfg)
    ROUTE_SECONDS[name] = time.perf_counter() - t0
    return cfg, res


def _npz():
    z = np.load(EXAMPLES / "digits.npz")
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def factory_study(tmp_path_factory):
    return _route("factory", tmp_path_factory.mktemp("factory") / "out")


@pytest.mark.slow
def test_factory_weights_route(factory_study):
    cfg, res = factory_study
    df = res.sweep
    assert len(df) == 8 and df["error"].isna().all()
    assert set(df["model_source"]) == {"factory:tinynet:build"} and df["model_sha256"].nunique() == 1
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["model_source"] == "factory:tinynet:build" and summary["skipped"] == []
    manifest = json.loads((res.output_dir / "model" / "manifest.json").read_text())
    assert manifest["model_sha256"] == summary["model_sha256"]
    assert manifest["normalisation"]["scale"] == pytest.approx(1 / 255) and manifest["normalisation"]["mean"] == 0.0
    # the model arrives trained: no baseline training, its own accuracy is the fp32 row's
    assert "training" not in " ".join(summary["warnings"]) and res.timings["training"] < 2


@pytest.mark.slow
def test_onnx_route_matches_a_plain_session_and_converts_it_for_torch_and_pruning(tmp_path):
    import onnxruntime as ort

    _, res = _route("onnx", tmp_path / "out")
    df = res.sweep
    z = _npz()
    sess = ort.InferenceSession(str(EXAMPLES / "model.onnx"), providers=["CPUExecutionProvider"])
    x = z["x_val"].transpose(0, 3, 1, 2).astype(np.float32) / 255
    plain = float((sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1) == z["y_val"]).mean())
    fp32 = df[(df["backend"] == "onnxruntime") & (df["precision"] == "fp32") & (df["pruning_level"] == 0)].iloc[0]
    assert fp32["accuracy"] == plain
    int8 = df[(df["backend"] == "onnxruntime") & (df["precision"] == "int8") & (df["pruning_level"] == 0)].iloc[0]
    assert int8["kernel_precision"] == "int8" and pd.isna(int8["error"])
    # the file converts to PyTorch: the torch rows and the pruned rows run (the same accuracy as the file's at p0)
    assert set(df["backend"]) == {"torch", "onnxruntime"} and set(df["pruning_level"]) == {0.0, 0.5}
    assert df["error"].isna().all() and len(df) == 12
    torch_fp32 = df[(df["backend"] == "torch") & (df["precision"] == "fp32") & (df["pruning_level"] == 0)].iloc[0]
    assert torch_fp32["accuracy"] == plain
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["skipped"] == [] and summary["onnx_conversion"]["converted"]
    assert summary["rejected_rows"] + summary["accepted_rows"] == len(df)
    assert summary["baseline"]["backend"] == "onnxruntime"


def _unconvertible(tmp_path: Path) -> Path:
    """The example ONNX model with its first Relu turned into a Celu (ONNX Runtime runs it; the converter has no
    Celu), so its torch and pruned points are skipped."""
    import onnx

    m = onnx.load(str(EXAMPLES / "model.onnx"))
    next(n for n in m.graph.node if n.op_type == "Relu").op_type = "Celu"
    path = tmp_path / "celu.onnx"
    onnx.save(m, str(path))
    return path


@pytest.mark.slow
def test_onnx_study_status_and_report_keep_skipped_points_apart(tmp_path, capsys):
    _, res = _route("onnx", tmp_path / "out", model={"onnx": str(_unconvertible(tmp_path))})
    capsys.readouterr()
    assert main(["status", str(res.output_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("skipped") for line in lines) == 9 and "12 of 12 points finished" in lines[-1]
    reason = "pruning needs a PyTorch model (the ONNX model could not be converted to PyTorch: unsupported ONNX op"
    assert any(reason in line and "Celu" in line for line in lines)
    summary = json.loads((res.output_dir / "summary.json").read_text())
    reasons = {(s["backend"], s["pruning_level"]): s["reason"] for s in summary["skipped"]}
    assert "the torch backends need a PyTorch model (the ONNX model could not be" in reasons[("torch", 0.0)]
    assert summary["onnx_conversion"]["converted"] is False and "Celu" in summary["onnx_conversion"]["reason"]
    assert "Skipped points" in (res.output_dir / "report.html").read_text()
    assert main(["report", str(res.output_dir)]) == 0
    assert len(pd.read_csv(res.output_dir / "sweep_results.csv")) == 3  # skipped points are not table rows


@pytest.mark.slow
def test_exported_program_gives_the_factory_fp32_accuracy(factory_study, tmp_path):
    _, fac = factory_study
    _, exp = _route("exported", tmp_path / "out")
    key = ["pruning_level", "precision", "backend"]
    a = fac.sweep[fac.sweep["precision"] == "fp32"].set_index(key)["accuracy"]
    b = exp.sweep[exp.sweep["precision"] == "fp32"].set_index(key)["accuracy"]
    common = a.index.intersection(b.index)
    assert len(common) == 2 and (a[common] == b[common]).all()
    skipped = json.loads((exp.output_dir / "summary.json").read_text())["skipped"]
    pruned = [s for s in skipped if s["pruning_level"] == 0.5]
    assert len(pruned) == 4 and all("exported program" in s["reason"] for s in pruned)
    assert sum("cannot trace this exported program" in s["reason"] for s in pruned) == 3
    torch_int8 = [s for s in skipped if s["backend"] == "torch" and s["precision"] == "int8"]
    assert len(torch_int8) == 2 and "torch.ao int8" in torch_int8[0]["reason"]


@pytest.mark.slow
def test_npz_nhwc_and_png_folder_give_identical_accuracy(factory_study, tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        from make_image_folder import write_image_folder
    finally:
        sys.path.remove(str(EXAMPLES))
    _, fac = factory_study
    folder = write_image_folder(EXAMPLES / "digits.npz", tmp_path / "png")
    _, img = _route(
        "image_folder", tmp_path / "out", data_dir=str(folder), pruning_levels=[0.0, 0.5], fine_tune_epochs=1
    )
    key = ["pruning_level", "precision", "backend"]
    merged = fac.sweep.merge(img.sweep, on=key, suffixes=("_npz", "_png"))
    assert len(merged) == 8
    assert (merged["accuracy_npz"] == merged["accuracy_png"]).all()


@pytest.mark.slow
def test_optimize_returns_the_recommendation_it_wrote(tmp_path):
    import edge_opt

    sys.path.insert(0, str(EXAMPLES))
    try:
        from tinynet import build
    finally:
        sys.path.remove(str(EXAMPLES))
    model = build((1, 8, 8), 10)
    model.load_state_dict(torch.load(EXAMPLES / "weights.pt", weights_only=True))
    z = _npz()
    res = edge_opt.optimize(
        model,
        (z["x_val"], z["y_val"]),
        (z["x_train"], z["y_train"]),
        output_dir=tmp_path / "o",
        pruning_levels=[0.0, 0.5],
        precisions=["fp32", "int8"],
        fine_tune_epochs=1,
        **TINY,
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert res.recommendation is not None and res.recommendation.to_dict() == summary["recommended"]
    assert res.recommendation.artifact
    assert summary["model_source"] == "python:TinyNet" and len(res.sweep) == 8 and len(res.frontier) >= 1
    assert res.paths["model"].is_file() and res.sweep["error"].isna().all()
    fp32 = res.sweep[(res.sweep["precision"] == "fp32") & (res.sweep["pruning_level"] == 0)]
    assert fp32["accuracy"].tolist() == pytest.approx([0.9711] * 2, abs=1e-4)  # weights.pt as make_files.py measured


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2_tiny"])
def test_real_architectures_complete_a_study_without_errors(name, tmp_path):
    cfg = load_study_config(
        ROOT / "configs" / "default.yaml",
        {
            **TINY,
            "output_dir": str(tmp_path / "o"),
            "model": {"name": name, "params": {}},
            "image_size": 16,
            "epochs": 1,
            "fine_tune_epochs": 1,
            "pruning_levels": [0.0, 0.5],
            "precisions": ["fp32", "int8"],
            "train_subset": 256,
            "val_subset": 64,
        },
    )
    res = run_study(cfg)
    assert len(res.sweep) == 8 and res.sweep["error"].isna().all(), res.sweep["error"].tolist()
    assert set(res.sweep[res.sweep["precision"] == "int8"]["kernel_precision"]) == {"int8"}


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), **cfg}))
    return p


def _bad(tmp_path: Path, capsys, cfg: dict, *needles: str) -> str:
    code = main(["run", "--config", str(_write(tmp_path, cfg))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    assert not (tmp_path / "out").exists()  # nothing written
    return err[0]


NPZ = {"dataset": "npz", "data_path": str(EXAMPLES / "digits.npz")}


def test_model_source_must_be_exactly_one(tmp_path, capsys):
    _bad(
        tmp_path,
        capsys,
        {"model": {"onnx": "a.onnx", "exported": "b.pt2"}},
        "'model'",
        "name",
        "onnx",
        "factory",
        "exported",
        "['onnx', 'exported']",
    )
    _bad(tmp_path, capsys, {"model": {"python": "Net"}}, "'model.python'", "edge_opt.optimize")


@pytest.mark.parametrize(
    "model,needles",
    [
        ({"onnx": "missing.onnx"}, ["'model.onnx'", "missing.onnx", "does not exist"]),
        ({"exported": "missing.pt2"}, ["'model.exported'", "does not exist"]),
        ({"factory": "no_such_module_xyz:build"}, ["'model.factory'", "'no_such_module_xyz'", "does not import"]),
        ({"factory": "tinynet:nothing"}, ["'model.factory'", "no callable 'nothing'"]),
        ({"factory": "tinynet:TinyNet", "params": {"width": "wide"}}, ["'model.factory'", "failed"]),
    ],
)
def test_bad_model_sources_name_key_and_file(tmp_path, capsys, model, needles):
    _bad(tmp_path, capsys, {**NPZ, "model": model, "config_dir": str(EXAMPLES)}, *needles)


def test_files_of_the_wrong_kind(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a model\x01" * 50)
    _bad(tmp_path, capsys, {**NPZ, "model": {"onnx": str(junk)}}, "'model.onnx'", "is not an ONNX model")
    _bad(tmp_path, capsys, {**NPZ, "model": {"exported": str(junk)}}, "'model.exported'", "torch.export.save")
    _bad(
        tmp_path,
        capsys,
        {**NPZ, "model": {"factory": "tinynet:build", "weights": str(junk)}, "config_dir": str(EXAMPLES)},
        "'model.weights'",
        "junk.bin",
    )


def test_weights_that_do_not_fit_list_the_keys(tmp_path, capsys):
    state = torch.load(EXAMPLES / "weights.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["head.2.bias"]
    bad = tmp_path / "w.pt"
    torch.save(state, bad)
    _bad(
        tmp_path,
        capsys,
        {**NPZ, "model": {"factory": "tinynet:build", "weights": str(bad)}, "config_dir": str(EXAMPLES)},
        "'model.weights'",
        "head.2.bias",
        "extra.weight",
    )


def _onnx_with(tmp_path: Path, two_inputs: bool = False, int_input: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper

    elem = TensorProto.INT64 if int_input else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("a", elem, [None, 1, 8, 8])]
    nodes = [helper.make_node("Flatten", ["a"], ["f"])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1, 8, 8]))
    out = helper.make_tensor_value_info("f", elem, [None, 64])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [out]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_image_data_for_models_that_are_not_one_float_image_input_is_refused_naming_the_inputs(tmp_path, capsys):
    """Several inputs need one array per input (named by the model's inputs); an integer input refuses floats."""
    _bad(
        tmp_path,
        capsys,
        {**NPZ, "model": {"onnx": str(_onnx_with(tmp_path, two_inputs=True))}},
        "takes 2 inputs",
        "['x_train/a', 'x_train/b']",
    )
    floats = tmp_path / "floats.npz"
    z = _npz()
    np.savez(floats, x_val=z["x_val"].astype(np.float32), y_val=z["y_val"])
    _bad(
        tmp_path,
        capsys,
        {"dataset": "npz", "data_path": str(floats), "model": {"onnx": str(_onnx_with(tmp_path, int_input=True))}},
        "dtype float32",
        "a (?, 1, 8, 8) int64",
    )


def test_data_that_does_not_fit_the_model_names_both_shapes(tmp_path, capsys):
    z = _npz()
    p = tmp_path / "d.npz"
    np.savez(p, x_val=np.zeros((10, 12, 12, 1), np.uint8), y_val=z["y_val"][:10])
    _bad(
        tmp_path,
        capsys,
        {"dataset": "npz", "data_path": str(p), "model": {"onnx": str(EXAMPLES / "model.onnx")}},
        "(1, 12, 12)",
        "(1, 8, 8)",
    )
    np.savez(p, x_val=z["x_val"], y_val=z["y_val"] + 5)
    _bad(
        tmp_path,
        capsys,
        {"dataset": "npz", "data_path": str(p), "model": {"onnx": str(EXAMPLES / "model.onnx")}},
        "[0, 10)",
        "labels up to 14",
    )


@pytest.mark.parametrize(
    "arrays,needles",
    [
        ({"x_val": np.zeros((4, 8, 8)), "y_val": np.array([0.5, 1, 2, 3])}, ["'y_val'", "integer"]),
        ({"x_val": np.full((4, 8, 8), np.nan), "y_val": np.arange(4)}, ["'x_val'", "NaN"]),
        ({"x": np.zeros((4, 8, 8))}, ["x_train, y_train, x_val, y_val", "['x']"]),
        ({"x_val": np.zeros((4, 8, 8)), "y_val": np.arange(3)}, ["4 images and 3 labels"]),
    ],
)
def test_bad_npz_files(tmp_path, capsys, arrays, needles):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    _bad(tmp_path, capsys, {"dataset": "npz", "data_path": str(p)}, *needles)


def test_paths_that_are_not_what_they_seem(tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    _bad(tmp_path, capsys, {**NPZ, "model": {"onnx": str(folder)}}, "'model.onnx'", "is a folder, not a file")
    _bad(tmp_path, capsys, {"dataset": "npz", "data_path": str(folder)}, "'data_path'", "is a folder, not a file")
    _bad(
        tmp_path,
        capsys,
        {"dataset": "image_folder", "data_dir": str(EXAMPLES / "digits.npz")},
        "'data_dir'",
        "is a file, not a folder",
    )
    empty = tmp_path / "zero.npz"
    np.savez(empty, x_val=np.zeros((0, 8, 8), np.uint8), y_val=np.zeros(0, np.int64))
    _bad(tmp_path, capsys, {"dataset": "npz", "data_path": str(empty)}, "holds no validation images")


def test_missing_npz_and_not_an_npz(tmp_path, capsys):
    _bad(tmp_path, capsys, {"dataset": "npz", "data_path": str(tmp_path / "none.npz")}, "'data_path'", "does not exist")
    junk = tmp_path / "junk.npz"
    junk.write_text("nope")
    _bad(tmp_path, capsys, {"dataset": "npz", "data_path": str(junk)}, "'data_path'", "not an .npz")


def test_layout_detection_and_override():
    from edge_opt.inputs.readers import to_nchw

    assert to_nchw(np.zeros((5, 8, 8, 3)), "auto", "x")[1] == "NHWC"
    assert to_nchw(np.zeros((5, 3, 8, 8)), "auto", "x")[1] == "NCHW"
    assert to_nchw(np.zeros((5, 8, 8)), "auto", "x")[0].shape == (5, 1, 8, 8)
    assert "ambiguous" in to_nchw(np.zeros((5, 3, 8, 3)), "auto", "x")[1]
    assert to_nchw(np.zeros((5, 3, 8, 3)), "NHWC", "x")[0].shape == (5, 3, 3, 8)


def test_image_folder_errors(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    for split, classes in (("train", ("a", "b")), ("val", ("a",))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / split / c / "0.png")
    _bad(tmp_path, capsys, {"dataset": "image_folder", "data_dir": str(root)}, "no class folder 'b'")
    shutil.rmtree(root)
    (root / "a").mkdir(parents=True)
    _bad(tmp_path, capsys, {"dataset": "image_folder", "data_dir": str(root)}, "holds no images")


def test_predict_refuses_nan_inputs(tmp_path, capsys):
    from edge_opt.core.runtime import predict

    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(EXAMPLES / "model.onnx", model / "model.onnx")
    from edge_opt.core.runtime import sha256_file

    (model / "manifest.json").write_text(
        json.dumps(
            {
                "model_file": "model.onnx",
                "sha256": sha256_file(model / "model.onnx"),
                "input": {"shape": ["batch", 1, 8, 8]},
                "normalisation": {"scale": 1 / 255, "mean": 0.0, "std": 1.0},
            }
        )
    )
    x = _npz()["x_val"][:5].transpose(0, 3, 1, 2).astype(np.float32)
    assert predict(model, x).shape == (5,)
    x[2, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--model", str(model), "--input", str(tmp_path / "x.npy")]) == 2
    assert "NaN or infinite values in 1 of 5 images" in capsys.readouterr().err


def test_dataset_callable_route(tmp_path):
    from edge_opt.config import config_from_dict
    from edge_opt.inputs.data import load_study_data

    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.rand(40, 1, 8, 8, generator=g)\n"
        "    y = torch.arange(40) % 4\n"
        "    return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])\n"
        "def broken():\n"
        "    return [1, 2, 3]\n"
    )
    cfg = config_from_dict({"dataset": "mydata:make", "config_dir": str(tmp_path), "batch_size": 16})
    data = load_study_data(cfg)
    assert (data.n_train, data.n_val, data.num_classes, data.input_shape) == (30, 10, 4, (1, 8, 8))
    assert "callable mydata:make" in data.source
    from edge_opt.inputs.data import DataError

    with pytest.raises(DataError, match="must return \\(train_dataset, val_dataset\\)"):
        load_study_data(config_from_dict({"dataset": "mydata:broken", "config_dir": str(tmp_path)}))
    with pytest.raises(DataError, match="'nosuchmod'"):
        load_study_data(config_from_dict({"dataset": "nosuchmod:make", "config_dir": str(tmp_path)}))


def test_calibration_data_path_feeds_int8_calibration(tmp_path):
    from edge_opt.config import config_from_dict
    from edge_opt.inputs.data import load_study_data

    z = _npz()
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=z["x_val"][:20])
    cfg = config_from_dict(
        {**NPZ, "calibration_data_path": str(calib), "batch_size": 8, "model": {"onnx": str(EXAMPLES / "model.onnx")}}
    )
    data = load_study_data(cfg)
    batches = data.calibration_batches(10)
    assert data.calibration_source == "calibration_data_path" and sum(len(b) for b in batches) == 20
    expected = torch.from_numpy(z["x_val"][:8].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    torch.testing.assert_close(batches[0], expected)  # scale 1/255, no mean/std for a trained model
    np.savez(tmp_path / "v.npz", x_val=z["x_val"][:16], y_val=z["y_val"][:16])
    val_only = load_study_data(
        config_from_dict({"dataset": "npz", "data_path": str(tmp_path / "v.npz"), "model": {"onnx": "x.onnx"}})
    )
    assert val_only.train_loader is None and val_only.calibration_source.startswith("validation split")


def test_preprocess_per_channel_matches_predict_normalisation():
    from edge_opt.core.runtime import normalise
    from edge_opt.inputs.data import Preprocess

    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5)).astype(np.float32)
    pre = Preprocess(1 / 255, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    np.testing.assert_allclose(pre.apply(raw), normalise(raw, pre.as_dict()), rtol=1e-6)
    manual = (raw / 255 - np.array([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)) / np.array([0.2, 0.25, 0.3]).reshape(
        1, 3, 1, 1
    )
    np.testing.assert_allclose(pre.apply(raw), manual, rtol=1e-5, atol=1e-6)


def _factory_module(tmp_path: Path, name: str, body: str) -> dict:
    (tmp_path / f"{name}.py").write_text(
        "import sys\nfrom pathlib import Path\n\n"
        "def build(input_shape, num_classes):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    )
    return {"factory": f"{name}:build"}


@pytest.mark.parametrize(("body", "needle"), [("sys.exit(0)", "sys.exit(0)"), ("raise SystemExit(3)", "sys.exit(3)")])
def test_a_factory_that_ends_the_process_is_an_error_not_an_exit(tmp_path, capsys, body, needle):
    model = _factory_module(tmp_path, f"quitter_{body[:3]}", body)
    err = _bad(tmp_path, capsys, {**NPZ, "model": model, "config_dir": str(tmp_path)}, "'model.factory'", needle)
    assert "not end the process" in err


def test_the_factory_is_called_once_per_run(tmp_path):
    calls = tmp_path / "calls.txt"
    body = (
        f"with open({str(calls)!r}, 'a') as fh:\n    fh.write('x')\n"
        "import tinynet\nreturn tinynet.build(input_shape, num_classes, width=4)"
    )
    model = _factory_module(tmp_path, "counted", body)
    sys.path.insert(0, str(EXAMPLES))
    try:
        cfg = load_study_config(
            _write(tmp_path, {**NPZ, "model": model, "config_dir": str(tmp_path), "epochs": 1, "val_subset": 64}),
            {
                **TINY,
                "output_dir": str(tmp_path / "out"),
                "precisions": ["fp32"],
                "backends": ["onnxruntime"],
                "pruning_levels": [0.0, 0.5],
                "train_subset": 128,
            },
        )
        run_study(cfg)
        assert calls.read_text() == "x"  # not once more on the meta device, nor for training, nor per level
        before = run_study(cfg).summary  # a resumed run (baseline checkpoint reused) builds it once too
    finally:
        sys.path.remove(str(EXAMPLES))
    assert calls.read_text() == "xx" and before


def test_weights_of_other_shapes_name_each_tensor_and_both_shapes(tmp_path, capsys):
    state = torch.load(EXAMPLES / "weights.pt", weights_only=True)
    bad = tmp_path / "w.pt"
    torch.save({k: torch.zeros(*(2 * d for d in v.shape)) if v.ndim else v for k, v in state.items()}, bad)
    err = _bad(
        tmp_path,
        capsys,
        {**NPZ, "model": {"factory": "tinynet:build", "weights": str(bad)}, "config_dir": str(EXAMPLES)},
        "'model.weights'",
        "another shape",
        f"stem.0.weight: file {tuple(2 * d for d in state['stem.0.weight'].shape)}, "
        f"model {tuple(state['stem.0.weight'].shape)}",
    )
    assert "Error(s) in loading" not in err


def test_a_pickled_weights_file_is_refused_without_advising_weights_only_false(tmp_path, capsys):
    bad = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, bad)  # a whole module: pickled classes, not a state dict
    err = _bad(
        tmp_path,
        capsys,
        {**NPZ, "model": {"factory": "tinynet:build", "weights": str(bad)}, "config_dir": str(EXAMPLES)},
        "'model.weights'",
        "never runs pickled code",
        "state_dict()",
    )
    assert "weights_only=False" not in err
