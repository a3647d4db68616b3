"""How a variant is scored: the metric registry (``METRICS``), its built-ins and the user's metric callables.

A ``Metric`` turns a model's outputs on the evaluation split (one array per model output, all samples; for the
detection metrics, one ``Detections`` mapping per image, what a ``postprocess`` returns) and the targets into one
float, with its direction. ``agreement`` and ``sqnr_db`` need no labels: they compare the outputs with the fp32
parent's (``reference``). ``check_metric_value`` guards the value a metric gives on the fp32 baseline and
``metric_drop`` is the drop of a variant from the baseline in the metric's direction (positive = worse).

The formats and the edge cases of every built-in are in docs/scoring.md.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from ..core import Registry, call_user_code, class_scores, import_callable

__all__ = [
    "METRICS",
    "SQNR_CAP_DB",
    "SEGMENTATION_IGNORE_INDEX",
    "DetectionTargets",
    "Detections",
    "Metric",
    "MetricError",
    "check_metric_value",
    "get_metric",
    "list_metrics",
    "metric_drop",
    "register_metric",
    "user_metric",
]

MetricFn = Callable[[Sequence[Any], Any, Sequence[Any] | None], float]

SQNR_CAP_DB = 100.0
"""``sqnr_db`` of outputs equal to the reference (no noise at all) and the most it reports: above 100 dB the
difference is float32 round-off (a reordered sum gives 120-150 dB), not quantization noise."""

SEGMENTATION_IGNORE_INDEX = 255
"""Target pixels with this label are void for ``miou`` (the VOC / Cityscapes convention): not counted at all."""


class MetricError(ValueError):
    """A metric cannot score what it was given (outputs or targets of the wrong form, a non-scalar value)."""


class Detections(TypedDict):
    """One image's post-processed detections: ``boxes`` (K, 4) float xyxy in pixels, ``scores`` (K,) float,
    ``labels`` (K,) integer class ids. K may be 0 (``boxes`` of shape (0, 4) or empty)."""

    boxes: Any
    scores: Any
    labels: Any


class DetectionTargets(TypedDict):
    """One image's ground truth: ``boxes`` (M, 4) float xyxy in pixels and ``labels`` (M,) integer class ids."""

    boxes: Any
    labels: Any


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A way to score a variant: one float from the outputs, the targets and the fp32 parent's outputs.

    Attributes:
        name: the key ``metric:`` selects it by (no ``:``, which marks a ``package.module:function``).
        display_name: how tables and plot axes label it.
        higher_is_better: the direction; ``metric_drop`` and selection follow it.
        fn: ``fn(outputs, targets, reference) -> float``.
        needs_labels: False for the label-free metrics (``targets`` may be None).
        needs_reference: True when ``fn`` reads the fp32 parent's outputs.
        description: one line for listings.
    """

    name: str
    display_name: str
    higher_is_better: bool
    fn: MetricFn
    needs_labels: bool = True
    needs_reference: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name.strip()
            or ":" in self.name
            or self.name != self.name.strip()
        ):
            raise MetricError(f"A metric name must be a non-empty word without ':' or edge spaces; got {self.name!r}.")
        if not isinstance(self.display_name, str) or not self.display_name.strip():
            raise MetricError(f"The metric {self.name!r} needs a non-empty display name; got {self.display_name!r}.")
        if not isinstance(self.higher_is_better, bool):
            raise MetricError(f"The metric {self.name!r}: higher_is_better must be true or false.")
        if not callable(self.fn):
            raise MetricError(f"The metric {self.name!r}: fn must be callable; got {type(self.fn).__name__}.")

    def __call__(self, outputs: Sequence[Any], targets: Any = None, reference: Sequence[Any] | None = None) -> float:
        """Score ``outputs``; a metric that needs labels (or the reference) and has none is an error.

        Raises:
            MetricError: targets or reference missing, or outputs/targets of a form the metric does not read.
        """
        if self.needs_labels and targets is None:
            raise MetricError(f"The metric {self.name!r} needs targets (labels) and the data gives none.")
        if self.needs_reference and reference is None:
            raise MetricError(f"The metric {self.name!r} compares with the fp32 parent's outputs; none were given.")
        return self.fn(outputs, targets, reference)


METRICS: Registry[Metric] = Registry("metric", "metric")


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (a duplicate name is an error); returns it."""
    if not isinstance(metric, Metric):
        raise MetricError(f"register_metric takes a Metric; got {type(metric).__name__}.")
    return METRICS.register(metric.name)(metric)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``.

    Raises:
        UnknownNameError: naming the value given and the known metrics.
    """
    return METRICS.get(name)


def list_metrics() -> list[str]:
    """Names of the registered metrics, sorted."""
    return METRICS.names()


# -- values ------------------------------------------------------------------------------------------------------


def _scalar(value: Any, name: str) -> float:
    """``value`` as a float: a real number or a 0-d array/tensor; anything else (a bool, an array) is an error."""
    if isinstance(value, bool | np.bool_):
        raise MetricError(f"The metric {name!r} returned a bool ({value!r}); it must return a number.")
    if isinstance(value, numbers.Real):
        return float(value)
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) == () and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return float(item)
    what = type(value).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
    raise MetricError(f"The metric {name!r} returned {what}; it must return one real number (a scalar).")


def check_metric_value(value: Any, metric: Metric) -> float:
    """``value`` as a finite float, or an error naming the metric and what it returned.

    Run on the fp32 baseline before any variant is built, so a metric that cannot score this model fails first.

    Raises:
        MetricError: ``value`` is not a real scalar (an array, a bool, a string) or is NaN / infinite.
    """
    out = _scalar(value, metric.name)
    if not math.isfinite(out):
        raise MetricError(f"The metric {metric.name!r} returned {out!r}; it must return a finite number.")
    return out


def metric_drop(baseline: float, value: float, metric: Metric, relative: bool = False) -> float:
    """How much worse ``value`` is than ``baseline`` in the metric's direction (positive = worse, negative = better).

    ``relative``: the drop as a fraction of ``|baseline|`` (0.01 = 1 %). A NaN value gives a NaN drop, which meets
    no budget.

    Raises:
        MetricError: a relative drop from a baseline of 0 (undefined).
    """
    drop = float(baseline) - float(value) if metric.higher_is_better else float(value) - float(baseline)
    if relative:
        if baseline == 0:
            raise MetricError(f"A relative drop of the metric {metric.name!r} is undefined: its baseline is 0.")
        drop /= abs(float(baseline))
    return drop


# -- user metrics --------------------------------------------------------------------------------------------------


def user_metric(
    spec: str | Callable[..., Any],
    higher_is_better: bool,
    name: str | None = None,
    search_dirs: Sequence[str | Path | None] = (),
    *,
    display_name: str | None = None,
    needs_labels: bool = True,
    needs_reference: bool = False,
) -> Metric:
    """A ``Metric`` from the user's ``package.module:function`` or a plain Python function.

    The function is called as ``fn(outputs, targets)`` (``fn(outputs, targets, reference)`` with
    ``needs_reference``) and returns one real number. Whatever escapes it (an exception, ``sys.exit``) becomes a
    ``UserCodeError`` naming it; a non-scalar return is a ``MetricError``.

    Args:
        spec: ``"package.module:function"`` (imported from ``search_dirs`` first, then ``sys.path``) or a callable.
        name: the metric's name; defaults to the function's name. ``display_name`` defaults to ``name``.

    Raises:
        CallableImportError: the module does not import or has no such callable.
        MetricError: ``spec`` is neither, or ``higher_is_better`` is not a bool.
    """
    if not isinstance(higher_is_better, bool):
        raise MetricError(f"The metric {spec!r} needs higher_is_better: true or false; got {higher_is_better!r}.")
    if isinstance(spec, str):
        if ":" not in spec:
            raise MetricError(f"The 'metric' callable must be written package.module:function; got {spec!r}.")
        fn = import_callable(spec, "metric", search_dirs)
        what = f"The 'metric' callable {spec!r}"
        default = spec.rpartition(":")[2]
    elif callable(spec):
        fn = spec
        default = getattr(spec, "__name__", type(spec).__name__)
        what = f"The metric function {default!r}"
    else:
        raise MetricError(f"A metric is a name, a package.module:function or a callable; got {type(spec).__name__}.")
    metric_name = name or default

    def score(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
        args = (outputs, targets, reference) if needs_reference else (outputs, targets)
        return _scalar(call_user_code(what, fn, *args), metric_name)

    return Metric(
        name=metric_name,
        display_name=display_name or metric_name,
        higher_is_better=higher_is_better,
        fn=score,
        needs_labels=needs_labels,
        needs_reference=needs_reference,
        description=f"user metric {spec if isinstance(spec, str) else default}",
    )


# -- reading outputs and targets -------------------------------------------------------------------------------


def _output(outputs: Sequence[Any], name: str, what: str = "outputs") -> np.ndarray:
    """The first model output as an array; ``outputs`` must be a list with one array per output."""
    if isinstance(outputs, np.ndarray) or not isinstance(outputs, Sequence) or isinstance(outputs, str):
        raise MetricError(
            f"The metric {name!r} reads {what} as a list with one array per model output; got {type(outputs).__name__}."
        )
    if len(outputs) == 0:
        raise MetricError(f"The metric {name!r} got no {what} (an empty list).")
    arr = np.asarray(outputs[0])
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise MetricError(f"The metric {name!r}: the first of the {what} is not a numeric array ({arr.dtype}).")
    return arr


def _int_array(values: Any, name: str, what: str) -> np.ndarray:
    """``values`` as int64; floats must hold whole numbers (class ids read from a float npz)."""
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise MetricError(f"The metric {name!r}: {what} must be integer class ids; got dtype {arr.dtype}.")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise MetricError(f"The metric {name!r}: {what} must be integer class ids; got non-integer values.")
    return arr.astype(np.int64)


def _labels(targets: Any, n: int, name: str) -> np.ndarray:
    """Per-sample integer targets of shape (N,) (a trailing axis of 1 is accepted)."""
    t = _int_array(targets, name, "the targets")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.shape[0] != n:
        raise MetricError(f"The metric {name!r} needs one target per sample, shape ({n},); got {t.shape}.")
    return t


# -- classification, segmentation, anomaly, regression -------------------------------------------------------


def _topk(outputs: Sequence[Any], targets: Any, k: int, name: str) -> float:
    """Share of samples whose target is among the ``k`` highest scores; ties go to the lower class index, so top-1
    is exactly ``argmax == target`` (the classifier's ``accuracy``). Caffe2-style (N, C, 1, 1) scores read as (N, C)."""
    logits = class_scores(_output(outputs, name))
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise MetricError(
            f"The metric {name!r} reads class scores of shape (N, C); the first output is {logits.shape}."
        )
    classes = logits.shape[1]
    if classes < max(k, 2):
        raise MetricError(
            f"The metric {name!r} needs at least {max(k, 2)} class scores; the first output has {classes}."
        )
    t = _labels(targets, logits.shape[0], name)
    if t.min() < 0 or t.max() >= classes:
        raise MetricError(f"The metric {name!r}: targets must lie in [0, {classes}); got {t.min()}..{t.max()}.")
    if k == 1:
        return float(np.mean(np.argmax(logits, axis=1) == t))
    best = np.argsort(-logits.astype(np.float64), axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(best == t[:, None], axis=1)))


