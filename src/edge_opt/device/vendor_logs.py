"""Vendor benchmark reports as measurements: OpenVINO ``benchmark_app``'s JSON report (``-report_type
no_counters -json_stats``: ``benchmark_report.json``), the log of LiteRT's ``benchmark_model``, and the output of
``litert-benchmark`` (ai-edge-litert's tool: its printed ``BENCHMARK RESULTS`` or its ``--result_json`` file).

Only the statistics the tool reports are kept: ``benchmark_app`` gives median, mean, min and max latency and
the throughput — no spread, so no confidence interval is made up; ``benchmark_model`` gives count, mean, min,
max and standard deviation of its timed runs, from which the t-based 95 % half-width follows; ``litert-benchmark``
gives count, mean, median, min, max and standard deviation (in ms, rounded to 0.01 ms by the tool).

Every figure read is checked (finite, > 0 — the standard deviation >= 0 —, a whole count >= 1, min <= mean,
median <= max); one that is not, a timed-run statistics line that is malformed or missing, a damaged or too
deeply nested JSON report, or a file over 50 MB (never read further) is a ``VendorLogError`` naming what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core import ci95_from_std

__all__ = [
    "VendorMeasurement",
    "VendorLogError",
    "parse_benchmark_app_json",
    "parse_benchmark_model_log",
    "parse_litert_benchmark_json",
    "parse_litert_benchmark_log",
    "read_vendor_log",
]


class VendorLogError(ValueError):
    """The file is not a report this reader understands (the text says what is missing)."""


@dataclass(frozen=True)
class VendorMeasurement:
    """What a vendor tool measured, in ms (NaN where the tool does not report the figure)."""

    source: str  # "openvino benchmark_app" / "litert benchmark_model"
    latency_mean_ms: float
    latency_median_ms: float = math.nan
    latency_min_ms: float = math.nan
    latency_max_ms: float = math.nan
    latency_std_ms: float = math.nan
    latency_ci95_ms: float = math.nan
    count: int | None = None
    throughput_fps: float = math.nan
    first_inference_ms: float = math.nan
    details: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["details"] = dict(self.details)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VendorMeasurement:
        """Inverse of ``to_dict`` (a stored document; unknown keys are ignored)."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "details"}
        details = d.get("details") or {}
        return cls(**known, details=tuple((str(k), str(v)) for k, v in dict(details).items()))


MAX_BYTES = 50 << 20  # a benchmark report is kilobytes; anything over this is not one
MAX_JSON_DEPTH = 32  # benchmark_app's report is two levels deep


def _shown(raw: Any) -> str:
    return repr(raw if isinstance(raw, str) else str(raw))[:40]


def _figure(where: str, field: str, raw: Any, *, positive: bool = True) -> float:
    """A reported figure: NaN when the tool does not give it (absent or empty), else a finite number, > 0
    (``positive``) or >= 0.

    Raises:
        VendorLogError: a figure that is not a number, not finite or out of range, naming the field and value.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return math.nan
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
        problem = "is out of range"
    except (TypeError, ValueError, OverflowError):
        value, problem = math.nan, "is not a number"
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        want = "a positive" if positive else "a non-negative"
        bound = "> 0" if positive else ">= 0"
        raise VendorLogError(
            f"{where}: {field}={_shown(raw)} {problem}: expected {want} {field!r} (a finite number {bound})"
        )
    return value


def _count(where: str, field: str, raw: Any) -> int | None:
    """A run count: None when not given, else an integer >= 1."""
    value = _figure(where, field, raw)
    if math.isnan(value):
        return None
    if not value.is_integer():
        raise VendorLogError(f"{where}: {field}={_shown(raw)} is out of range: expected a whole number of runs >= 1")
    return int(value)


def _ordered(where: str, low: tuple[str, float], middle: list[tuple[str, float]], high: tuple[str, float]) -> None:
    """``low <= each middle <= high`` among the figures the tool gave (NaN: not given)."""
    pairs = [(low, m) for m in middle] + [(m, high) for m in middle] + [(low, high)]
    for (a, x), (b, y) in pairs:
        if x > y:  # False when either is NaN
            raise VendorLogError(
                f"{where}: {a}={x!r} is above {b}={y!r}; the figures must satisfy min <= mean, median <= max"
            )


def parse_benchmark_app_json(doc: Any) -> VendorMeasurement:
    """``benchmark_report.json`` of OpenVINO's ``benchmark_app`` (its ``execution_results`` section).

    Raises:
        VendorLogError: no such section, no positive mean latency, or a figure out of range or out of order.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("execution_results"), dict):
        raise VendorLogError("not a benchmark_app JSON report: no 'execution_results' section")
    r = doc["execution_results"]
    where = "benchmark_app report"
    mean = _figure(where, "avg latency", r.get("avg latency"))
    if math.isnan(mean):
        raise VendorLogError("benchmark_app report without a positive 'avg latency' (a MULTI-device run reports none)")
    median_key = next((k for k in r if str(k).startswith("latency (")), None)
    median = _figure(where, str(median_key), r.get(median_key)) if median_key else math.nan
    lo, hi = _figure(where, "min latency", r.get("min latency")), _figure(where, "max latency", r.get("max latency"))
    _ordered(where, ("min latency", lo), [("avg latency", mean), (str(median_key), median)], ("max latency", hi))
    sections = [doc.get(k) for k in ("cmd_options", "configuration_setup")]
    given = {k: v for section in sections if isinstance(section, dict) for k, v in section.items()}
    details = tuple((str(k)[:80], str(v)[:200]) for k, v in given.items())[:40]
    return VendorMeasurement(
        "openvino benchmark_app",
        mean,
        median,
        lo,
        hi,
        count=_count(where, "total number of iterations", r.get("total number of iterations")),
        throughput_fps=_figure(where, "throughput", r.get("throughput")),
        first_inference_ms=_figure(where, "first inference time (ms)", r.get("first inference time (ms)")),
        details=details,
    )


