import math

import pytest

from edge_opt.config import config_from_dict
from edge_opt.measure.records import ConfigPoint, VariantResult
from edge_opt.study.selection import (
    COLUMN_ORDER,
    LAST_COLUMNS,
    assess_results,
    best_effort,
    recommend,
    select_recommendation,
    study_warnings,
    to_frame,
)
from records import fake_result


def _results():
    return [
        fake_result("a", 0.0, "fp32", "torch", accuracy=0.95, latency_ms=[1.0] * 5, memory_mb=4.0),
        fake_result("b", 0.0, "int8", "torch", accuracy=0.945, latency_ms=[2.0, 2.01, 1.99, 2.02, 1.98], memory_mb=1.0),
        fake_result("c", 0.5, "fp32", "torch", accuracy=0.90, latency_ms=[0.5, 0.501, 0.499, 0.5, 0.5], memory_mb=0.9),
    ]


def _cfg(tmp_path, budget=2.0):
    return config_from_dict(
        {"active_memory_budget_mb": budget, "memory_budgets_mb": [budget], "output_dir": str(tmp_path)}
    )


def test_assess_flags_slower_than_fp32_and_speedups(tmp_path):
    rs = _results()
    a = assess_results(rs, _cfg(tmp_path), rs[0])
    assert a[1].slower_than_fp32 and a[1].speedup_vs_fp32 == pytest.approx(0.5)
    assert a[2].speedup_vs_baseline == pytest.approx(2.0)
    assert [x.accepted for x in a] == [False, True, True]
    assert "memory 4.000 MB > budget 2.0 MB" in a[0].rejected_reason
    assert a[1].accuracy_drop == pytest.approx(0.005)
    assert a[0].device_latency_ms == pytest.approx(2.0)  # default cpu_frequency_scale 0.5


def test_recommend_respects_accuracy_drop_and_best_effort(tmp_path):
    rs = _results()
    a = assess_results(rs, _cfg(tmp_path), rs[0])
    rec, failed = recommend(a, 0.95, 0.01)
    assert rec.result.key == "b" and failed == []
    rec, _ = recommend(a, 0.95, 0.1)
    assert rec.result.key == "c"
    a2 = assess_results(rs, _cfg(tmp_path, 0.1), rs[0])
    rec, failed = recommend(a2, 0.95, 0.01)
    assert rec is None and "budgets" in failed[0]
    assert best_effort(a2).result.key == "a"  # nothing memory-accepted: highest accuracy overall
    sel = select_recommendation(a2, rs[0], _cfg(tmp_path, 0.1))
    assert not sel.goals_met and sel.chosen.result.key == "a" and sel.why.startswith("best effort")


def test_recommend_prefers_real_precision_when_latencies_tie(tmp_path):
    rs = [
        fake_result(
            "fp16",
            0.5,
            "fp16",
            "onnxruntime",
            kernel="fp32",
            accuracy=0.95,
            memory_mb=0.4,
            runtime_mb=0.8,
            latency_ms=[1.0 + 0.001 * i for i in range(10)],
        ),
        fake_result(
            "fp32",
            0.5,
            "fp32",
            "onnxruntime",
            accuracy=0.95,
            memory_mb=0.8,
            latency_ms=[1.02 + 0.001 * i for i in range(10)],
        ),
    ]
    a = assess_results(rs, _cfg(tmp_path), rs[1])
    assert a[0].precision_mismatch and not a[1].precision_mismatch
    rec, _ = recommend(a, 0.95, 0.01)
    assert rec.result.key == "fp32"  # 2 % apart is a tie; the fp16 label runs fp32 kernels


def test_recommend_tie_rule_least_runtime_memory_among_real_precisions(tmp_path):
    rs = [
        fake_result(
            "big",
            0.0,
            "fp32",
            "onnxruntime",
            accuracy=0.95,
            memory_mb=1.5,
            latency_ms=[1.0 + 0.001 * i for i in range(10)],
        ),
        fake_result(
            "small",
            0.5,
            "fp32",
            "onnxruntime",
            accuracy=0.95,
            memory_mb=0.5,
            latency_ms=[1.01 + 0.001 * i for i in range(10)],
        ),
        fake_result(
            "slow",
            0.75,
            "fp32",
            "onnxruntime",
            accuracy=0.95,
            memory_mb=0.1,
            latency_ms=[3.0 + 0.001 * i for i in range(10)],
        ),
    ]
    a = assess_results(rs, _cfg(tmp_path), rs[0])
    rec, _ = recommend(a, 0.95, 0.01)
    assert rec.result.key == "small"  # tied with the fastest, less memory; "slow" is not a tie


def test_error_results_are_rejected_and_listed(tmp_path):
    ok = fake_result("a", 0.0, "fp32", "torch", accuracy=0.95, latency_ms=[1.0] * 5, memory_mb=1.0)
    bad = VariantResult.failed(ConfigPoint(0.0, "int8", "torch"), "k", "RuntimeError: boom")
    a = assess_results([ok, bad], _cfg(tmp_path), ok)
    assert not a[1].accepted and a[1].rejected_reason == "error" and math.isnan(a[1].metrics.accuracy)
    assert any("torch int8 p0 failed: RuntimeError: boom" in w for w in study_warnings(a))


def test_to_frame_column_order_and_one_row_per_record(tmp_path):
    rs = _results()
    frame = to_frame(assess_results(rs, _cfg(tmp_path), rs[0]))
    assert len(frame) == 3
    assert list(frame.columns[: len(COLUMN_ORDER)]) == list(COLUMN_ORDER)
    rest = list(frame.columns[len(COLUMN_ORDER) : len(frame.columns) - len(LAST_COLUMNS)])
    assert rest == sorted(rest) and "violates_2.0mb" in rest and "latency_samples_ms" in rest
    assert list(frame.columns[len(frame.columns) - len(LAST_COLUMNS) :]) == list(LAST_COLUMNS)  # later additions
    assert to_frame([]).empty and "accepted" in to_frame([]).columns


def test_result_round_trips_through_json(tmp_path):
    import json

    r = _results()[1]
    back = VariantResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.metrics == r.metrics
    with pytest.raises(ValueError, match="format"):
        VariantResult.from_dict({**r.to_dict(), "format": 1})