def _top1(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    return _topk(outputs, targets, 1, "top1")


def _top5(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    return _topk(outputs, targets, 5, "top5")


def _class_maps(outputs: Sequence[Any], targets: Any) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(predicted class map, target map, classes or None): logits (N, C, ...) are reduced by argmax over C."""
    pred = _output(outputs, "miou")
    t = _int_array(targets, "miou", "the target masks")
    if pred.ndim == t.ndim + 1:
        classes: int | None = int(pred.shape[1])
        if pred.shape[1] > SEGMENTATION_IGNORE_INDEX:
            raise MetricError(
                f"The metric 'miou' reads target {SEGMENTATION_IGNORE_INDEX} as void; a model with {classes} classes "
                "needs a metric of its own."
            )
        pred = np.argmax(pred, axis=1)
    elif pred.ndim == t.ndim:
        classes = None
        pred = _int_array(pred, "miou", "a class-map output")
    else:
        raise MetricError(
            f"The metric 'miou' reads logits (N, C, H, W) or class maps (N, H, W) against masks (N, H, W); "
            f"got an output of shape {pred.shape} and targets of shape {t.shape}."
        )
    if pred.shape != t.shape or t.ndim < 2:
        raise MetricError(f"The metric 'miou': predicted maps {pred.shape} and target masks {t.shape} differ.")
    return pred, t, classes


def _miou(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    """Mean over classes of IoU = TP / (TP + FP + FN), accumulated over all pixels of all samples; a class absent from
    both prediction and target is not averaged; void target pixels (255) count for no class."""
    pred, t, classes = _class_maps(outputs, targets)
    valid = t != SEGMENTATION_IGNORE_INDEX
    p, y = pred[valid], t[valid]
    if y.size == 0:
        raise MetricError("The metric 'miou': every target pixel is void (255); there is nothing to score.")
    if classes is None:
        classes = int(max(p.max(), y.max())) + 1
    low = min(int(p.min()), int(y.min()))
    if low < 0 or y.max() >= classes:
        raise MetricError(
            f"The metric 'miou': class ids must lie in [0, {classes}) (or be {SEGMENTATION_IGNORE_INDEX}, void); "
            f"got {low}..{max(int(p.max()), int(y.max()))}."
        )
    confusion = np.bincount(y * classes + p, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


def _auc(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    """ROC AUC of anomaly scores (higher = more anomalous) against 0/1 labels (1 = anomaly), scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    scores = _output(outputs, "auc").astype(np.float64)
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise MetricError(f"The metric 'auc' reads one anomaly score per sample, (N,) or (N, 1); got {scores.shape}.")
    if not np.all(np.isfinite(scores)):
        raise MetricError(f"The metric 'auc': {int(np.sum(~np.isfinite(scores)))} anomaly scores are not finite.")
    y = _labels(targets, scores.shape[0], "auc")
    if not np.all((y == 0) | (y == 1)):
        raise MetricError(f"The metric 'auc' reads 0/1 labels (1 = anomaly); got values {sorted(set(y.tolist()))[:5]}.")
    if y.min() == y.max():
        raise MetricError(f"The metric 'auc' needs both normal (0) and anomalous (1) samples; every label is {y[0]}.")
    return float(roc_auc_score(y, scores))


def _regression_pair(outputs: Sequence[Any], targets: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and target, flattened; their shapes must match (up to axes of length 1)."""
    pred = _output(outputs, name).astype(np.float64)
    t = np.asarray(targets)
    if t.dtype == object or not np.issubdtype(t.dtype, np.number):
        raise MetricError(f"The metric {name!r} reads numeric targets; got dtype {t.dtype}.")
    if pred.shape != t.shape and np.squeeze(pred).shape != np.squeeze(t).shape:
        raise MetricError(f"The metric {name!r}: the first output {pred.shape} and the targets {t.shape} differ.")
    if pred.size == 0:
        raise MetricError(f"The metric {name!r} got no values.")
    return pred.ravel(), t.astype(np.float64).ravel()


def _mae(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    pred, t = _regression_pair(outputs, targets, "mae")
    return float(np.mean(np.abs(pred - t)))


def _rmse(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    pred, t = _regression_pair(outputs, targets, "rmse")
    return float(np.sqrt(np.mean((pred - t) ** 2)))


# -- label-free: against the fp32 parent -------------------------------------------------------------------------


def _agreement(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    """Share of positions where the first output's argmax over axis 1 (the classes) equals the reference's."""
    out = _output(outputs, "agreement")
    ref = _output(reference if reference is not None else [], "agreement", "reference outputs")
    if out.shape != ref.shape:
        raise MetricError(f"The metric 'agreement': the output {out.shape} and the reference {ref.shape} differ.")
    if out.ndim < 2 or out.shape[1] < 2 or out.shape[0] == 0:
        raise MetricError(
            f"The metric 'agreement' compares class scores (N, C, ...) with C ≥ 2; the first output is {out.shape} "
            "(sqnr_db compares outputs that are not class scores)."
        )
    return float(np.mean(np.argmax(out, axis=1) == np.argmax(ref, axis=1)))


def _sqnr_db(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    """10·log10(Σ ref² / Σ (ref − out)²) over every element of every output, capped at ``SQNR_CAP_DB``."""
    ref_list = reference if reference is not None else []
    _output(outputs, "sqnr_db")
    _output(ref_list, "sqnr_db", "reference outputs")
    if len(outputs) != len(ref_list):
        raise MetricError(f"The metric 'sqnr_db': {len(outputs)} outputs against {len(ref_list)} reference outputs.")
    signal = noise = 0.0
    for i, (o, r) in enumerate(zip(outputs, ref_list)):
        out, ref = np.asarray(o, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if out.shape != ref.shape:
            raise MetricError(f"The metric 'sqnr_db': output {i} is {out.shape}, its reference {ref.shape}.")
        signal += float(np.sum(ref * ref))
        noise += float(np.sum((ref - out) ** 2))
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        raise MetricError("The metric 'sqnr_db' is undefined: the reference outputs are all zero.")
    value = 10.0 * math.log10(signal / noise) if math.isfinite(noise) else math.nan
    return SQNR_CAP_DB if value > SQNR_CAP_DB else value


# -- detection: COCO mAP (pycocotools) ---------------------------------------------------------------------------


def _records(items: Any, name: str, what: str) -> Sequence[Mapping[str, Any]]:
    """``items`` as a list of per-image mappings, or an error saying what the detection metrics read."""
    hint = "a detector's raw outputs go through a postprocess that returns {boxes, scores, labels} per image"
    if isinstance(items, Mapping) or isinstance(items, str | np.ndarray) or not isinstance(items, Sequence):
        raise MetricError(
            f"The metric {name!r} reads {what} as a list with one mapping per image; got {type(items).__name__} "
            f"({hint})."
        )
    bad = [i for i, r in enumerate(items) if not isinstance(r, Mapping)]
    if bad:
        raise MetricError(
            f"The metric {name!r}: {what} item {bad[0]} is {type(items[bad[0]]).__name__}, not a mapping ({hint})."
        )
    return items


def _field(record: Mapping[str, Any], key: str, name: str, where: str) -> np.ndarray:
    if key not in record:
        raise MetricError(f"The metric {name!r}: {where} has no {key!r} (it has {sorted(map(str, record))}).")
    return np.asarray(record[key])


def _boxes(record: Mapping[str, Any], name: str, where: str) -> np.ndarray:
    boxes = _field(record, "boxes", name, where)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
        raise MetricError(f"The metric {name!r}: {where} boxes must be (K, 4) numbers xyxy; got {boxes.shape}.")
    boxes = boxes.astype(np.float64)
    if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise MetricError(f"The metric {name!r}: {where} boxes must be finite xyxy with x2 ≥ x1 and y2 ≥ y1.")
    return boxes


def _box_rows(targets: np.ndarray, name: str) -> list[DetectionTargets]:
    """Targets given as one array, (N, M, 5) rows ``[label, x1, y1, x2, y2]`` per image, padded with rows whose
    label is negative (the npz encoding: a list of mappings cannot be stored without pickles), as mappings."""
    if targets.ndim != 3 or targets.shape[2] != 5 or not np.issubdtype(targets.dtype, np.number):
        raise MetricError(
            f"The metric {name!r} reads targets as one mapping per image or as an array (N, M, 5) of rows "
            f"[label, x1, y1, x2, y2] (label < 0: padding); got an array of shape {targets.shape}."
        )
    rows = [image[image[:, 0] >= 0] for image in targets]
    return [DetectionTargets(boxes=r[:, 1:], labels=_int_array(r[:, 0], name, "the target labels")) for r in rows]


def _coco_annotations(record: Mapping[str, Any], image: int, name: str, where: str, scored: bool) -> list[dict]:
    """One image's boxes as COCO annotations (xywh), with scores for detections."""
    boxes = _boxes(record, name, where)
    labels = _int_array(_field(record, "labels", name, where), name, f"{where} labels").reshape(-1)
    scores = _field(record, "scores", name, where).astype(np.float64).reshape(-1) if scored else None
    if labels.shape[0] != boxes.shape[0] or (scores is not None and scores.shape[0] != boxes.shape[0]):
        raise MetricError(f"The metric {name!r}: {where} has {boxes.shape[0]} boxes but not as many labels/scores.")
    if scores is not None and not np.all(np.isfinite(scores)):
        raise MetricError(f"The metric {name!r}: {where} scores are not all finite.")
    anns = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ann = {"image_id": image, "category_id": int(labels[k]), "bbox": [x1, y1, x2 - x1, y2 - y1]}
        ann |= {"area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


def _coco_map(outputs: Any, targets: Any, name: str) -> tuple[float, float]:
    """(AP@0.5, AP@[.5:.95]) by pycocotools' COCOeval on boxes (area 'all', at most 100 detections per image and
    class). Classes with no ground-truth box are not averaged (COCO's rule); an image's missed objects count."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets = _records(outputs, name, "the detections")
    gts = _box_rows(targets, name) if isinstance(targets, np.ndarray) else _records(targets, name, "the targets")
    if len(dets) != len(gts):
        raise MetricError(f"The metric {name!r}: detections for {len(dets)} images, targets for {len(gts)}.")
    gt_anns: list[dict] = []
    dt_anns: list[dict] = []
    for i, (d, g) in enumerate(zip(dets, gts)):
        gt_anns += _coco_annotations(g, i + 1, name, f"target {i}", scored=False)
        dt_anns += _coco_annotations(d, i + 1, name, f"detections {i}", scored=True)
    if not gt_anns:
        raise MetricError(f"The metric {name!r} needs ground-truth boxes; the targets have none.")
    images = [{"id": i + 1} for i in range(len(gts))]
    categories = [{"id": c} for c in sorted({a["category_id"] for a in gt_anns + dt_anns})]
    sets = []
    for anns in (gt_anns, dt_anns):
        coco = COCO()
        # ids from 1: COCOeval reads a matched id of 0 as "not matched"
        coco.dataset = {"images": images, "categories": categories, "annotations": anns}
        for j, ann in enumerate(anns, 1):
            ann["id"] = j
        sets.append(coco)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        for coco in sets:
            coco.createIndex()
        evaluation = COCOeval(sets[0], sets[1], "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1]), float(evaluation.stats[0])


def _map50(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    return _coco_map(outputs, targets, "map50")[0]


def _map50_95(outputs: Sequence[Any], targets: Any, reference: Sequence[Any] | None) -> float:
    return _coco_map(outputs, targets, "map50_95")[1]


def _register_builtins() -> None:
    for name, display, higher, fn, free, text in [
        ("top1", "Top-1 accuracy", True, _top1, False, "argmax of the first output (N, C) equals the class id"),
        ("top5", "Top-5 accuracy", True, _top5, False, "the class id is among the 5 highest scores"),
        ("miou", "mIoU", True, _miou, False, "mean IoU of class maps against masks (255 = void)"),
        ("map50", "mAP@0.5", True, _map50, False, "COCO box AP at IoU 0.5 (pycocotools)"),
        ("map50_95", "mAP@[.5:.95]", True, _map50_95, False, "COCO box AP over IoU 0.5:0.95 (pycocotools)"),
        ("auc", "ROC AUC", True, _auc, False, "ROC AUC of anomaly scores against 0/1 labels (scikit-learn)"),
        ("mae", "MAE", False, _mae, False, "mean absolute error, flattened"),
        ("rmse", "RMSE", False, _rmse, False, "root mean squared error, flattened"),
        ("agreement", "Top-1 agreement", True, _agreement, True, "argmax equals the fp32 parent's"),
        ("sqnr_db", "SQNR (dB)", True, _sqnr_db, True, "signal-to-noise of the outputs vs the fp32 parent"),
    ]:
        register_metric(
            Metric(
                name=name,
                display_name=display,
                higher_is_better=higher,
                fn=fn,
                description=text,
                needs_labels=not free,  # the label-free ones compare with the fp32 parent's outputs
                needs_reference=free,
            )
        )


_register_builtins()
