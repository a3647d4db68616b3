"""``edge_opt.optimize``: the whole study from a notebook, on a model and data already in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ConfigError, config_from_dict
from .data import DataError, RawDataset
from .pipeline import StudyResult, run_study
from .readers import dataset_arrays, images_from_array, labels_from_array

__all__ = ["optimize"]

IN_MEMORY = "python"


def _model_key(model: Any) -> dict[str, Any]:
    if isinstance(model, nn.Module):
        return {"python": type(model).__name__}
    if isinstance(model, (str, Path)):
        suffix = Path(model).suffix.lower()
        if suffix == ".onnx":
            return {"onnx": str(model)}
        if suffix in (".pt2", ".ep"):
            return {"exported": str(model)}
    raise ConfigError([f"The 'model' parameter must be a torch.nn.Module, an .onnx path or a .pt2 path. Got "
                       f"{model!r} instead."])


def _numpy(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def _pair(data: Any, what: str, layout: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(raw NCHW images, labels, scale) of ``(x, y)`` arrays or a dataset of (image, label) items."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (int, float)):
        x, y = _numpy(data[0]), _numpy(data[1])
        images, _, scale = images_from_array(x, layout, f"The {what} images", None)
        labels = labels_from_array(y, f"The {what} labels")
    else:
        images, labels = dataset_arrays(data, f"The {what} dataset")
        scale = 1.0
    if len(images) != len(labels):
        raise DataError(f"The {what} data has {len(images)} images and {len(labels)} labels.")
    return images, labels, scale


def _raw(val_data: Any, train_data: Any, layout: str) -> RawDataset:
    xv, yv, scale = _pair(val_data, "val_data", layout)
    if train_data is not None:
        xt, yt, _ = _pair(train_data, "train_data", layout)
    else:
        xt, yt = np.zeros((0, *xv.shape[1:]), np.float32), np.zeros(0, np.int64)
    classes = int(max(int(yv.max()), int(yt.max()) if len(yt) else 0) + 1)
    return RawDataset(xt, yt, classes, "in-memory arrays (edge_opt.optimize)", val_images=xv, val_labels=yv,
                      default_scale=scale)


def _calibration(data: Any, layout: str) -> np.ndarray | None:
    if data is None:
        return None
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return images_from_array(_numpy(data), layout, "The calibration_data images", None)[0]
    return _pair(data, "calibration_data", layout)[0]


def optimize(model: nn.Module | str | Path, val_data: Any, train_data: Any = None, calibration_data: Any = None,
             output_dir: str | Path = "outputs", **config_overrides: Any) -> StudyResult:
    """Run a study on your model and data and return its typed result.

    Args:
        model: a trained ``torch.nn.Module``, or the path of an ``.onnx`` file or a ``.pt2`` exported program.
        val_data: ``(x, y)`` arrays/tensors (images NCHW, NHWC or NHW, uint8 or float; integer labels) or a
            dataset of ``(image, label)`` items — what accuracy is measured on.
        train_data: the same for fine-tuning after pruning (optional; without it pruned models are not
            fine-tuned, with a warning).
        calibration_data: images (or a dataset) for int8 calibration; default the training data, else val_data.
        output_dir: where every output goes (the same files as ``edge-opt run``).
        **config_overrides: any study config key (``pruning_levels=[0, 0.5]``, ``backends=[...]``,
            ``preprocess={"scale": 1/255}`` …).
    Returns:
        The ``StudyResult``: ``recommendation``, ``frontier``, ``sweep`` (the table), ``summary``, ``paths``.
    Raises:
        ConfigError: a bad key or value (one message per problem). DataError: data that does not fit.
    """
    layout = str(config_overrides.get("layout", "auto"))
    cfg = config_from_dict({"dataset": IN_MEMORY, "output_dir": str(output_dir), **config_overrides,
                            "model": _model_key(model)})
    raw = _raw(val_data, train_data, layout)
    return run_study(cfg, module=model if isinstance(model, nn.Module) else None, raw_data=raw,
                     calibration_images=_calibration(calibration_data, layout), command=["edge_opt.optimize"])
