"""Targets of any shape in the data stage: masks, 0/1 labels, regression values, and no labels at all for a
label-free metric; class-id checks kept where the metric reads class ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ROOT
from edge_opt.config import InputSettings, ModelConfig
from edge_opt.inputs import (
    DataError,
    ModelSourceError,
    check_model_fits,
    load_model_source,
    load_study_data,
    read_npz,
)

SEG = ROOT / "examples" / "tasks" / "segmentation"


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _images(n, side=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, side, side), dtype=np.uint8)


def _settings(path, **over) -> InputSettings:
    return InputSettings(dataset="npz", data_path=path, model=ModelConfig(onnx=str(SEG / "model.onnx")), **over)


def test_masks_are_read_as_targets_of_their_shape(tmp_path):
    masks = np.random.default_rng(1).integers(0, 3, (12, 8, 8)).astype(np.uint8)
    path = _npz(tmp_path / "seg.npz", x_train=_images(4), y_train=masks[:4], x_val=_images(12), y_val=masks)
    with pytest.raises(DataError, match="1-D array of class ids"):  # the default still reads class ids only
        read_npz(path)
    raw = read_npz(path, targets="any")
    assert raw.targets == "any" and raw.num_classes == 0
    assert raw.val_labels is not None and raw.val_labels.dtype == np.int64 and raw.val_labels.shape == (12, 8, 8)
    assert np.array_equal(raw.val_labels, masks) and raw.labels.shape == (4, 8, 8)


def test_loaders_carry_the_targets_as_given(tmp_path):
    masks = np.random.default_rng(1).integers(0, 3, (12, 8, 8))
    path = _npz(tmp_path / "seg.npz", x_val=_images(12), y_val=masks)
    data = load_study_data(_settings(path, batch_size=5), targets="any")
    ys = [y for _, y in data.val_loader]
    assert [tuple(y.shape) for y in ys] == [(5, 8, 8), (5, 8, 8), (2, 8, 8)] and ys[0].dtype == torch.int64
    assert np.array_equal(torch.cat(ys).numpy(), masks) and np.array_equal(data.val_targets, masks)
    assert data.targets == "any" and not data.has_class_ids


def test_float_and_boolean_targets(tmp_path):
    values = np.random.default_rng(2).standard_normal((10, 3)).astype(np.float32)
    raw = read_npz(_npz(tmp_path / "r.npz", x=_images(10), y=values), targets="any")
    assert raw.labels.dtype == np.float32 and np.array_equal(raw.labels, values) and raw.num_classes == 0
    flags = np.arange(10) % 3 == 0
    path = _npz(tmp_path / "b.npz", x_val=_images(10), y_val=flags)
    data = load_study_data(_settings(path), targets="any")
    assert data.val_labels.dtype == np.int64 and data.num_classes == 2 and data.has_class_ids  # 0/1 labels
    assert np.array_equal(data.val_targets, flags.astype(np.int64))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0.5, np.nan, 1.0, 2.0]), "NaN or infinite"),
        (np.array(["a", "b", "c", "d"]), "must hold numbers"),
        (np.zeros((4, 0)), "one target per sample"),
    ],
)
def test_bad_targets_are_refused(tmp_path, y, match):
    with pytest.raises(DataError, match=match):
        read_npz(_npz(tmp_path / "bad.npz", x=_images(4), y=y), targets="any")


def test_train_and_val_targets_must_agree_in_shape(tmp_path):
    path = _npz(
        tmp_path / "t.npz", x_train=_images(4), y_train=np.zeros((4, 8, 8)), x_val=_images(4), y_val=np.zeros(4)
    )
    with pytest.raises(DataError, match="different shapes per sample"):
        read_npz(path, targets="any")


def test_labels_may_be_left_out_only_for_a_label_free_metric(tmp_path):
    path = _npz(tmp_path / "u.npz", x_train=_images(6), x_val=_images(10))
    with pytest.raises(DataError, match="they may be left out only for a label-free metric"):
        read_npz(path)
    with pytest.raises(DataError, match="must hold arrays"):
        read_npz(path, targets="any")
    data = load_study_data(_settings(path, batch_size=4), targets="none")
    assert data.targets == "none" and data.val_targets is None and not data.has_class_ids
    assert data.n_train == 6 and data.n_val == 10 and data.num_classes == 0
    assert [tuple(y.shape) for _, y in data.val_loader] == [(4, 0), (4, 0), (2, 0)]
    x_only = read_npz(_npz(tmp_path / "x.npz", x=_images(8)), targets="none")
    assert x_only.targets == "none" and x_only.labels.shape == (8, 0)


def test_labels_given_to_a_label_free_metric_are_kept(tmp_path):
    path = _npz(tmp_path / "l.npz", x_val=_images(6), y_val=np.array([0, 1, 2, 0, 1, 2]))
    raw = read_npz(path, targets="none")
    assert raw.targets == "any" and raw.num_classes == 3 and np.array_equal(raw.val_labels, [0, 1, 2, 0, 1, 2])


def test_a_model_the_study_trains_needs_class_ids(tmp_path):
    masks = np.zeros((8, 8, 8), np.int64)
    path = _npz(tmp_path / "seg.npz", x_train=_images(8), y_train=masks, x_val=_images(8), y_val=masks)
    registry = InputSettings(dataset="npz", data_path=path)  # small_cnn: trained by the study
    with pytest.raises(DataError, match="training targets are not class ids"):
        load_study_data(registry, targets="any")
    ids = _npz(tmp_path / "ids.npz", x_train=_images(8), y_train=np.arange(8) % 2, x_val=_images(4))
    data = load_study_data(InputSettings(dataset="npz", data_path=ids), targets="none")
    assert data.num_classes == 2 and data.train_loader is not None and data.val_targets is None
    with pytest.raises(ValueError, match="targets must be one of"):
        load_study_data(registry, targets="masks")


def test_model_fit_checks_class_scores_only_when_the_metric_reads_them():
    settings = InputSettings(
        dataset="npz", data_path=str(SEG / "data.npz"), model=ModelConfig(onnx=str(SEG / "model.onnx"))
    )
    data = load_study_data(settings, targets="any")
    assert data.val_labels.shape == (256, 16, 16) and data.input_shape == (1, 16, 16)
    source = load_model_source(settings, data.input_shape, data.num_classes, None, seed=0)
    sample = next(iter(data.val_loader))[0][:2]
    with pytest.raises(ModelSourceError, match=r"must output \(N, classes\) logits"):
        check_model_fits(source, data.input_shape, data.num_classes, sample)
    assert check_model_fits(source, data.input_shape, data.num_classes, sample, class_scores=False) == 0