_FIELD = re.compile(r"\b(\w+)=(\S*)")
_STATS_START = re.compile(r"\bcount=\S*\s+first=")  # a statistics line, even a damaged one (not "Memory: count=0")
_STATS_FIELDS = ("count", "min", "max", "avg", "std")
_FIRST = re.compile(r"First inference:\s*([^,\s]*)")
_RUN_HEADER = "Running benchmark for"


def _stats(line: str) -> tuple[int, float, float, float, float]:
    """(count, min, max, avg, std) of a statistics line (µs).

    Raises:
        VendorLogError: a field missing or out of range, naming the line.
    """
    where = f"benchmark_model statistics line {line.strip()[:160]!r}"
    fields = dict(_FIELD.findall(line))
    missing = [k for k in _STATS_FIELDS if k not in fields]
    if missing:
        raise VendorLogError(f"{where}: no {', '.join(k + '=' for k in missing)} (is the log cut off or edited?)")
    n = _count(where, "count", fields["count"])
    lo, hi, avg = (_figure(where, k, fields[k]) for k in ("min", "max", "avg"))
    std = _figure(where, "std", fields["std"], positive=False)
    if n is None or math.isnan(lo + hi + avg + std):
        empty = [k for k in _STATS_FIELDS if not fields[k]]
        raise VendorLogError(f"{where}: {', '.join(k + '=' for k in empty)} without a value")
    _ordered(where, ("min", lo), [("avg", avg)], ("max", hi))
    return n, lo, hi, avg, std


def parse_benchmark_model_log(text: str) -> VendorMeasurement:
    """The log of LiteRT's (TensorFlow Lite's) ``benchmark_model``: the statistics line of the timed runs
    (``count= first= curr= min= max= avg= std=``, µs; the last one printed is the timed run, the one before it
    the warm-up) and the ``Inference timings in us`` summary.

    Raises:
        VendorLogError: no statistics line; the timed run's line missing (a run starts after the last line) or
            malformed (the warm-up's line is never taken instead); a figure out of range or out of order.
    """
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if _STATS_START.search(line)]
    if not at:
        raise VendorLogError("not a benchmark_model log: no 'count=… avg=… std=…' statistics line")
    header = next((line for line in lines[at[-1] :] if _RUN_HEADER in line), None)
    if header is not None:
        raise VendorLogError(
            f"benchmark_model log: the last run ({header.strip()[:120]!r}) has no statistics line after it "
            "(is the log cut off?); the warm-up's statistics are not the timed run's"
        )
    n, lo, hi, mean_us, std_us = _stats(lines[at[-1]])
    timings = next((line for line in lines if "Inference timings in us" in line), "")
    first = _FIRST.search(timings)
    first_us = (
        _figure("benchmark_model 'Inference timings in us' line", "First inference", first.group(1))
        if first
        else math.nan
    )
    return VendorMeasurement(
        "litert benchmark_model",
        mean_us / 1e3,
        latency_min_ms=lo / 1e3,
        latency_max_ms=hi / 1e3,
        latency_std_ms=std_us / 1e3,
        latency_ci95_ms=ci95_from_std(std_us, n) / 1e3,  # NaN for one run
        count=n,
        throughput_fps=1e6 / mean_us,
        first_inference_ms=first_us / 1e3,
    )


_LITERT_LINE = re.compile(r"^\s*(Inference|Warmup) \((\w+)\):\s*(\S*) ms(?:\s*\((\S*) runs\))?", re.M)


