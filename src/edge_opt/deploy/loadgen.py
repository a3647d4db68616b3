"""MLPerf LoadGen as the deployment scenarios' driver: a System Under Test for any variant.

``run_loadgen`` builds a Query Sample Library over the validation samples (loaded and unloaded in
LoadGen's callbacks, ``performance_sample_count`` of them at a time), a SUT that runs the variant
on the samples of each query and answers with the predicted class (int64) — or, in accuracy mode for a study
scored by another metric than top-1, with the sample's raw outputs (every output, float32 bytes, one after
the other) so that the metric is computed from LoadGen's accuracy log — runs one LoadGen test
(``single_stream``, ``multi_stream``, ``server``, ``offline``; performance or accuracy mode) and
reads the numbers from LoadGen's own logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``,
``mlperf_log_accuracy.json``), never from our timers. These are not official MLPerf runs: the
durations are short and early stopping decides when enough queries ran.
"""

from __future__ import annotations

import array
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import batch_len, batch_parts, batch_slice, class_scores, output_arrays
from ..measure import Scoring
from ..variants import Variant

__all__ = [
    "LOADGEN_SCENARIOS",
    "LoadGenRun",
    "LoadGenSettings",
    "logged_outputs",
    "output_shapes",
    "parse_summary",
    "performance_samples",
    "run_loadgen",
]

LOADGEN_SCENARIOS = {
    "single_stream": "SingleStream",
    "multi_stream": "MultiStream",
    "server": "Server",
    "offline": "Offline",
}


@dataclass(frozen=True)
class LoadGenSettings:
    """What one LoadGen test is asked for (see ``mlperf_loadgen.TestSettings``)."""

    min_query_count: int = 64
    min_duration_ms: int = 1000
    max_duration_ms: int = 60_000
    seed: int = 0
    expected_latency_ms: float = 1.0
    multi_stream_samples_per_query: int = 8
    server_target_qps: float = 100.0
    server_target_latency_ms: float = 10.0
    offline_expected_qps: float = 1000.0
    max_server_queries: int = 100_000
    offline_batch_size: int = 256
    performance_sample_count: int = 1024


@dataclass(frozen=True)
class LoadGenRun:
    """One LoadGen test as its logs tell it: the parsed summary, the verdict and where the logs are."""

    scenario: str
    mode: str
    summary: dict[str, str]
    verdict: str
    reason: str | None
    log_dir: Path
    accuracy: float | None = None
    samples_run: int = 0
    metric: float | None = None  # the study's metric from the accuracy log (None for top1: ``accuracy`` is it)
    metric_name: str | None = None  # the metric's name (None for top1)

    def ns_to_ms(self, key: str) -> float:
        """A latency of the summary (ns) in ms (NaN when absent)."""
        value = self.summary.get(key)
        return float(value) / 1e6 if value not in (None, "") else float("nan")

    def number(self, key: str) -> float:
        """A number of the summary (NaN when absent)."""
        value = self.summary.get(key)
        return float(value) if value not in (None, "") else float("nan")


_LINE = re.compile(r"^\s*\*?\s*([^:]+?)\s*:\s*(.+?)\s*$")


