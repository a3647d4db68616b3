"""MLPerf LoadGen as the deployment scenarios' driver: a System Under Test for any variant.

``run_loadgen`` builds a Query Sample Library over the validation samples (loaded and unloaded in
LoadGen's callbacks, ``performance_sample_count`` of them at a time), a SUT that runs the variant
on the samples of each query and answers with the predicted class, runs one LoadGen test
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

from ..variants import Variant

__all__ = ["LOADGEN_SCENARIOS", "LoadGenRun", "LoadGenSettings", "parse_summary", "performance_samples", "run_loadgen"]

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

    def __init__(self, variant: Variant, samples: torch.Tensor) -> None:
        self.variant, self.samples = variant, samples
        self.loaded: dict[int, Any] = {}

    def load(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded[i] = self.variant.prepare(self.samples[i : i + 1])

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.loaded.pop(i, None)


class _SystemUnderTest:
    """Runs the variant on each query's samples and answers with the predicted classes (int64)."""

    def __init__(self, lg: Any, library: _Library, scenario: str, batch: int) -> None:
        self.lg, self.library, self.scenario, self.batch = lg, library, scenario, batch
        self.samples_run = 0

    def issue(self, queries: Sequence[Any]) -> None:
        if self.scenario in ("single_stream", "server"):
            for q in queries:
                out = self.library.variant.run(self.library.loaded[q.index])
                self._complete([q], self.library.variant.to_logits(out))
            return
        for i in range(0, len(queries), self.batch):  # multi-stream query / offline: the samples as one batch
            part = queries[i : i + self.batch]
            x = torch.cat([self.library.samples[q.index : q.index + 1] for q in part])
            out = self.library.variant.run(self.library.variant.prepare(x))
            self._complete(part, self.library.variant.to_logits(out))

    def _complete(self, queries: Sequence[Any], logits: np.ndarray) -> None:
        self.samples_run += len(queries)
        classes = np.asarray(logits).argmax(1).astype(np.int64)
        buffers = [array.array("B", c.tobytes()) for c in classes]
        responses = [self.lg.QuerySampleResponse(q.id, b.buffer_info()[0], len(b)) for q, b in zip(queries, buffers)]
        self.lg.QuerySamplesComplete(responses)

    def flush(self) -> None:
        """Nothing is queued: every query is answered inside ``issue``."""


def performance_samples(samples: torch.Tensor, settings: LoadGenSettings) -> int:
    """How many samples LoadGen keeps loaded: the setting, at most the data, and what fits in a quarter of memory."""
    import os

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    per_sample = max(int(samples[:1].numel()) * 4, 1) * 2  # the raw sample and its prepared copy
    return max(1, min(len(samples), settings.performance_sample_count, int(memory // 4 // per_sample)))


def run_loadgen(
    variant: Variant,
    samples: torch.Tensor,
    scenario: str,
    settings: LoadGenSettings,
    log_dir: Path,
    mode: str = "performance",
    labels: np.ndarray | None = None,
) -> LoadGenRun:
    """Run one LoadGen test of ``variant`` on ``samples`` and read its logs (kept in ``log_dir``).

    In ``mode="accuracy"`` every sample is run once and, with ``labels``, the accuracy is computed
    from LoadGen's accuracy log (the classes the SUT returned for each sample index).
    """
    import mlperf_loadgen as lg

    log_dir.mkdir(parents=True, exist_ok=True)
    library = _Library(variant, samples)
    batch = settings.multi_stream_samples_per_query if scenario == "multi_stream" else settings.offline_batch_size
    sut_impl = _SystemUnderTest(lg, library, scenario, batch)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(len(samples), performance_samples(samples, settings), library.load, library.unload)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(
            sut, qsl, _settings(lg, scenario, mode, settings, performance_samples(samples, settings)), log
        )
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    text = (log_dir / "mlperf_log_summary.txt").read_text(encoding="utf-8", errors="replace")
    summary = parse_summary(text)
    accuracy = _accuracy(log_dir / "mlperf_log_accuracy.json", labels) if mode == "accuracy" else None
    verdict = summary.get("Result is", "N/A" if mode == "accuracy" else "INVALID")
    return LoadGenRun(
        scenario,
        mode,
        summary,
        verdict,
        _invalid_reason(text, summary) if mode != "accuracy" else None,
        log_dir,
        accuracy,
        sut_impl.samples_run,
    )


def _accuracy(path: Path, labels: np.ndarray | None) -> float | None:
    """Accuracy from LoadGen's accuracy log: one predicted class (int64, hex) per sample index."""
    if labels is None or not path.exists():
        return None
    entries = json.loads(path.read_text(encoding="utf-8") or "[]")
    predicted = {int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.int64)[0]) for e in entries}
    if not predicted:
        return None
    return float(np.mean([predicted[i] == int(labels[i]) for i in sorted(predicted)]))