def _litert_figures(where: str, latency: Mapping[str, Any], details: tuple[tuple[str, str], ...]) -> VendorMeasurement:
    """A ``litert-benchmark`` measurement from its latency figures (``avg_ms`` … ``num_runs``, ms)."""
    if _figure(where, "avg_ms", latency.get("avg_ms"), positive=False) == 0:
        raise VendorLogError(
            f"{where}: avg_ms=0: the tool rounds to 0.01 ms, so a model this fast has no latency to read from it"
        )
    mean = _figure(where, "avg_ms", latency.get("avg_ms"))
    if math.isnan(mean):
        raise VendorLogError(f"{where}: no inference average ('Inference (avg)' / 'avg_ms')")
    lo, hi = _figure(where, "min_ms", latency.get("min_ms")), _figure(where, "max_ms", latency.get("max_ms"))
    median = _figure(where, "median_ms", latency.get("median_ms"))
    _ordered(where, ("min_ms", lo), [("avg_ms", mean), ("median_ms", median)], ("max_ms", hi))
    std = _figure(where, "std_ms", latency.get("std_ms"), positive=False)
    n = _count(where, "num_runs", latency.get("num_runs"))
    return VendorMeasurement(
        "litert litert-benchmark",
        mean,
        median,
        lo,
        hi,
        latency_std_ms=std,
        latency_ci95_ms=ci95_from_std(std, n) if n is not None and not math.isnan(std) else math.nan,
        count=n,
        throughput_fps=1e3 / mean,
        first_inference_ms=_figure(where, "warmup_first_ms", latency.get("warmup_first_ms")),
        details=details,
    )


def parse_litert_benchmark_json(doc: Any) -> VendorMeasurement:
    """The ``--result_json`` file of ai-edge-litert's ``litert-benchmark`` (its ``latency`` section, ms).

    Raises:
        VendorLogError: no ``latency`` section, no positive average, or a figure out of range or out of order.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("latency"), dict):
        raise VendorLogError("not a litert-benchmark JSON result: no 'latency' section")
    keys = ("model", "accelerators", "signature", "fully_accelerated", "num_threads")
    details = tuple((k, str(doc[k])[:200]) for k in keys if k in doc)
    return _litert_figures("litert-benchmark result", doc["latency"], details)


def parse_litert_benchmark_log(text: str) -> VendorMeasurement:
    """What ``litert-benchmark`` prints: the ``BENCHMARK RESULTS`` block (``Inference (avg): 0.02 ms (20 runs)``,
    ``(min)``, ``(max)``, ``(median)``, ``(std)``, ``Warmup (first)``).

    Raises:
        VendorLogError: no results block, no average, or a figure out of range or out of order.
    """
    if "BENCHMARK RESULTS" not in text:
        raise VendorLogError("not a litert-benchmark output: no 'BENCHMARK RESULTS' block")
    block = text[text.rindex("BENCHMARK RESULTS") :]
    latency: dict[str, Any] = {}
    for kind, stat, value, runs in _LITERT_LINE.findall(block):
        if kind == "Warmup":
            if stat == "first":
                latency["warmup_first_ms"] = value
            continue
        latency[f"{stat}_ms"] = value
        if stat == "avg" and runs:
            latency["num_runs"] = runs
    threads = re.search(r"Num threads:\s*(\d+)", text)
    return _litert_figures("litert-benchmark output", latency, (("num_threads", threads.group(1)),) if threads else ())


def _json_depth(doc: Any) -> int:
    """How deeply ``doc`` nests (without recursion; stops counting past ``MAX_JSON_DEPTH``)."""
    deepest, todo = 0, [(doc, 1)]
    while todo and deepest <= MAX_JSON_DEPTH:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _load_json(text: str, p: Path) -> Any:
    """The JSON document of a benchmark_app report (a damaged or too deeply nested one is refused)."""
    too_deep = VendorLogError(
        f"{str(p)!r} nests JSON more than {MAX_JSON_DEPTH} levels deep: not a benchmark_app report "
        "(its sections are 2 levels deep)"
    )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VendorLogError(
            f"{str(p)!r} is a damaged or truncated benchmark_app JSON report: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno} (character {exc.pos})"
        ) from None
    except RecursionError:
        raise too_deep from None
    if _json_depth(doc) > MAX_JSON_DEPTH:
        raise too_deep
    return doc


def read_vendor_log(path: str | Path) -> VendorMeasurement:
    """A ``benchmark_app`` JSON report or a ``litert-benchmark`` JSON result (a file that starts with ``{`` or ``[``
    or is named ``*.json``; the latter has a ``latency`` section), a ``litert-benchmark`` output (its
    ``BENCHMARK RESULTS`` block) or a ``benchmark_model`` log.

    Raises:
        VendorLogError: the file cannot be read, is over 50 MB (at most that much is read, so a device or an
            endless stream is refused too), or is not a report of either tool (the text says why).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise VendorLogError(f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise VendorLogError(f"{str(p)!r} is over 50 MB: not a benchmark report")
    text = data.decode("utf-8-sig", errors="replace")
    if text.lstrip().startswith(("{", "[")) or p.suffix.lower() == ".json":
        doc = _load_json(text, p)
        if isinstance(doc, dict) and "latency" in doc and "execution_results" not in doc:
            return parse_litert_benchmark_json(doc)
        return parse_benchmark_app_json(doc)
    if "BENCHMARK RESULTS" in text and not _STATS_START.search(text):
        return parse_litert_benchmark_log(text)
    return parse_benchmark_model_log(text)
