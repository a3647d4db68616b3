"""Vendor benchmark reports read by ``edge-opt import-bench``: every figure checked, a malformed or missing timed
statistics line refused (never the warm-up's taken), a damaged or too deeply nested JSON report and an endless
file refused quickly — each with one ``error:`` line from the CLI, never a traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_opt.cli import main
from edge_opt.device.vendor_logs import VendorLogError, read_vendor_log

DATA = Path(__file__).resolve().parents[1] / "data"
TIMED = "count=150 first=1208 curr=1199 min=1152 max=1544 avg=1214.47 std=83"  # the timed run's line of the sample


def _app_report(tmp_path: Path, **results: str) -> Path:
    doc = json.loads((DATA / "benchmark_app_report.json").read_text())
    doc["execution_results"].update(results)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    return path


def _model_log(tmp_path: Path, timed: str | None) -> Path:
    """The sample benchmark_model log with its timed statistics line replaced (None: the log cut off before it)."""
    text = (DATA / "benchmark_model.log").read_text()
    assert TIMED in text
    if timed is None:
        text = text[: text.index(TIMED)]
    else:
        text = text.replace(TIMED, timed)
    path = tmp_path / "bench.log"
    path.write_text(text)
    return path


def _import_errors(file: Path, capsys) -> list[str]:
    """``edge-opt import-bench`` on ``file`` (the report is checked before the study is read): its error lines."""
    argv = ["import-bench", str(file), "--study", "no-such-study", "--target", "board", "--point"]
    assert main([*argv, "backend=onnxruntime,precision=fp32,pruning_level=0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines


@pytest.mark.parametrize(
    "results,needle",
    [
        ({"min latency": "-0.35"}, "min latency='-0.35' is out of range"),
        ({"max latency": "-2.87"}, "max latency='-2.87' is out of range"),
        ({"throughput": "-2428.12"}, "throughput='-2428.12' is out of range"),
        ({"throughput": "inf"}, "throughput='inf' is out of range"),
        ({"avg latency": "nan"}, "avg latency='nan' is out of range"),
        ({"latency (ms)": "-0.39"}, "latency (ms)='-0.39' is out of range"),
        ({"first inference time (ms)": "fast"}, "first inference time (ms)='fast' is not a number"),
        ({"min latency": "3.5"}, "min latency=3.5 is above avg latency=0.41"),
        ({"max latency": "0.2"}, "is above max latency=0.2"),
        ({"latency (ms)": "9"}, "latency (ms)=9.0 is above max latency=2.87"),
        ({"total number of iterations": "0"}, "total number of iterations='0' is out of range"),
        ({"total number of iterations": "2.5"}, "expected a whole number of runs"),
    ],
)
def test_benchmark_app_figures_out_of_range_or_order_are_refused_naming_field_and_value(
    tmp_path, capsys, results, needle
):
    path = _app_report(tmp_path, **results)
    with pytest.raises(VendorLogError) as err:
        read_vendor_log(path)
    assert needle in str(err.value)
    assert needle in _import_errors(path, capsys)[0]


@pytest.mark.parametrize(
    "timed,needle",
    [
        ("count=150 first=1208 curr=1199 min=-1152 max=1544 avg=1214.47 std=83", "min='-1152' is out of range"),
        ("count=150 first=1208 curr=1199 min=1152 max=1544 avg=1214.47 std=-83", "std='-83' is out of range"),
        ("count=150 first=1208 curr=1199 min=1600 max=1544 avg=1214.47 std=83", "min=1600.0 is above"),
        ("count=150 first=1208 curr=1199 min=1152 max=1544 avg=2000 std=83", "avg=2000.0 is above max=1544.0"),
        ("count=0 first=1208 curr=1199 min=1152 max=1544 avg=1214.47 std=83", "count='0' is out of range"),
    ],
)
def test_benchmark_model_figures_out_of_range_or_order_are_refused(tmp_path, capsys, timed, needle):
    path = _model_log(tmp_path, timed)
    with pytest.raises(VendorLogError) as err:
        read_vendor_log(path)
    assert needle in str(err.value) and timed in str(err.value)  # names the line
    assert needle in _import_errors(path, capsys)[0]


@pytest.mark.parametrize(
    "timed,needle",
    [
        ("count=150 first=1208 curr=1199 min=1152 max=1544 avg=12x4.47 std=83", "avg='12x4.47' is not a number"),
        ("count=150 first=1208 curr=1199 min=1152 max=1544 avg=1214.47 std=", "std= without a value"),
        ("count=150 first=1208 curr=1199 min=1152 max=", "no avg=, std="),
    ],
)
def test_a_malformed_timed_statistics_line_is_an_error_never_the_warm_up_line(tmp_path, capsys, timed, needle):
    path = _model_log(tmp_path, timed)
    with pytest.raises(VendorLogError) as err:
        read_vendor_log(path)
    assert needle in str(err.value) and "benchmark_model statistics line" in str(err.value)
    assert needle in _import_errors(path, capsys)[0]


def test_a_log_cut_off_before_the_timed_statistics_is_refused(tmp_path, capsys):
    path = _model_log(tmp_path, None)  # only the warm-up's line is left
    with pytest.raises(VendorLogError, match="has no statistics line after it"):
        read_vendor_log(path)
    assert "at least 50 iterations" in _import_errors(path, capsys)[0]


def test_the_sample_logs_still_import_with_their_figures():
    app = read_vendor_log(DATA / "benchmark_app_report.json")
    assert (app.latency_min_ms, app.latency_median_ms, app.latency_max_ms) == (0.35, 0.39, 2.87)
    assert app.throughput_fps == 2428.12 and app.first_inference_ms == 1.23 and app.count == 14562
    tfl = read_vendor_log(DATA / "benchmark_model.log")
    assert tfl.count == 150 and tfl.latency_min_ms == 1.152 and tfl.latency_max_ms == 1.544
    assert tfl.first_inference_ms == 1.891


def test_other_count_lines_after_the_timed_statistics_are_not_statistics_lines(tmp_path):
    path = _model_log(tmp_path, TIMED + "\nINFO: Memory (bytes): count=0")  # as op profiling prints
    assert read_vendor_log(path).count == 150


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_a_clean_error(tmp_path, capsys, depth):
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(VendorLogError, match="nests JSON more than 32 levels deep"):
        read_vendor_log(path)
    assert "nests JSON more than 32 levels deep" in _import_errors(path, capsys)[0]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_is_refused_with_the_size_limit_without_reading_it_whole(capsys):
    started = time.perf_counter()
    with pytest.raises(VendorLogError, match="is over 50 MB"):
        read_vendor_log("/dev/zero")
    assert "'/dev/zero' is over 50 MB" in _import_errors(Path("/dev/zero"), capsys)[0]
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("name", ["report.json", "report.txt"])
def test_a_truncated_benchmark_app_report_is_called_damaged_json_not_a_benchmark_model_log(tmp_path, capsys, name):
    text = (DATA / "benchmark_app_report.json").read_text()
    path = tmp_path / name
    path.write_text(text[: len(text) // 2])
    with pytest.raises(VendorLogError) as err:
        read_vendor_log(path)
    message = str(err.value)
    assert "damaged or truncated benchmark_app JSON report" in message and "line 1 column" in message
    assert "benchmark_model" not in message
    assert "damaged or truncated benchmark_app JSON report" in _import_errors(path, capsys)[0]
    (tmp_path / "notes.json").write_text("hello")  # named .json: read as one, whatever it holds
    with pytest.raises(VendorLogError, match="damaged or truncated benchmark_app JSON report"):
        read_vendor_log(tmp_path / "notes.json")


def test_import_bench_reports_every_argument_problem_at_once(tmp_path, capsys):
    path = _app_report(tmp_path, throughput="-1")
    assert main(["import-bench", str(path), "--study", "x", "--target", "host", "--point", "precision=fp32"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "--target" in lines[0] and "--point must give ['backend']" in lines[1] and "throughput" in lines[2]
