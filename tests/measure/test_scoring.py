"""The metric registry: every built-in against an answer computed apart from it, directions, user callables and the
errors a study turns into exit 2."""

from __future__ import annotations

import itertools
import math
import sys
import textwrap

import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from edge_opt.core import CallableImportError, UserCodeError
from edge_opt.measure import (
    METRICS,
    SQNR_CAP_DB,
    Metric,
    MetricError,
    check_metric_value,
    get_metric,
    list_metrics,
    metric_drop,
    register_metric,
    user_metric,
)

BUILT_INS = ["agreement", "auc", "mae", "map50", "map50_95", "miou", "rmse", "sqnr_db", "top1", "top5"]


def score(name, outputs, targets=None, reference=None):
    return get_metric(name)(outputs, targets, reference)


# -- registry ----------------------------------------------------------------------------------------------------


def test_every_built_in_is_registered_with_its_direction():
    assert set(BUILT_INS) <= set(list_metrics())
    lower = {n for n in BUILT_INS if not get_metric(n).higher_is_better}
    assert lower == {"mae", "rmse"}
    free = {n for n in BUILT_INS if not get_metric(n).needs_labels}
    assert free == {"agreement", "sqnr_db"}
    assert all(get_metric(n).needs_reference for n in free)


def test_an_unknown_name_is_an_error_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match="'metric' parameter") as err:
        get_metric("top-1")
    assert "'top-1'" in str(err.value)
    for name in BUILT_INS:
        assert repr(name) in str(err.value)


def test_registering_a_metric_and_a_duplicate(monkeypatch):
    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))  # leave the global registry as it was
    mine = register_metric(Metric(name="mine", display_name="Mine", higher_is_better=False, fn=lambda o, t, r: 0.5))
    assert get_metric("mine") is mine and "mine" in list_metrics()
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric(name="mine", display_name="Mine", higher_is_better=True, fn=lambda o, t, r: 0.0))


@pytest.mark.parametrize("bad", ["", "pkg.mod:fn", " top1"])
def test_a_metric_name_is_a_plain_word(bad):
    with pytest.raises(MetricError, match="metric name"):
        Metric(name=bad, display_name="x", higher_is_better=True, fn=lambda o, t, r: 0.0)


def test_a_metric_that_needs_labels_refuses_none_and_label_free_ones_need_the_reference():
    logits = np.eye(3)
    with pytest.raises(MetricError, match="'top1' needs targets"):
        get_metric("top1")([logits])
    with pytest.raises(MetricError, match="'agreement' compares with the fp32 parent"):
        get_metric("agreement")([logits])
    assert get_metric("agreement")([logits], None, [logits]) == 1.0


# -- classification ------------------------------------------------------------------------------------------------


def test_top1_and_top5_on_a_hand_made_case():
    logits = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # class 0 first
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # class 0 last: outside the top 5
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # class 1 fifth
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # class 5 first
        ]
    )
    targets = np.array([0, 0, 1, 2])
    assert score("top1", [logits], targets) == pytest.approx(1 / 4)
    assert score("top5", [logits], targets) == pytest.approx(3 / 4)  # ties among the zeros: lower index first


def test_top1_is_argmax_with_ties_to_the_lower_class_like_the_accuracy_column():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(200, 4)).astype(np.float32)  # many ties
    targets = rng.integers(0, 4, size=200)
    assert score("top1", [logits], targets) == pytest.approx(float(np.mean(logits.argmax(1) == targets)))
    order = np.argsort(-logits, axis=1, kind="stable")
    assert score("top1", [logits], targets) == pytest.approx(float(np.mean(order[:, 0] == targets)))


def test_class_ids_may_be_whole_floats_or_a_column_but_not_fractions_or_out_of_range():
    logits = np.eye(5)
    assert score("top1", [logits], np.arange(5.0).reshape(5, 1)) == 1.0
    with pytest.raises(MetricError, match="integer class ids"):
        score("top1", [logits], np.array([0, 1, 2, 3, 3.5]))
    with pytest.raises(MetricError, match=r"in \[0, 5\)"):
        score("top1", [logits], np.array([0, 1, 2, 3, 5]))
    with pytest.raises(MetricError, match=r"one target per sample, shape \(5,\)"):
        score("top1", [logits], np.arange(4))


