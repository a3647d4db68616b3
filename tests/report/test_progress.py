import io

from edge_opt.report.progress import Reporter
from edge_opt.study.sweep import ConfigPoint


def _feed(rep):
    p = ConfigPoint(0.5, "int8", "onnxruntime")
    rep("stage", name="data", detail="digits")
    rep("stage", name="variants", detail="2 config points")
    rep("variant", index=1, total=2, point=p)
    rep(
        "variant_done",
        index=1,
        total=2,
        point=p,
        row={"error": None, "accuracy": 0.9, "latency_ms": 0.1, "memory_mb": 0.2},
    )
    rep("variant", index=2, total=2, point=p)
    rep("variant_done", index=2, total=2, point=p, row={"error": "boom"})
    rep("stage", name="report", detail="out")
    rep.close()


def test_plain_lines_one_per_stage_and_variant():
    buf = io.StringIO()
    _feed(Reporter(stream=buf, rich_ui=False))
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 5
    assert "stage: data (digits)" in lines[0] and "variant 1/2 onnxruntime int8 pruning=0.5: acc=0.9000" in lines[2]
    assert "ETA" in lines[2] and "error: boom" in lines[3]


def test_quiet_prints_nothing():
    buf = io.StringIO()
    _feed(Reporter(stream=buf, quiet=True, rich_ui=False))
    assert buf.getvalue() == ""


def test_a_study_scored_by_another_metric_shows_it_by_its_display_name():
    buf = io.StringIO()
    rep = Reporter(stream=buf, rich_ui=False)
    p = ConfigPoint(0.0, "int8", "onnxruntime")
    row = {"error": None, "accuracy": float("nan"), "latency_ms": 0.1, "memory_mb": 0.2}
    rep("variant_done", index=1, total=2, point=p, row={**row, "metric": 0.99816, "metric_name": "ROC AUC"})
    rep("variant_done", index=2, total=2, point=p, row={**row, "metric": 0.01234, "metric_name": "MAE"})
    lines = buf.getvalue().strip().splitlines()
    assert "pruning=0: ROC AUC=0.9982 latency=0.1000ms" in lines[0] and "acc=" not in buf.getvalue()
    assert "pruning=0: MAE=0.0123 latency" in lines[1]


def test_trial_lines_show_the_metric_in_its_own_direction():
    from edge_opt.study.search import TrialRecord

    buf = io.StringIO()
    rep = Reporter(stream=buf, rich_ui=False)
    p = ConfigPoint(0.0, "int8", "onnxruntime")
    record = TrialRecord(3, p, "measured", -0.0123, 0.5, 0.2, True, None, 1.0, 0.5)  # a score: -MAE
    rep("trial", record=record, distinct=3, budget=10)
    assert "acc=-0.0123" in buf.getvalue()  # no metric event: a top1 study's line
    rep("metric", display_name="MAE", higher_is_better=False, baseline=0.0101)
    rep("trial", record=record, distinct=3, budget=10)
    lines = buf.getvalue().strip().splitlines()
    assert "metric: MAE (lower is better), fp32 baseline 0.0101" in lines[1]
    assert "MAE=0.0123 device latency=0.5000ms" in lines[2]