def parse_summary(text: str) -> dict[str, str]:
    """``key : value`` lines of ``mlperf_log_summary.txt`` (the first occurrence of each key)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _invalid_reason(text: str, summary: dict[str, str]) -> str | None:
    if summary.get("Result is") == "VALID":
        return None
    failed = [f"{k} : {v}" for k, v in summary.items() if v.upper() in ("NO", "FALSE")]
    recommendations = text.split("Recommendations:", 1)[1].split("=====", 1)[0] if "Recommendations:" in text else ""
    hints = [ln.strip(" *") for ln in recommendations.splitlines() if ln.strip(" *")]
    return "; ".join(failed + hints)[:600] or "LoadGen reported INVALID"


def _settings(lg: Any, scenario: str, mode: str, s: LoadGenSettings, samples: int) -> Any:
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, LOADGEN_SCENARIOS[scenario])
    t.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    t.min_query_count = s.min_query_count
    t.min_duration_ms = s.min_duration_ms
    t.qsl_rng_seed = t.sample_index_rng_seed = t.schedule_rng_seed = s.seed
    expected_ns = max(int(s.expected_latency_ms * 1e6), 1000)
    t.single_stream_expected_latency_ns = expected_ns
    t.multi_stream_expected_latency_ns = expected_ns * s.multi_stream_samples_per_query
    t.max_duration_ms = max(s.max_duration_ms, 10 * s.min_duration_ms)
    t.multi_stream_samples_per_query = s.multi_stream_samples_per_query
    t.server_target_qps = s.server_target_qps
    t.server_target_latency_ns = int(s.server_target_latency_ms * 1e6)
    t.offline_expected_qps = s.offline_expected_qps
    if scenario == "server":  # an unattainable target would otherwise schedule target × duration queries
        t.max_query_count = max(s.min_query_count, int(s.max_server_queries))
    t.performance_sample_count_override = samples
    return t


class _Library:
    """The Query Sample Library: validation samples, prepared for the variant when LoadGen loads them."""

    def __init__(self, variant: Variant, samples: Any) -> None:
        self.variant, self.samples = variant, samples  # one tensor, or a tuple of them (one per model input)
        self.loaded: dict[int, Any] = {}

    def load(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded[i] = self.variant.prepare(batch_slice(self.samples, i, i + 1))

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded.pop(i, None)


class _SystemUnderTest:
    """Runs the variant on each query's samples and answers with the predicted classes (int64) or, with
    ``raw_outputs`` (and for outputs that are not one (N, C) array of class scores), each sample's outputs as
    float32 bytes, output after output."""

    def __init__(self, lg: Any, library: _Library, scenario: str, batch: int, raw_outputs: bool = False) -> None:
        self.lg, self.library, self.scenario, self.batch = lg, library, scenario, batch
        self.raw_outputs = raw_outputs
        self.samples_run = 0

    def issue(self, queries: Sequence[Any]) -> None:
        if self.scenario in ("single_stream", "server"):
            for q in queries:
                out = self.library.variant.run(self.library.loaded[q.index])
                self._complete([q], self.library.variant.to_logits(out))
            return
        for i in range(0, len(queries), self.batch):  # multi-stream query / offline: the samples as one batch
            part = queries[i : i + self.batch]
            x = _cat([batch_slice(self.library.samples, q.index, q.index + 1) for q in part])
            out = self.library.variant.run(self.library.variant.prepare(x))
            self._complete(part, self.library.variant.to_logits(out))

    def _complete(self, queries: Sequence[Any], logits: Any) -> None:
        self.samples_run += len(queries)
        buffers = [array.array("B", b) for b in _answers(logits, self.raw_outputs)]
        responses = [self.lg.QuerySampleResponse(q.id, b.buffer_info()[0], len(b)) for q, b in zip(queries, buffers)]
        self.lg.QuerySamplesComplete(responses)

    def flush(self) -> None:
        """Nothing is queued: every query is answered inside ``issue``."""


def _answers(out: Any, raw_outputs: bool) -> list[bytes]:
    """Each sample's answer: its predicted class (int64), or its outputs as float32 bytes one after the other
    (with ``raw_outputs``, or outputs that are not one (N, C) array of class scores)."""
    arrays = output_arrays(out)
    scores = class_scores(arrays[0])  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
    if not raw_outputs and len(arrays) == 1 and scores.ndim == 2:
        return [c.tobytes() for c in scores.argmax(1).astype(np.int64)]
    flat = [np.ascontiguousarray(a, dtype=np.float32).reshape(len(a), -1) for a in arrays]
    return [b"".join(f[i].tobytes() for f in flat) for i in range(len(flat[0]))]


def _cat(parts: Sequence[Any]) -> Any:
    """Batches (one tensor each, or a tuple per model input) as one batch of the same form."""
    if isinstance(parts[0], (tuple, list)):
        return tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))
    return torch.cat(list(parts))


def output_shapes(variant: Variant, samples: Any) -> list[tuple[int, ...]]:
    """The shape of one sample's slice of each of the variant's outputs (run once on the first sample)."""
    out = variant.to_logits(variant.run(variant.prepare(batch_slice(samples, 0, 1))))
    return [tuple(a.shape[1:]) for a in output_arrays(out)]


def performance_samples(samples: Any, settings: LoadGenSettings) -> int:
    """How many samples LoadGen keeps loaded: the setting, at most the data, and what fits in a quarter of memory."""
    import os

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    first = batch_parts(batch_slice(samples, 0, 1))
    per_sample = max(sum(int(p.numel()) for p in first) * 4, 1) * 2  # the raw sample and its prepared copy
    return max(1, min(batch_len(samples), settings.performance_sample_count, int(memory // 4 // per_sample)))


def run_loadgen(
    variant: Variant,
    samples: Any,
    scenario: str,
    settings: LoadGenSettings,
    log_dir: Path,
    mode: str = "performance",
    labels: np.ndarray | None = None,
    scoring: Scoring | None = None,
) -> LoadGenRun:
    """Run one LoadGen test of ``variant`` on ``samples`` (one tensor, or a tuple of them for several model inputs)
    and read its logs (kept in ``log_dir``).

    In ``mode="accuracy"`` every sample is run once. Without ``scoring`` (top-1), the accuracy is computed from
    LoadGen's accuracy log with ``labels`` (the class the SUT returned for each sample index). With ``scoring`` (the
    study's metric, its fp32 reference set for a label-free one) the SUT answers with each sample's raw outputs;
    they are read back from the accuracy log per sample index, reassembled per output in sample order and scored
    (``metric``; ``accuracy`` too when the first output is (N, C) class scores and ``labels`` class ids).

    Raises:
        ValueError: with ``scoring``, an accuracy log that lacks a sample or holds answers of the wrong size.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    raw = scoring is not None and mode == "accuracy"
    shapes = output_shapes(variant, samples) if raw else []
    samples_run = _test(variant, samples, scenario, settings, log_dir, mode, raw)
    text = (log_dir / "mlperf_log_summary.txt").read_text(encoding="utf-8", errors="replace")
    summary = parse_summary(text)
    accuracy, metric = None, None
    if raw and scoring is not None:
        outputs = logged_outputs(log_dir / "mlperf_log_accuracy.json", batch_len(samples), shapes)
        metric = scoring.score(outputs, labels)
        accuracy = _top1(outputs[0], labels)
    elif mode == "accuracy":
        accuracy = _accuracy(log_dir / "mlperf_log_accuracy.json", labels)
    verdict = summary.get("Result is", "N/A" if mode == "accuracy" else "INVALID")
    return LoadGenRun(
        scenario,
        mode,
        summary,
        verdict,
        _invalid_reason(text, summary) if mode != "accuracy" else None,
        log_dir,
        accuracy,
        samples_run,
        metric,
        scoring.metric.name if raw and scoring is not None else None,
    )


