"""The detection example (examples/tasks/detection/): a grid detector whose one output decode.py turns into boxes,
scored by map50 against boxes stored in an npz as (N, M, 5) rows. Its data loads as the metric reads it, and a
short study's fp32 mAP@0.5 on every runtime that takes the model equals an independent computation: a plain ONNX
Runtime session, the example's decode and pycocotools' COCOeval, without edge_opt."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_tasks import TINY

from conftest import ROOT
from edge_opt.config import InputSettings
from edge_opt.inputs import load_study_data
from edge_opt.pipeline import load_study_config, run_study

FOLDER = ROOT / "examples" / "tasks" / "detection"
CONFIG = FOLDER / "detection.yaml"
BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.fixture(scope="module")
def decode():
    sys.path.insert(0, str(FOLDER))
    try:
        from decode import decode as fn
    finally:
        sys.path.remove(str(FOLDER))
    return fn


def _coco(images: int, anns: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(1, images + 1)],
        "categories": [{"id": 0}, {"id": 1}],
        "annotations": [{**a, "id": j} for j, a in enumerate(anns, 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _ann(image: int, label, box, score=None) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    ann = {"image_id": image, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1]}
    return ann | {"area": (x2 - x1) * (y2 - y1), "iscrowd": 0} | ({} if score is None else {"score": float(score)})


def expected_map50(decode) -> float:
    """mAP@0.5 of the fp32 model on x_val, computed here: ONNX Runtime, decode, COCOeval (bbox, IoU 0.5)."""
    data = np.load(FOLDER / "data.npz")
    session = ort.InferenceSession(str(FOLDER / "model.onnx"), providers=["CPUExecutionProvider"])
    x = data["x_val"].astype(np.float32) * np.float32(1 / 255)
    detections = decode([session.run(None, {"image": x})[0]])
    gt = [_ann(i, r[0], r[1:]) for i, rows in enumerate(data["y_val"], 1) for r in rows if r[0] >= 0]
    dt = [_ann(i, *d) for i, det in enumerate(detections, 1) for d in zip(det["labels"], det["boxes"], det["scores"])]
    evaluation = COCOeval(_coco(len(x), gt), _coco(len(x), dt), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


def test_detection_data_loads_as_map50_reads_it():
    cfg = load_study_config(CONFIG)
    data = load_study_data(cfg.part(InputSettings), targets="any")
    assert data.n_train == 128 and data.n_val == 256 and data.input_shape == (1, 32, 32)
    y = data.val_targets
    assert y is not None and y.shape == (256, 2, 5) and not data.has_class_ids
    objects = y[y[:, :, 0] >= 0]
    assert set(objects[:, 0].tolist()) == {0.0, 1.0} and np.all(objects[:, 3:] > objects[:, 1:3])
    assert np.all(y[:, 0, 0] >= 0) and 0 < np.sum(y[:, 1, 0] < 0) < 256  # one or two objects, -1 rows pad
    assert np.all(y[y[:, :, 0] < 0] == -1)


def test_detection_files_are_small_and_the_model_learned(decode):
    assert all(f.stat().st_size < 1_000_000 for f in FOLDER.iterdir() if f.is_file())
    assert expected_map50(decode) > 0.9


def test_decode_keeps_the_best_of_overlapping_boxes_per_class(decode):
    raw = np.full((1, 16, 7), -8.0)
    raw[0, [5, 6], :5] = [[4.0, 3.0, 0.0, -1.0, -1.0], [2.0, -3.0, 0.0, -1.0, -1.0]]  # neighbours, same box
    raw[0, [5, 6], 5] = 5.0  # both class 0: the weaker is suppressed
    (det,) = decode([raw])
    class_prob = 1 / (1 + np.exp(-13.0))  # softmax of [5, -8]
    assert det["labels"].tolist() == [0] and det["scores"][0] == pytest.approx(class_prob / (1 + np.exp(-4.0)))
    raw[0, 6, 5:] = [0.0, 5.0]  # class 1 now: kept beside it
    (det,) = decode([raw])
    assert sorted(det["labels"].tolist()) == [0, 1] and det["boxes"].shape == (2, 4)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "out"
    cfg = load_study_config(CONFIG, {**TINY, "output_dir": str(out), "backends": BACKENDS})
    return cfg, run_study(cfg)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_study_scores_fp32_as_an_independent_computation(study, decode, backend):
    cfg, res = study
    df = res.sweep
    rows = df[(df["backend"] == backend) & (df["pruning_level"] == 0.0)].set_index("precision")
    assert sorted(rows.index) == ["fp32", "int8"] and rows["error"].isna().all()
    assert rows.loc["fp32", "metric"] == pytest.approx(expected_map50(decode), abs=1e-6)
    assert (rows["metric_name"] == "mAP@0.5").all() and rows["accuracy"].isna().all()
    assert rows.loc["int8", "kernel_precision"] == "int8" and rows.loc["int8", "metric"] > 0.9  # measured
    summary = json.loads((res.output_dir / "summary.json").read_text())
    assert summary["metric"]["name"] == "map50" and summary["metric"]["baseline"] == pytest.approx(
        rows.loc["fp32", "metric"]
    )


def test_map50_reads_npz_box_rows_as_per_image_mappings():
    """The (N, M, 5) rows an npz holds score as the per-image mappings they encode; -1 rows are no object."""
    from edge_opt.measure import MetricError, get_metric

    rows = np.array([[[0, 1, 1, 9, 9], [1, 12, 12, 20, 22]], [[1, 3, 3, 8, 8], [-1, -1, -1, -1, -1]]], np.float32)
    mappings = [
        {"boxes": np.array([[1, 1, 9, 9], [12, 12, 20, 22]]), "labels": np.array([0, 1])},
        {"boxes": np.array([[3, 3, 8, 8]]), "labels": np.array([1])},
    ]
    found = [  # image 0: both objects; image 1: its object missed, one false positive
        {"boxes": np.array([[1, 1, 9, 10], [12, 12, 20, 22]]), "scores": np.array([0.9, 0.8]), "labels": [0, 1]},
        {"boxes": np.array([[20, 20, 30, 30]]), "scores": np.array([0.7]), "labels": [1]},
    ]
    for name in ("map50", "map50_95"):
        metric = get_metric(name)
        assert metric(found, rows) == pytest.approx(metric(found, mappings), abs=1e-12)
    assert get_metric("map50")(found, rows) == pytest.approx((1.0 + 0.5) / 2, abs=0.01)  # class 1: 1 of 2 found
    with pytest.raises(MetricError, match=r"\(N, M, 5\)"):
        get_metric("map50")(found, rows[:, :, :4])