def test_classification_metrics_refuse_outputs_they_cannot_read():
    with pytest.raises(MetricError, match="at least 5 class scores"):
        score("top5", [np.eye(3)], np.arange(3))
    with pytest.raises(MetricError, match="at least 2 class scores"):
        score("top1", [np.ones((3, 1))], np.zeros(3, dtype=int))
    with pytest.raises(MetricError, match=r"shape \(N, C\)"):
        score("top1", [np.ones((3, 2, 2))], np.zeros(3, dtype=int))
    with pytest.raises(MetricError, match="one array per model output"):
        score("top1", np.eye(3), np.arange(3))  # a bare array, not a list of outputs


# -- segmentation --------------------------------------------------------------------------------------------------


def test_miou_on_a_hand_made_case_with_an_absent_class():
    target = np.array([[[0, 0, 1], [1, 2, 2]]])
    pred = np.array([[[0, 1, 1], [1, 2, 0]]])
    # class 0: TP 1, union 3; class 1: TP 2, union 3; class 2: TP 1, union 2; class 3 absent from both: not averaged
    expected = (1 / 3 + 2 / 3 + 1 / 2) / 3
    assert score("miou", [pred], target) == pytest.approx(expected)
    logits = np.moveaxis(np.eye(4)[pred], -1, 1)  # (N, 4, H, W) one-hot logits, class 3 never predicted
    assert score("miou", [logits], target) == pytest.approx(expected)
    assert score("miou", [logits], target) == pytest.approx(
        jaccard_score(target.ravel(), pred.ravel(), average="macro", labels=[0, 1, 2])
    )


def test_miou_skips_void_target_pixels():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, size=(4, 5, 6))
    pred = rng.integers(0, 3, size=(4, 5, 6))
    void = rng.random(target.shape) < 0.3
    with_void = np.where(void, 255, target)
    keep = ~void
    expected = jaccard_score(
        target[keep], pred[keep], average="macro", labels=sorted(set(target[keep]) | set(pred[keep]))
    )
    assert score("miou", [pred], with_void) == pytest.approx(expected)
    assert score("miou", [pred], with_void) != pytest.approx(score("miou", [pred], target))


def test_miou_refuses_shapes_that_do_not_fit():
    with pytest.raises(MetricError, match="differ"):
        score("miou", [np.zeros((2, 4, 4), dtype=int)], np.zeros((2, 4, 5), dtype=int))
    with pytest.raises(MetricError, match=r"logits \(N, C, H, W\) or class maps"):
        score("miou", [np.zeros((2, 3, 4, 4, 1))], np.zeros((2, 4, 4), dtype=int))
    with pytest.raises(MetricError, match=r"\[0, 3\)"):
        score("miou", [np.zeros((1, 3, 2, 2))], np.full((1, 2, 2), 7))


# -- detection -------------------------------------------------------------------------------------------------


def dets(boxes, scores, labels):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "scores": np.array(scores), "labels": labels}


def gt(boxes, labels):
    return {"boxes": np.array(boxes, dtype=float).reshape(-1, 4), "labels": np.array(labels)}


TWO_IMAGES = [gt([[0, 0, 10, 10], [20, 20, 40, 30]], [1, 2]), gt([[5, 5, 15, 25]], [1])]


def test_map_of_perfect_detections_is_one():
    perfect = [dets(t["boxes"], np.ones(len(t["labels"])), t["labels"]) for t in TWO_IMAGES]
    assert score("map50", perfect, TWO_IMAGES) == pytest.approx(1.0)
    assert score("map50_95", perfect, TWO_IMAGES) == pytest.approx(1.0)


def test_map_when_one_of_two_objects_is_found():
    # One class, two objects, one found exactly: precision 1 up to recall 0.5, then nothing. COCO's 101-point
    # interpolation counts the recall points 0, 0.01, …, 0.50: 51 of 101.
    targets = [gt([[0, 0, 10, 10]], [3]), gt([[0, 0, 20, 20]], [3])]
    found = [dets([[0, 0, 10, 10]], [0.9], [3]), dets([], [], [])]
    assert score("map50", found, targets) == pytest.approx(51 / 101)
    assert score("map50_95", found, targets) == pytest.approx(51 / 101)