def _test(
    variant: Variant, samples: Any, scenario: str, s: LoadGenSettings, log_dir: Path, mode: str, raw: bool
) -> int:
    """One LoadGen test with its logs in ``log_dir``; returns how many samples the SUT ran."""
    import mlperf_loadgen as lg

    library = _Library(variant, samples)
    batch = s.multi_stream_samples_per_query if scenario == "multi_stream" else s.offline_batch_size
    sut_impl = _SystemUnderTest(lg, library, scenario, batch, raw_outputs=raw)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    loaded = performance_samples(samples, s)
    qsl = lg.ConstructQSL(batch_len(samples), loaded, library.load, library.unload)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, _settings(lg, scenario, mode, s, loaded), log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return sut_impl.samples_run


def _accuracy(path: Path, labels: np.ndarray | None) -> float | None:
    """Accuracy from LoadGen's accuracy log: one predicted class (int64, hex) per sample index."""
    if labels is None or not path.exists():
        return None
    entries = json.loads(path.read_text(encoding="utf-8") or "[]")
    predicted = {int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.int64)[0]) for e in entries}
    if not predicted:
        return None
    return float(np.mean([predicted[i] == int(labels[i]) for i in sorted(predicted)]))


def _top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy when the outputs are (N, C) class scores and the labels class ids (N,) (None otherwise)."""
    logits = class_scores(logits)
    if labels is None or logits.ndim != 2 or np.shape(labels) != (len(logits),):
        return None
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
        return None
    return float(np.mean(logits.argmax(1) == np.asarray(labels)))


def logged_outputs(path: Path, samples: int, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The outputs the SUT answered with, read back from LoadGen's accuracy log: per sample index its float32
    bytes (hex), split into one slice per output of ``shapes``; per output the samples stacked in index order.

    Raises:
        ValueError: no log, a sample index missing, or an answer whose size is not that of the outputs.
    """
    if not path.is_file():
        raise ValueError(f"LoadGen wrote no accuracy log ({path}).")
    answers = {int(e["qsl_idx"]): e["data"] for e in json.loads(path.read_text(encoding="utf-8") or "[]")}
    missing = [i for i in range(samples) if i not in answers]
    if missing:
        raise ValueError(
            f"LoadGen's accuracy log {path} lacks {len(missing)} of {samples} samples (indices {missing[:5]} …)."
        )
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    ends = np.cumsum(sizes)
    outputs = [np.empty((samples, *s), dtype=np.float32) for s in shapes]
    for i in range(samples):
        flat = np.frombuffer(bytes.fromhex(answers[i]), dtype=np.float32)
        if flat.size != int(ends[-1]):
            raise ValueError(
                f"LoadGen's accuracy log {path}: sample {i} holds {flat.size} values, its outputs {list(shapes)} "
                f"hold {int(ends[-1])}."
            )
        for k, out in enumerate(outputs):
            out[i] = flat[int(ends[k]) - sizes[k] : int(ends[k])].reshape(shapes[k])
    return outputs
