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