def test_map_iou_thresholds_and_a_higher_scored_false_positive():
    target = [gt([[0, 0, 10, 10]], [0])]
    loose = [dets([[0, 0, 10, 7.2]], [0.8], [0])]  # IoU 0.72: a hit at 0.50, 0.55, …, 0.70, a miss above
    assert score("map50", loose, target) == pytest.approx(1.0)
    assert score("map50_95", loose, target) == pytest.approx(5 / 10)
    # a false positive scored above the true one: precision 1/2 at recall 1, interpolated over every recall point
    fp_first = [dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    assert score("map50", fp_first, target) == pytest.approx(0.5)


def test_map_averages_classes_with_ground_truth_only():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    only_class_0 = [dets([[0, 0, 10, 10], [50, 50, 70, 70]], [0.9, 0.7], [0, 9])]  # class 9 has no ground truth
    assert score("map50", only_class_0, targets) == pytest.approx((1.0 + 0.0) / 2)


def test_map_refuses_raw_outputs_and_malformed_records():
    targets = [gt([[0, 0, 10, 10]], [0])]
    with pytest.raises(MetricError, match="postprocess"):
        score("map50", [np.zeros((1, 100, 6))], targets)
    with pytest.raises(MetricError, match="detections for 2 images, targets for 1"):
        score("map50", [dets([], [], []), dets([], [], [])], targets)
    with pytest.raises(MetricError, match="has no 'scores'"):
        score("map50", [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}], targets)
    with pytest.raises(MetricError, match="x2 ≥ x1"):
        score("map50", [dets([[10, 0, 0, 10]], [0.5], [0])], targets)
    with pytest.raises(MetricError, match="needs ground-truth boxes"):
        score("map50", [dets([], [], [])], [gt([], [])])


# -- anomaly, regression -------------------------------------------------------------------------------------------


