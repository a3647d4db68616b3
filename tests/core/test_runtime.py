"""``edge-opt predict`` on a small hand-made artifact: bad labels, empty files and bad manifests are one clean error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from edge_opt.cli import main
from edge_opt.core.runtime import ArtifactError, load_manifest, predict, sha256_file

ONNX = ROOT / "examples" / "bring_your_own" / "model.onnx"  # (N, 1, 8, 8) → 10 logits
CLASSES = 10


@pytest.fixture
def artifact(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(ONNX, model / "model.onnx")
    manifest = {
        "model_file": "model.onnx",
        "sha256": sha256_file(model / "model.onnx"),
        "input": {"shape": ["batch", 1, 8, 8]},
        "normalisation": {"scale": 1.0, "mean": 0.0, "std": 1.0},
    }
    (model / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32))
    return model


def _predict(artifact: Path, *extra: str, inputs: Path | None = None) -> list[str]:
    return ["predict", "--model", str(artifact), "--input", str(inputs or artifact.parent / "x.npy"), *extra]


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and "Traceback" not in captured.err and len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_good_labels_give_the_accuracy(artifact, capsys):
    ids = predict(artifact, np.load(artifact.parent / "x.npy"))
    for dtype in (np.int64, np.uint8, np.float32):  # integral floats are class ids too
        np.save(artifact.parent / "y.npy", ids.astype(dtype))
        assert main(_predict(artifact, "--labels", str(artifact.parent / "y.npy"))) == 0
        captured = capsys.readouterr()
        assert captured.out.split() == [str(i) for i in ids] and "accuracy: 1.000000" in captured.err


@pytest.mark.parametrize(
    "labels,needle",
    [
        (np.array([0, 1, 2, 10, 3, 12]), "10, 12"),  # ≥ the model's 10 outputs
        (np.array([0, 1, 2, -1, 3, 4]), "-1"),
        (np.array([0.0, 1.5, 2.0, 3.0, 4.0, 5.0]), "1.5"),  # fractional
        (np.array([0.0, np.nan, 2.0, 3.0, 4.0, 5.0]), "nan"),
    ],
)
def test_labels_outside_the_models_classes_or_fractional_exit_2(artifact, capsys, labels, needle):
    y = artifact.parent / "y.npy"
    np.save(y, labels)
    assert main(_predict(artifact, "--labels", str(y))) == 2
    line = _one_error(capsys)
    assert str(y) in line and needle in line and f"[0, {CLASSES})" in line and "integer" in line


def test_labels_of_the_wrong_shape_exit_2(artifact, capsys):
    y = artifact.parent / "y.npy"
    np.save(y, np.zeros(5, dtype=np.int64))
    assert main(_predict(artifact, "--labels", str(y))) == 2
    line = _one_error(capsys)
    assert str(y) in line and "6 labels" in line and "(5,)" in line


def test_labels_checked_by_the_python_api_too(artifact):
    x = np.load(artifact.parent / "x.npy")
    with pytest.raises(ArtifactError, match=r"integer class ids in \[0, 10\)"):
        predict(artifact, x, labels=np.full(6, 10))
    assert predict(artifact, x, labels=np.zeros(6, dtype=np.int64)).shape == (6,)


@pytest.mark.parametrize("flag", ["--input", "--labels"])
def test_an_empty_file_exits_2_naming_it(artifact, capsys, flag):
    empty = artifact.parent / "empty.npy"
    empty.write_bytes(b"")
    args = _predict(artifact, "--labels", str(empty)) if flag == "--labels" else _predict(artifact, inputs=empty)
    assert main(args) == 2
    line = _one_error(capsys)
    assert f"'{flag}'" in line and str(empty) in line and "empty" in line


def test_a_file_that_is_not_npy_exits_2_naming_it(artifact, capsys):
    junk = artifact.parent / "junk.npy"
    junk.write_text("not an array\n")
    assert main(_predict(artifact, inputs=junk)) == 2
    line = _one_error(capsys)
    assert "'--input'" in line and str(junk) in line


def _edit(artifact: Path, norm: dict) -> None:
    m = json.loads((artifact / "manifest.json").read_text())
    m["normalisation"] = norm
    (artifact / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "norm,needles",
    [
        ({"mean": 0.0, "std": [0.5, 0.5, 0.5]}, ["'normalisation.std'", "3 values", "1 input channel"]),
        ({"mean": [0.1, 0.2], "std": 1.0}, ["'normalisation.mean'", "2 values", "1 input channel"]),
        ({"mean": 0.0, "std": [0.0]}, ["'normalisation.std'", "positive"]),
        ({"mean": 0.0, "std": -1.0}, ["'normalisation.std'", "positive"]),
        ({"mean": 0.0, "std": float("inf")}, ["'normalisation.std'", "finite"]),
        ({"mean": 0.0, "std": float("nan")}, ["'normalisation.std'", "finite"]),
        ({"mean": 0.0, "std": 1.0, "scale": [1.0] * 8}, ["'normalisation.scale'", "a positive number"]),  # not per W
    ],
)
def test_bad_normalisation_in_the_manifest_exit_2(artifact, capsys, norm, needles):
    _edit(artifact, norm)
    assert main(_predict(artifact)) == 2
    line = _one_error(capsys)
    assert all(n in line for n in needles), line


def test_per_channel_statistics_of_the_channel_count_are_accepted(artifact):
    _edit(artifact, {"mean": [0.1], "std": [0.5]})
    assert load_manifest(artifact)["normalisation"]["std"] == [0.5]
    assert predict(artifact, np.load(artifact.parent / "x.npy")).shape == (6,)


def test_predict_takes_the_model_file_of_an_artifact_too(artifact, capsys):
    x = np.load(artifact.parent / "x.npy")
    assert (predict(artifact / "model.onnx", x) == predict(artifact, x)).all()
    np.save(artifact / "other.npy", x)
    assert main(_predict(artifact / "other.npy", inputs=artifact.parent / "x.npy")) == 2
    line = _one_error(capsys)
    assert "is not the model file of the artifact" in line and "'model.onnx'" in line


def _files(artifact: Path, files) -> None:
    m = json.loads((artifact / "manifest.json").read_text())
    m["files"] = files
    (artifact / "manifest.json").write_text(json.dumps(m))


def test_every_file_the_manifest_lists_is_checked_by_size_and_sha256(artifact, capsys):
    onnx_file = artifact / "model.onnx"
    model = {"path": "model.onnx", "sha256": sha256_file(onnx_file), "bytes": onnx_file.stat().st_size}
    (artifact / "extra.bin").write_bytes(b"12345")
    extra = {"path": "extra.bin", "sha256": sha256_file(artifact / "extra.bin"), "bytes": 5}
    _files(artifact, [model, extra])
    assert load_manifest(artifact)["files"][1] == extra
    _files(artifact, [model, {**extra, "bytes": 6}])
    with pytest.raises(ArtifactError, match=r"extra\.bin' holds 5 bytes, the manifest says 6"):
        load_manifest(artifact)
    _files(artifact, [model, {**extra, "path": "gone.bin"}])
    assert main(_predict(artifact)) == 2
    assert "gone.bin' named in the manifest is missing" in _one_error(capsys)
    _files(artifact, [model, {**extra, "path": "../x.npy"}])
    with pytest.raises(ArtifactError, match="'files' must name a file inside"):
        load_manifest(artifact)
    _files(artifact, [["model.onnx"]])
    with pytest.raises(ArtifactError, match=r"'files' must list the model's files as \{path, sha256, bytes\}"):
        load_manifest(artifact)