def pairwise_auc(scores, labels):
    """The probability a random anomaly outscores a random normal sample, ties counting one half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_against_the_pairwise_count():
    assert score("auc", [np.array([0.1, 0.4, 0.35, 0.8])], np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(40, 1)).astype(float)  # a column, with ties
    labels = rng.integers(0, 2, size=40)
    assert score("auc", [scores], labels) == pytest.approx(pairwise_auc(scores[:, 0], labels))


def test_auc_refuses_one_class_other_labels_and_non_finite_scores():
    with pytest.raises(MetricError, match="both normal"):
        score("auc", [np.array([0.1, 0.2])], np.array([1, 1]))
    with pytest.raises(MetricError, match="0/1 labels"):
        score("auc", [np.array([0.1, 0.2])], np.array([0, 2]))
    with pytest.raises(MetricError, match="not finite"):
        score("auc", [np.array([0.1, np.nan])], np.array([0, 1]))


def test_mae_and_rmse_flatten_any_shape():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.0, 0.0], [3.0, 8.0]])  # errors 0, 2, 0, -4
    assert score("mae", [pred], target) == pytest.approx(6 / 4)
    assert score("rmse", [pred], target) == pytest.approx(math.sqrt(20 / 4))
    assert score("mae", [pred.reshape(4, 1)], target.reshape(4)) == pytest.approx(6 / 4)  # (N, 1) against (N,)
    with pytest.raises(MetricError, match="differ"):
        score("rmse", [pred], target.reshape(1, 4))


# -- label-free ----------------------------------------------------------------------------------------------------


def test_agreement_counts_matching_argmax():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.1]])
    out = np.array([[0.9, 0.1], [0.6, 0.4], [1.0, 0.0], [0.1, 0.2]])
    assert score("agreement", [out], None, [ref]) == pytest.approx(2 / 4)
    with pytest.raises(MetricError, match="sqnr_db compares"):
        score("agreement", [np.ones((4, 1))], None, [np.ones((4, 1))])
    with pytest.raises(MetricError, match="differ"):
        score("agreement", [out], None, [ref[:3]])


def test_sqnr_over_every_output_and_its_cap():
    ref = [np.array([3.0, 4.0]), np.array([[0.0]])]
    out = [np.array([3.0, 4.5]), np.array([[0.0]])]  # signal 25, noise 0.25 → 20 dB
    assert score("sqnr_db", out, None, ref) == pytest.approx(20.0)
    assert score("sqnr_db", ref, None, ref) == SQNR_CAP_DB  # identical: capped, finite
    near = [np.array([3.0, 4.0 + 1e-7]), np.array([[0.0]])]  # 10·log10(25 / 1e-14) ≈ 154 dB: capped too
    assert score("sqnr_db", near, None, ref) == SQNR_CAP_DB
    with pytest.raises(MetricError, match="all zero"):
        score("sqnr_db", [np.ones(2)], None, [np.zeros(2)])
    with pytest.raises(MetricError, match="1 outputs against 2"):
        score("sqnr_db", out[:1], None, ref)


# -- values and drops -----------------------------------------------------------------------------------------------


def test_metric_drop_follows_the_direction():
    top1, mae = get_metric("top1"), get_metric("mae")
    assert metric_drop(0.9, 0.85, top1) == pytest.approx(0.05)  # lower accuracy: worse
    assert metric_drop(0.9, 0.95, top1) == pytest.approx(-0.05)
    assert metric_drop(2.0, 2.5, mae) == pytest.approx(0.5)  # higher error: worse
    assert metric_drop(2.0, 1.5, mae) == pytest.approx(-0.5)
    assert metric_drop(2.0, 2.5, mae, relative=True) == pytest.approx(0.25)
    assert metric_drop(0.8, 0.6, top1, relative=True) == pytest.approx(0.25)
    with pytest.raises(MetricError, match="baseline is 0"):
        metric_drop(0.0, 0.1, mae, relative=True)


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), (np.float32(0.25), 0.25), (np.array(3.0), 3.0), (7, 7.0)])
def test_check_metric_value_takes_real_scalars(value, expected):
    assert check_metric_value(value, get_metric("top1")) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "returned nan"),
        (np.inf, "returned inf"),
        (np.array([0.1, 0.2]), r"ndarray of shape \(2,\)"),
        ("0.5", "returned str"),
        (True, "returned a bool"),
        (None, "returned NoneType"),
    ],
)
def test_check_metric_value_names_the_metric_and_what_came_back(value, message):
    with pytest.raises(MetricError, match=message) as err:
        check_metric_value(value, get_metric("mae"))
    assert "'mae'" in str(err.value)


# -- user metrics ----------------------------------------------------------------------------------------------------


def write_module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


def test_a_module_path_metric(tmp_path):
    write_module(
        tmp_path,
        "scoring_user_ok",
        """
        import numpy as np

        def mean_abs(outputs, targets):
            return float(np.mean(np.abs(outputs[0] - targets)))
        """,
    )
    metric = user_metric("scoring_user_ok:mean_abs", False, search_dirs=[tmp_path])
    assert (metric.name, metric.display_name, metric.higher_is_better) == ("mean_abs", "mean_abs", False)
    assert metric([np.array([1.0, 3.0])], np.array([0.0, 0.0])) == pytest.approx(2.0)
    named = user_metric("scoring_user_ok:mean_abs", False, "err", [tmp_path], display_name="Abs. error")
    assert (named.name, named.display_name) == ("err", "Abs. error")


def test_a_plain_function_metric_with_the_reference():
    def close(outputs, targets, reference):
        return np.float64(np.mean(np.isclose(outputs[0], reference[0])))

    metric = user_metric(close, True, needs_labels=False, needs_reference=True)
    assert metric.name == "close" and not metric.needs_labels
    assert metric([np.array([1.0, 2.0])], None, [np.array([1.0, 2.5])]) == pytest.approx(0.5)


def test_user_metric_failures_are_clean_errors(tmp_path):
    write_module(
        tmp_path,
        "scoring_user_bad",
        """
        import sys
        import numpy as np

        def boom(outputs, targets):
            raise RuntimeError("no labels here")

        def leave(outputs, targets):
            sys.exit(3)

        def vector(outputs, targets):
            return np.array([0.1, 0.2])

        def nan(outputs, targets):
            return float("nan")
        """,
    )

    def make(fn):
        return user_metric(f"scoring_user_bad:{fn}", True, search_dirs=[tmp_path])

    with pytest.raises(UserCodeError, match="'scoring_user_bad:boom' failed: RuntimeError: no labels here"):
        make("boom")([np.zeros(1)], np.zeros(1))
    with pytest.raises(UserCodeError, match=r"called sys.exit\(3\)"):
        make("leave")([np.zeros(1)], np.zeros(1))
    with pytest.raises(MetricError, match=r"'vector' returned ndarray of shape \(2,\)"):
        make("vector")([np.zeros(1)], np.zeros(1))
    nan = make("nan")
    with pytest.raises(MetricError, match="'nan' returned nan; it must return a finite number"):
        check_metric_value(nan([np.zeros(1)], np.zeros(1)), nan)


def test_user_metric_import_errors(tmp_path):
    write_module(tmp_path, "scoring_user_exit", "import sys\nsys.exit(1)\n")
    with pytest.raises(CallableImportError, match="does not import"):
        user_metric("scoring_user_exit:f", True, search_dirs=[tmp_path])
    with pytest.raises(CallableImportError, match="does not import"):
        user_metric("scoring_no_such_module:f", True)
    with pytest.raises(CallableImportError, match="has no callable 'nothing'"):
        user_metric("math:nothing", True)
    with pytest.raises(MetricError, match="package.module:function"):
        user_metric("math.sqrt", True)
    with pytest.raises(MetricError, match="higher_is_better"):
        user_metric("math:sqrt", "yes")  # type: ignore[arg-type]
    assert "scoring_user_exit" not in sys.modules
