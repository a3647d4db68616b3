"""Measure stage metrics: accuracy, latency distribution, throughput, memory, energy.

Every measurement keeps its raw samples (``LatencySamples``, per-sample correctness)
and the environment in an immutable ``MeasurementRecord``; means, medians,
percentiles and intervals are computed from those samples. ``collect_metrics``
measures a torch model or any backend's ``Variant`` the same way.

Units: latency in ms, memory in MB = 10^6 bytes of state-dict / initializer tensors at
their real dtype, energy in J per inference of ``latency_batch_size`` samples.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import timeit
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.utils.benchmark import Timer
from torch.utils.data import DataLoader

from ..config import BudgetSettings
from ..core import (
    SamplingPlan,
    batch_len,
    batch_map,
    batch_runs,
    batch_slice,
    call_user_code,
    ci95_half_width,
    class_scores,
    concat_outputs,
    environment,
    import_callable,
    sample_calls,
    sample_rounds,
    sample_std,
    split_interrupted,
)
from ..variants import PRECISIONS, Variant, state_dict_bytes, torch_kernel_precision, wrap_torch_module
from .energy import EnergyEstimate, RaplReader, proxy_energy
from .host import instance_bytes_budget, release_freed_memory, watch_host
from .scoring import METRICS, Metric, MetricError, get_metric, user_metric
from .threads import torch_threads

_T = TypeVar("_T")

__all__ = [
    "INSTANCE_BYTES_BUDGET",
    "BenchmarkSettings",
    "LatencySamples",
    "MeasurementRecord",
    "ModelLike",
    "PerfMetrics",
    "Scoring",
    "as_variant",
    "calls_per_sample",
    "collect_metrics",
    "evaluate_accuracy",
    "evaluate_outputs",
    "evaluate_predictions",
    "instance_count",
    "latency_differs",
    "latency_samples",
    "loader_targets",
    "measure_latency",
    "measure_latency_distribution",
    "measure_variant",
    "measure_variants",
    "memory_violations",
    "metric_config_errors",
    "model_memory_mb",
    "pinned",
    "scoring_for",
    "target_kind",
]

ModelLike = nn.Module | Variant


@dataclass(frozen=True)
class PerfMetrics:
    """All performance metrics of one configuration (the seven documented core fields first).

    Every latency here is a host measurement; ``device_latency_ms`` alone is scaled to the
    simulated device (host latency × ``latency_multiplier``).

    Attributes:
        accuracy: fraction correct on the evaluation set.
        latency_ms: mean host latency of one inference of ``latency_batch_size`` samples.
        latency_std_ms: standard deviation of the latency samples.
        latency_p95_ms: 95th percentile of the latency samples.
        throughput_sps: samples/s at the loader's batch size.
        memory_mb: parameter memory (state dict / initializers at their real dtype), 10^6 bytes.
        energy_proxy_j: energy per inference in J (a historical name); ``energy_source`` says whether it
            came from RAPL package counters (``rapl``) or power_watts × host latency (``proxy``).
        device_latency_ms: ``latency_ms`` × the latency multiplier (linear clock model of the device).
    """

    accuracy: float
    latency_ms: float
    latency_std_ms: float
    latency_p95_ms: float
    throughput_sps: float
    memory_mb: float
    energy_proxy_j: float
    latency_median_ms: float = math.nan
    latency_ci95_ms: float = math.nan
    batch_latency_ms: float = math.nan
    energy_source: str = "proxy"
    device_latency_ms: float = math.nan
    metric: float = math.nan  # the study's metric when it is not top1 (NaN: not computed)


@dataclass(frozen=True)
class LatencySamples:
    """Raw latency samples (ms), each the mean of ``runs_per_sample`` calls on a batch of ``batch_size``."""

    batch_size: int
    samples_ms: tuple[float, ...]
    runs_per_sample: int = 1
    rounds: int = 1  # interleaved rounds the samples were taken in
    # samples set aside as interrupted (longer than BenchmarkSettings.interrupted_factor × the median): kept here,
    # out of every statistic
    interrupted_ms: tuple[float, ...] = ()
    instances: int = 1  # independent instances of the build (sessions, module copies) the rounds rotated over
    # the per-variant time budget (BenchmarkSettings.max_s) ended the rounds before the CI target or the wanted
    # samples were reached: the row's CI is what the budget bought
    budget_hit: bool = False
    # seconds the latency measurement spent calling the variant (warm-up and set-aside samples included; None: not
    # recorded, an older record)
    spent_s: float | None = None

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_ms)) if self.n else math.nan

    @property
    def std(self) -> float:
        return sample_std(self.samples_ms)

    @property
    def median(self) -> float:
        return float(np.median(self.samples_ms)) if self.n else math.nan

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples_ms, 95)) if self.n else math.nan

    @property
    def ci95(self) -> float:
        """Half-width of the t-based 95 % interval of the mean (NaN for n < 2): ``core.ci95_half_width``."""
        return ci95_half_width(self.samples_ms)


@dataclass(frozen=True)
class MeasurementRecord:
    """Everything one measurement produced; statistics come from the raw parts."""

    backend: str
    precision: str
    kernel_precision: str
    parameter_bytes: int
    latency: LatencySamples
    batch_latency: LatencySamples
    correct: tuple[bool, ...]
    energy: EnergyEstimate
    environment: Mapping[str, Any] = field(default_factory=dict)
    latency_multiplier: float = 1.0
    logits_finite: bool = True
    metric: float | None = None  # the study's metric on the validation split (None: top1, not computed)
    metric_name: str | None = None  # its display name; None when the study scores top1 (the accuracy)

    @functools.cached_property
    def metrics(self) -> PerfMetrics:
        """Statistics of the raw samples (host figures; ``device_latency_ms`` scaled); computed once per record
        (the record is immutable)."""
        batch_med = self.batch_latency.median
        return PerfMetrics(
            accuracy=float(np.mean(self.correct)) if self.correct else math.nan,
            latency_ms=self.latency.mean,
            latency_std_ms=self.latency.std,
            latency_p95_ms=self.latency.p95,
            throughput_sps=self.batch_latency.batch_size / (batch_med / 1e3) if batch_med > 0 else math.nan,
            memory_mb=self.parameter_bytes / 1e6,
            energy_proxy_j=self.energy.joules,
            latency_median_ms=self.latency.median,
            latency_ci95_ms=self.latency.ci95,
            batch_latency_ms=batch_med,
            energy_source=self.energy.source,
            device_latency_ms=self.latency.mean * self.latency_multiplier,
            metric=self.metric if self.metric is not None else math.nan,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form including raw samples."""
        d = asdict(self)
        d["environment"] = dict(self.environment)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MeasurementRecord:
        """Inverse of ``to_dict``."""
        lat, batch, energy = d["latency"], d["batch_latency"], d["energy"]
        return cls(
            backend=d["backend"],
            precision=d["precision"],
            kernel_precision=d["kernel_precision"],
            parameter_bytes=int(d["parameter_bytes"]),
            latency=LatencySamples(
                int(lat["batch_size"]),
                tuple(lat["samples_ms"]),
                int(lat["runs_per_sample"]),
                int(lat.get("rounds", 1)),
                tuple(lat.get("interrupted_ms") or ()),
                int(lat.get("instances", 1)),
                bool(lat.get("budget_hit", False)),
                float(lat["spent_s"]) if lat.get("spent_s") is not None else None,
            ),
            batch_latency=LatencySamples(
                int(batch["batch_size"]), tuple(batch["samples_ms"]), int(batch["runs_per_sample"])
            ),
            correct=tuple(bool(c) for c in d["correct"]),
            energy=EnergyEstimate(float(energy["joules"]), energy["source"], energy.get("detail", "")),
            environment=dict(d.get("environment") or {}),
            latency_multiplier=float(d.get("latency_multiplier", 1.0)),
            logits_finite=bool(d.get("logits_finite", True)),
            metric=float(d["metric"]) if d.get("metric") is not None else None,
            metric_name=d.get("metric_name"),
        )


def as_variant(
    model: ModelLike, precision: str | None, loader: Iterable, device: Any = "cpu", calibration_batches: int = 4
) -> Variant:
    """A Variant as is, or a plain torch module wrapped at ``precision`` (None: what it computes in).

    A float module asked for int8 is quantized with the first ``calibration_batches`` batches of ``loader``.
    """
    if isinstance(model, Variant):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter must be a torch.nn.Module or a Variant. Got {type(model).__name__}.")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"The 'precision' parameter must be one of {PRECISIONS.names()}. Got {precision!r} instead.")
    calib: list[torch.Tensor] = []
    if precision is not None and PRECISIONS.get(precision).quantized and torch_kernel_precision(model) != "int8":
        for x, *_ in loader:
            if len(calib) >= calibration_batches:
                break
            calib.append(x.float())
        if not calib:
            raise ValueError("No batches in the loader: int8 calibration needs data.")
    return wrap_torch_module(model, precision, calib)


def _first_batch(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    for batch in loader:
        return batch[0], batch[1]
    raise ValueError("No batches in the loader: the evaluation data set is empty.")


# Input values of one evaluation run (see ``predict_in_runs``): 3 samples of 3×224×224, a whole batch of 128 digits.
EVALUATION_RUN_VALUES = 1 << 19


def predict_in_runs(variant: Variant, x: Any) -> Any:
    """``variant.predict(x)`` over runs of at most ``EVALUATION_RUN_VALUES`` input values (``core.batch_runs``; a
    batch within the bound stays whole), the outputs concatenated. Each sample's outputs do not depend on the
    others in its batch, while a real-size network's activation memory grows with the batch run at once (ONNX
    Runtime kept a 0.6 GB arena after 32 MobileNetV2 images at 224²) and here its time per image did too (a 32-image
    batch took twice a 3-image run's time per image). Programs with static batches (``static_batches`` in the
    metadata: ExecuTorch, LiteRT) take whole batches: a smaller run would be padded to a program's batch."""
    runs = [x] if variant.metadata.get("static_batches") else batch_runs([x], EVALUATION_RUN_VALUES)
    if len(runs) == 1:
        return variant.predict(x)
    out = concat_outputs([variant.predict(r) for r in runs])
    return out[0] if len(out) == 1 else tuple(out)


def evaluate_predictions(
    model: ModelLike, loader: DataLoader, device: Any = "cpu", precision: str | None = "fp32"
) -> tuple[tuple[bool, ...], bool]:
    """Per-sample correctness over ``loader`` and whether every logit was finite."""
    variant = as_variant(model, precision, loader, device)
    correct: list[bool] = []
    finite = True
    batches = 0
    for x, y in loader:
        logits = class_scores(predict_in_runs(variant, x))  # Caffe2-style (N, C, 1, 1) scores read as (N, C)
        finite &= bool(np.isfinite(logits).all())
        correct.extend((logits.argmax(1) == y.numpy()).tolist())
        batches += 1
    if batches == 0:
        raise ValueError("No batches in the loader: the evaluation data set is empty.")
    return tuple(correct), finite


def evaluate_accuracy(
    model: ModelLike, loader: DataLoader, device: Any = "cpu", precision: str | None = "fp32"
) -> float:
    """Accuracy in [0, 1] of a model or variant on ``loader``.

    ``precision``: fp32 / fp16 (a float module is converted) / int8 (a float module is quantized
    with the loader's first batches; a quantized module runs as is); None = what the module computes in.

    Raises:
        ValueError: the loader yields no batches ("No batches").
    """
    correct, _ = evaluate_predictions(model, loader, device, precision)
    return float(np.mean(correct))


@dataclass(frozen=True, eq=False)
class Scoring:
    """The study's metric as every variant is scored: ``postprocess`` (the user's, or none) on the outputs, then
    ``metric(outputs, targets, reference)`` with the fp32 baseline's post-processed outputs as ``reference``.

    Attributes:
        metric: the metric (``top1`` for the default study).
        postprocess: ``postprocess(outputs) -> Any`` run on every variant's outputs identically; None: as they are.
        reference: the fp32 baseline's post-processed outputs (``with_reference``); None until then.
    """

    metric: Metric
    postprocess: Callable[[list[np.ndarray]], Any] | None = None
    reference: Any = None

    @property
    def is_top1(self) -> bool:
        """The default study (top1, no postprocess): the metric is the accuracy column itself (no extra columns)."""
        return self.postprocess is None and self.metric is METRICS.get("top1")

    def prepared(self, outputs: list[np.ndarray]) -> Any:
        """``outputs`` after the postprocess."""
        if self.postprocess is None:
            return outputs
        return call_user_code("The 'postprocess' callable", self.postprocess, outputs)

    def with_reference(self, outputs: list[np.ndarray]) -> Scoring:
        """A copy that compares with ``outputs`` (the fp32 baseline's, post-processed here)."""
        return replace(self, reference=self.prepared(outputs))

    def score(self, outputs: list[np.ndarray], targets: np.ndarray | None) -> float:
        """The metric of ``outputs`` (one array per model output, every validation sample).

        Raises:
            MetricError: outputs or targets the metric cannot read; UserCodeError: the user's code raised.
        """
        return self.metric(self.prepared(outputs), targets, self.reference)


def scoring_for(cfg: BudgetSettings, search_dirs: Sequence[str | None] = ()) -> Scoring:
    """The ``Scoring`` of a study's ``metric`` / ``metric_higher_is_better`` / ``metric_name`` / ``postprocess``
    (callables imported from ``search_dirs`` first, then ``sys.path``).

    Raises:
        UnknownNameError: an unknown built-in. CallableImportError: a callable that does not import.
    """
    if ":" in cfg.metric:
        if cfg.metric_higher_is_better is None:
            raise MetricError(f"The metric callable {cfg.metric!r} needs metric_higher_is_better: true or false.")
        metric = user_metric(cfg.metric, cfg.metric_higher_is_better, cfg.metric_name, search_dirs)
    else:
        metric = get_metric(cfg.metric)
    post = import_callable(cfg.postprocess, "postprocess", search_dirs) if cfg.postprocess else None
    return Scoring(metric, post)


def metric_config_errors(cfg: BudgetSettings) -> list[str]:
    """What the config says about its metric that the registry refuses: an unknown built-in, or a direction
    (``metric_higher_is_better``) that disagrees with the built-in's own."""
    if ":" in cfg.metric:
        return []
    if cfg.metric not in METRICS:
        return [
            f"The 'metric' parameter must be one of {METRICS.names()} or 'package.module:function'. "
            f"Got {cfg.metric!r} instead."
        ]
    own = METRICS.get(cfg.metric).higher_is_better
    if cfg.metric_higher_is_better is not None and cfg.metric_higher_is_better != own:
        return [
            f"The 'metric_higher_is_better' parameter must be {str(own).lower()} (or left out) for the built-in "
            f"metric {cfg.metric!r}. Got {str(cfg.metric_higher_is_better).lower()} instead."
        ]
    return []


def target_kind(cfg: BudgetSettings) -> str:
    """What the study's metric reads of the data's labels (``inputs`` ``TARGET_KINDS``): ``class_ids`` for top1 and
    top5, ``none`` for a label-free built-in (agreement, sqnr_db: the labels may be left out), ``any`` otherwise."""
    if cfg.metric in ("top1", "top5"):
        return "class_ids"
    if cfg.metric in METRICS and not METRICS.get(cfg.metric).needs_labels:
        return "none"
    return "any"


def _targets(batch: Sequence[Any]) -> np.ndarray | None:
    """A batch's targets as an array (None when the data has no labels: none given, or of shape (N, 0))."""
    if len(batch) < 2 or batch[1] is None:
        return None
    y = batch[1]
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return None if y.ndim == 2 and y.shape[1] == 0 else y


def loader_targets(loader: Iterable) -> np.ndarray | None:
    """Every target of ``loader``, concatenated (None when the data has no labels)."""
    ys = [y for y in (_targets(b) for b in loader) if y is not None]
    return np.concatenate(ys) if ys else None


def _top1_correct(logits: np.ndarray, targets: np.ndarray | None) -> tuple[bool, ...]:
    """Per-sample ``argmax == target`` when the outputs are (N, C) class scores (or (N, C, 1, 1)) and the targets
    class ids (N,); empty otherwise (the ``accuracy`` column is then NaN)."""
    logits = class_scores(logits)
    if targets is None or logits.ndim != 2 or targets.shape != (logits.shape[0],):
        return ()
    if not np.issubdtype(targets.dtype, np.integer):
        return ()
    return tuple(bool(c) for c in (logits.argmax(1) == targets))


def evaluate_outputs(variant: Variant, loader: Iterable) -> tuple[list[np.ndarray], np.ndarray | None, bool]:
    """Every output of ``variant`` over ``loader`` (one array per model output, the batches concatenated), the
    targets (None when the data has none) and whether every output was finite."""
    outs: list[Any] = []
    targets: list[np.ndarray] = []
    for batch in loader:
        outs.append(predict_in_runs(variant, batch[0]))
        y = _targets(batch)
        if y is not None:
            targets.append(y)
    if not outs:
        raise ValueError("No batches in the loader: the evaluation data set is empty.")
    out = concat_outputs(outs)
    finite = all(bool(np.isfinite(o).all()) for o in out if np.issubdtype(o.dtype, np.number))
    return out, (np.concatenate(targets) if targets else None), finite


def _evaluate(variant: Variant, loader: Iterable, scoring: Scoring | None) -> tuple[tuple[bool, ...], bool, float]:
    """(per-sample top-1 correctness, finite outputs, the metric): the accuracy pass of one variant."""
    if scoring is None or scoring.is_top1:
        correct, finite = evaluate_predictions(variant, loader)  # type: ignore[arg-type]
        return correct, finite, math.nan
    outputs, targets, finite = evaluate_outputs(variant, loader)
    return _top1_correct(outputs[0], targets), finite, scoring.score(outputs, targets)


def _on_fresh(variant: Variant, fn: Callable[[Variant], _T]) -> _T:
    """``fn`` on a fresh instance of ``variant`` (the throughput pass, timed at the evaluation batch), dropped when
    ``fn`` returns, and with it the runtime memory that batch grew: an ONNX Runtime session keeps the arena of its
    largest batch (0.6 GB for a 32-image batch of MobileNetV2 at 224² here), an OpenVINO compiled model its
    activations, and a study holds every variant of a group until all of them are timed. ``fn`` runs on the variant
    itself where it cannot be copied (``replicas`` None). The accuracy pass needs none: it runs in bounded runs
    (``predict_in_runs``)."""
    make = variant.replicas
    if make is None:
        return fn(variant)
    result = fn(replace(variant, run=make()))  # nothing else holds the fresh instance: it goes here
    release_freed_memory()  # and its buffers go back to the system instead of staying with the allocator
    return result


def _usable_cores() -> int:
    """How many cores this process may run on (its affinity; the CPU count where the host does not say)."""
    get = getattr(os, "sched_getaffinity", None)
    return len(get(0)) if get is not None else (os.cpu_count() or 1)


def _evaluate_all(
    variants: Sequence[Variant], loader: Iterable, scoring: Scoring | None, threads: int
) -> list[tuple[tuple[bool, ...], bool, float]]:
    """The accuracy passes of several variants, side by side: one variant per worker thread, as many workers as
    the process's cores hold ``threads``-thread runs (each built variant is used by one thread only, so no runtime
    object is shared between threads). Accuracy is not a timing: it need not wait its turn on the pinned core,
    and on a real-size model it is most of a variant's measuring (192 images of 224² through MobileNetV2 took
    3.3 s at one thread here). Runs before the latency rounds pin the process, so the workers may use every
    core; with one worker (one core, or one variant) the passes run in this thread. What the passes freed goes
    back to the system afterwards."""
    workers = min(len(variants), max(1, _usable_cores() // max(threads, 1)))
    if workers <= 1:
        results = [_evaluate(v, loader, scoring) for v in variants]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="edge-opt-accuracy") as pool:
            results = list(pool.map(lambda v: _evaluate(v, loader, scoring), variants))
    release_freed_memory()
    return results


def _callable(model: ModelLike, sample_input: torch.Tensor) -> tuple[Any, Any]:
    variant = model if isinstance(model, Variant) else wrap_torch_module(model, None, [sample_input])
    return variant.run, variant.prepare(sample_input)


def calls_per_sample(run: Any, prepared: Any, runs: int, min_sample_s: float) -> int:
    """Enough calls that one sample lasts ``min_sample_s`` (one when a call already does), judged by one timed call
    (``core.sample_calls``); ``runs`` without a call when ``min_sample_s`` ≤ 0."""
    if min_sample_s <= 0:
        return runs
    t0 = time.perf_counter()
    run(prepared)
    return sample_calls(time.perf_counter() - t0, runs, min_sample_s)


def latency_samples(
    run: Any,
    prepared: Any,
    *,
    repeats: int,
    runs: int,
    warmup: int,
    threads: int | None = None,
    min_sample_s: float = 0.0,
) -> list[float]:
    """``repeats`` samples (ms), each the mean of ``runs`` timed calls (``_sample_ms``);
    with ``min_sample_s`` > 0, the calls per sample are sized so that each sample lasts that long instead."""
    with torch_threads(threads or torch.get_num_threads()):
        for _ in range(warmup):
            run(prepared)
        runs = calls_per_sample(run, prepared, runs, min_sample_s)
        timer = _timer(run, prepared)
        return [_sample_ms(timer, runs) for _ in range(repeats)]


def _timer(run: Callable[[Any], Any], x: Any) -> timeit.Timer:
    """The timer of ``run(x)``: the standard library's ``timeit.Timer`` (garbage collection off while it times, the
    ``perf_counter`` clock) — what ``torch.utils.benchmark.Timer`` wraps on a CPU, without the two untimed calls
    its ``timeit`` makes before every measurement (three calls for a one-call sample of a long call)."""
    return timeit.Timer(stmt="run(x)", timer=time.perf_counter, globals={"run": run, "x": x})


def _sample_ms(timer: timeit.Timer, calls: int) -> float:
    """One latency sample: the mean time (ms) of ``calls`` timed calls."""
    return timer.timeit(calls) / calls * 1e3


def measure_latency(model: ModelLike, sample_input: torch.Tensor, runs: int = 50, warmup: int = 10) -> float:
    """Mean latency (ms) of ``runs`` calls on ``sample_input`` after ``warmup`` calls."""
    run, x = _callable(model, sample_input)
    return latency_samples(run, x, repeats=1, runs=runs, warmup=warmup)[0]


def measure_latency_distribution(
    model: ModelLike, sample_input: torch.Tensor, repeats: int = 20, runs: int = 10, warmup: int = 5
) -> tuple[float, float, float]:
    """(mean, std, p95) in ms over ``repeats`` samples of ``runs`` calls each."""
    run, x = _callable(model, sample_input)
    s = LatencySamples(
        len(sample_input), tuple(latency_samples(run, x, repeats=repeats, runs=runs, warmup=warmup)), runs
    )
    return s.mean, s.std, s.p95


def latency_differs(
    a_ms: Sequence[float], b_ms: Sequence[float], min_effect: float = 0.03, alpha: float = 0.05
) -> tuple[bool, float]:
    """Whether two latency sample sets differ: Mann-Whitney U (two-sided) p < ``alpha`` *and* medians
    differ by more than ``min_effect`` (relative), so tiny but "significant" gaps don't count.

    Returns:
        (differs, p_value); (False, nan) when either side has fewer than 2 samples.
    """
    if len(a_ms) < 2 or len(b_ms) < 2:
        return False, math.nan
    p = float(stats.mannwhitneyu(a_ms, b_ms, alternative="two-sided").pvalue)
    ma, mb = float(np.median(a_ms)), float(np.median(b_ms))
    effect = abs(ma - mb) / min(ma, mb) if min(ma, mb) > 0 else math.inf
    return bool(p < alpha and effect > min_effect), p


def model_memory_mb(model: nn.Module | Variant) -> float:
    """Parameter memory in MB (10^6 bytes): state-dict tensors at their real dtype, packed int8 weights included."""
    if isinstance(model, Variant):
        return model.parameter_bytes / 1e6
    return state_dict_bytes(model) / 1e6


def memory_violations(memory_mb: float, budgets: Sequence[float]) -> dict[str, bool]:
    """``{"violates_{budget}mb": memory_mb > budget}`` for every budget."""
    return {f"violates_{b}mb": bool(memory_mb > b) for b in budgets}


@dataclass(frozen=True)
class BenchmarkSettings:
    """How latency is sampled (one place for the measurement rules of every backend).

    Attributes:
        repeats: latency samples per round.
        trials: timed calls per sample when ``min_sample_ms`` is 0 (otherwise the calls per sample are sized to
            last ``min_sample_ms``: one call when a call already lasts that long).
        warmup: untimed calls first (on each instance).
        latency_batch_size: samples per timed call.
        threads: intra-op threads while measuring.
        min_sample_ms: calls per sample grow until a sample lasts this long (judged by the median warm-up call).
        target_rel_ci: add rounds of samples while the 95 % CI is wider than this fraction of the mean.
        max_extra_rounds: at most this many extra sets of ``repeats`` samples.
        rounds: the ``repeats`` samples are taken in this many interleaved rounds (every variant measured
            together gets a share of samples in each round, so drift on a shared host spreads over all of them);
            None = one sample per variant per round (``repeats`` rounds), the finest spread.
        pin: run the timed calls on fixed cores when the host allows it.
        throughput_min_time_s: minimum run time of the batch (throughput) measurement.
        interrupted_factor: a latency sample longer than this × the median of the variant's samples was
            interrupted (another process took the core for a large part of it): it is set aside (recorded, out of
            the mean, CI and percentiles) and another one taken; 0 keeps every sample.
        instances: the rounds rotate over this many independent instances of each variant (its ``replicate``:
            a new runtime session, a module copy), so a row does not rest on one instance's memory placement;
            fewer for a variant without ``replicate`` or whose copies would pass ``INSTANCE_BYTES_BUDGET``.
        max_s: per-variant time budget of the latency measurement (seconds calling the variant: warm-up, untimed
            round starts, set-aside samples included): its rounds stop when the CI target is met and at the latest
            once this is spent (with two kept samples), the record saying so (``LatencySamples.budget_hit``); it
            also bounds the throughput run. None: no budget.
    """

    repeats: int = 20
    trials: int = 10
    warmup: int = 5
    latency_batch_size: int = 1
    threads: int = 1
    min_sample_ms: float = 0.0
    target_rel_ci: float = 0.0
    max_extra_rounds: int = 4
    throughput_min_time_s: float = 0.1
    rounds: int | None = None
    pin: bool = True
    interrupted_factor: float = 1.5
    instances: int = 1
    max_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_s is not None and not (math.isfinite(self.max_s) and self.max_s > 0):
            raise ValueError(f"The 'max_s' parameter must be None or a positive number. Got {self.max_s!r} instead.")
        if not 1 <= self.instances <= 64:
            raise ValueError(f"The 'instances' parameter must be an int in [1, 64]. Got {self.instances!r} instead.")
        f = self.interrupted_factor
        if not (f == 0 or (math.isfinite(f) and f > 1)):
            raise ValueError(
                "The 'interrupted_factor' parameter must be 0 (keep every sample) or a finite number "
                f"above 1. Got {f!r} instead."
            )

    @classmethod
    def from_kwargs(
        cls, benchmark_repeats: int = 20, benchmark_trials: int = 10, benchmark_warmup: int = 5, **rest: Any
    ) -> BenchmarkSettings:
        """From the keyword names of ``collect_metrics`` (``benchmark_repeats`` …)."""
        return cls(repeats=benchmark_repeats, trials=benchmark_trials, warmup=benchmark_warmup, **rest)


def _task_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextlib.contextmanager
def pinned(threads: int, enabled: bool = True) -> Iterator[tuple[int, ...] | None]:
    """Pin every thread of this process to the last ``threads`` cores it may use (core 0 takes most interrupts)
    for the duration; yields those cores, or None when the host does not allow pinning (then nothing changes)."""
    get, set_ = getattr(os, "sched_getaffinity", None), getattr(os, "sched_setaffinity", None)
    if not enabled or get is None or set_ is None:
        yield None
        return
    before: dict[int, Any] = {}
    for tid in _task_ids():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended since it was listed
            before[tid] = get(tid)
    cores = tuple(sorted(get(0))[-max(threads, 1) :])
    try:
        for tid in before:
            with contextlib.suppress(ProcessLookupError):  # ended since (a pool's worker just joined): not a refusal
                set_(tid, cores)
    except OSError:
        cores = ()
    try:
        yield cores or None
    finally:
        for tid, mask in before.items():
            with contextlib.suppress(OSError):
                set_(tid, mask)


@dataclass
class _Timing:
    """One variant's latency samples while several are measured in interleaved rounds."""

    variant: Variant
    runs: int
    instances: list[tuple[Callable[[Any], Any], Any, timeit.Timer]]  # (run, prepared input, timer) of each instance
    samples: list[float] = field(default_factory=list)
    rounds: int = 0
    joules: float = 0.0
    energy_s: float = 0.0
    calls: int = 0
    spent_s: float = 0.0  # seconds spent calling the variant (warm-up, round starts, every sample)

    def split(self, factor: float) -> tuple[list[float], list[float]]:
        """(kept samples, interrupted samples): the agent's rule, ``core.split_interrupted``."""
        return split_interrupted(self.samples, factor)


_RAPL_MIN_WINDOW_S = 0.02  # the counters update about every millisecond


INSTANCE_BYTES_BUDGET = 256 * 2**20  # extra instances of a variant are made while all of them stay within this


def instance_count(variant: Variant, wanted: int) -> int:
    """How many instances of ``variant`` its latency rounds rotate over: ``wanted``, or 1 without
    ``replicate`` (the built one) or with a ``Replicas`` that is not ``timed`` (one fresh instance), or fewer
    when that many copies of its parameters would pass
    ``INSTANCE_BYTES_BUDGET`` or a quarter of the available memory (at least one copy is made whatever its size)."""
    if variant.replicas is None or not getattr(variant.replicate, "timed", True):
        return 1
    return max(1, min(wanted, instance_bytes_budget(INSTANCE_BYTES_BUDGET) // max(variant.parameter_bytes, 1)))


def _timed_calls(run: Callable[[Any], Any], x: Any, n: int) -> list[float]:
    """The seconds each of ``n`` calls took."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return times


def _instance(
    run: Callable[[Any], Any], variant: Variant, x: torch.Tensor, s: BenchmarkSettings
) -> tuple[tuple[Callable[[Any], Any], Any, timeit.Timer], list[float]]:
    """One instance (run, its own prepared input, its timer) and the seconds of its warm-up calls."""
    single = variant.prepare(batch_map(x, lambda t: t.clone()))  # its own input buffer too
    warm = _timed_calls(run, single, s.warmup)
    return (run, single, _timer(run, single)), warm


_PROBE_CALLS = 3  # calls whose median sizes the samples (the warm-up's after its first, topped up to this many)


def _start_timing(variant: Variant, x: torch.Tensor, s: BenchmarkSettings) -> _Timing:
    """The instances a variant is timed on: fresh ones from ``replicate`` (allocated as a deployment that loads
    the build allocates them, apart from the built object the accuracy pass just ran on the whole validation
    split — in one study here three built torch int8 modules ran 20–25 % slower than fresh copies of
    themselves), else the built one. The calls per sample follow the median of the first instance's warm-up calls
    after its first (topped up to ``_PROBE_CALLS`` timed calls); the warm-up counts as spent."""
    make = variant.replicas
    runs = [make() for _ in range(instance_count(variant, s.instances))] if make else [variant.run]
    made = [_instance(run, variant, x, s) for run in runs]
    instances = [m[0] for m in made]
    spent = math.fsum(t for m in made for t in m[1])
    calls = s.trials
    if s.min_sample_ms > 0:
        probe = made[0][1][1:]
        more = _timed_calls(instances[0][0], instances[0][1], max(0, _PROBE_CALLS - len(probe)))
        spent += math.fsum(more)
        calls = sample_calls(float(np.median(probe + more)), s.trials, s.min_sample_ms / 1e3)
    return _Timing(variant, calls, instances, spent_s=spent)


def _round(t: _Timing, n: int, reader: RaplReader) -> None:
    """``n`` more samples of one variant on its next instance, after a quarter sample's worth of untimed calls
    (the previous variant may have evicted this one's weights from the caches); package energy is summed over
    the samples when the host has RAPL counters."""
    run, single, timer = t.instances[t.rounds % len(t.instances)]
    begin = time.perf_counter()
    for _ in range(max(1, t.runs // 4)):
        run(single)
    start = reader.read_uj() if reader.available else None
    t0 = time.perf_counter()
    t.samples += [_sample_ms(timer, t.runs) for _ in range(n)]
    if start is not None:
        t.joules += reader.delta_j(start, reader.read_uj())
        t.energy_s += time.perf_counter() - t0
        t.calls += n * t.runs
    t.rounds += 1
    t.spent_s += time.perf_counter() - begin


def _sampling_plan(s: BenchmarkSettings) -> SamplingPlan:
    """The core sampling plan of a study's settings: ``repeats`` samples per variant spread over ``rounds``
    interleaved rounds, then, while a variant's CI is wider than the target, more in steps of a quarter of
    ``repeats`` samples (one round's share at least), up to ``max_extra_rounds`` × ``repeats`` more each, and
    within ``max_s`` seconds per variant."""
    per_round = 1 if s.rounds is None else max(1, math.ceil(s.repeats / max(s.rounds, 1)))
    return SamplingPlan(
        s.repeats,
        s.max_extra_rounds,
        s.target_rel_ci,
        s.interrupted_factor,
        step=max(per_round, s.repeats // 4),
        per_round=per_round,
        max_s=s.max_s,
    )


def _interleaved(timings: Sequence[_Timing], s: BenchmarkSettings, reader: RaplReader) -> None:
    """The variants' latency samples in interleaved rounds (the order reversed every other round) under
    ``_sampling_plan(s)``, by ``core.sample_rounds``: each round is ``_round`` on the variant's next instance."""
    sample_rounds(timings, lambda t, n: _round(t, n, reader), _sampling_plan(s), lambda t: t.spent_s)


def _batch_latency(variant: Variant, x_batch: torch.Tensor, s: BenchmarkSettings) -> LatencySamples:
    """The batch (throughput) samples, on a fresh instance of the variant: blocks of calls for
    ``throughput_min_time_s`` (``blocked_autorange``), or one timed call when the first call already lasted that
    long (``blocked_autorange`` would time a call to size its blocks, then run blocks until the minimum time: a
    100 ms batch call ran three times more)."""
    return _on_fresh(variant, lambda instance: _batch_samples(instance, x_batch, s))


def _batch_samples(instance: Variant, x_batch: Any, s: BenchmarkSettings) -> LatencySamples:
    run, prepared = instance.run, instance.prepare(x_batch)
    if _timed_calls(run, prepared, 1)[0] >= s.throughput_min_time_s:
        return LatencySamples(batch_len(x_batch), (_sample_ms(_timer(run, prepared), 1),), 1)
    timer = Timer(stmt="run(x)", globals={"run": run, "x": prepared}, num_threads=s.threads)
    m = timer.blocked_autorange(min_run_time=s.throughput_min_time_s)
    return LatencySamples(batch_len(x_batch), tuple(t * 1e3 for t in m.times), m.number_per_run)


def measure_variant(
    model: ModelLike,
    loader: DataLoader,
    settings: BenchmarkSettings | None = None,
    *,
    device: Any = "cpu",
    power_watts: float = 15.0,
    precision: str = "fp32",
    latency_multiplier: float = 1.0,
    rapl: RaplReader | None = None,
    scoring: Scoring | None = None,
    **setting_kwargs: Any,
) -> MeasurementRecord:
    """Measure a model or variant and keep the raw samples (``measure_variants`` of one).

    Args:
        settings: the sampling rules; or give ``collect_metrics``' keywords (``benchmark_repeats`` …).
        power_watts: for the energy proxy (power × host latency) when RAPL is unreadable.
        latency_multiplier: host → device factor stored with the record (``device_latency_ms``).
    """
    s = settings if settings is not None else BenchmarkSettings.from_kwargs(**setting_kwargs)
    return measure_variants(
        [model],
        loader,
        s,
        device=device,
        power_watts=power_watts,
        precision=precision,
        latency_multiplier=latency_multiplier,
        rapl=rapl,
        scoring=scoring,
    )[0]


def measure_variants(
    models: Sequence[ModelLike],
    loader: DataLoader,
    settings: BenchmarkSettings,
    *,
    device: Any = "cpu",
    power_watts: float = 15.0,
    precision: str = "fp32",
    latency_multiplier: float = 1.0,
    rapl: RaplReader | None = None,
    scoring: Scoring | None = None,
) -> list[MeasurementRecord]:
    """Measure several models or variants together: accuracy of each (side by side on the process's cores,
    ``_evaluate_all``), then on pinned cores each one's batch latency (a fresh instance each, dropped after it,
    before the latency instances exist: a real-size batch's runtime memory is not added to theirs), then their
    latency samples in interleaved rounds (``settings.rounds``, ``settings.pin``).

    The records' environment says which cores were pinned (``pinned_cores``, None when the host does not allow
    it) and how many variants were interleaved; ``latency.rounds`` how many rounds each one's samples took.
    ``scoring``: the study's metric when it is not top1 (the accuracy pass then collects every output, runs the
    postprocess and scores them; ``accuracy`` stays top-1 where the outputs are class scores of class ids).
    """
    s = settings
    x_batch, _ = _first_batch(loader)
    variants = [as_variant(m, precision, loader, device) for m in models]
    reader = rapl if rapl is not None else RaplReader()
    with torch_threads(s.threads):
        evaluated = _evaluate_all(variants, loader, scoring, s.threads)
    with torch_threads(s.threads), pinned(s.threads, s.pin) as cores, watch_host(cores) as host:
        batches = [_batch_latency(v, x_batch, s) for v in variants]
        timings = [_start_timing(v, batch_slice(x_batch, 0, s.latency_batch_size), s) for v in variants]
        _interleaved(timings, s, reader)
    env = {**environment(s.threads), "pinned_cores": list(cores) if cores else None, "interleaved_with": len(variants)}
    env.update(host.environment())  # how busy the host was around these rows (measure/host.py)
    name = scoring.metric.display_name if scoring is not None and not scoring.is_top1 else None
    return [
        replace(
            _record(
                t,
                ev[:2],
                b,
                env,
                power_watts,
                latency_multiplier,
                batch_len(batch_slice(x_batch, 0, s.latency_batch_size)),
                _sampling_plan(s),
            ),
            metric=ev[2] if name is not None else None,
            metric_name=name,
        )
        for t, ev, b in zip(timings, evaluated, batches, strict=True)
    ]


def _record(
    t: _Timing,
    evaluated: tuple[tuple[bool, ...], bool],
    batch: LatencySamples,
    env: dict[str, Any],
    power_watts: float,
    latency_multiplier: float,
    batch_size: int,
    plan: SamplingPlan,
) -> MeasurementRecord:
    kept, interrupted = t.split(plan.interrupted_factor)
    hit = plan.budget_hit(t.samples, t.spent_s)
    lat = LatencySamples(
        batch_size, tuple(kept), t.runs, t.rounds, tuple(interrupted), len(t.instances), hit, round(t.spent_s, 6)
    )
    if t.calls and math.isfinite(t.joules) and t.energy_s >= _RAPL_MIN_WINDOW_S:
        energy = EnergyEstimate(t.joules / t.calls, "rapl", "package-wide RAPL counters")
    else:  # the documented proxy: power × latency of one inference
        energy = proxy_energy(power_watts, lat.mean / 1e3)
    v = t.variant
    return MeasurementRecord(
        backend=v.backend,
        precision=v.precision,
        kernel_precision=v.kernel_precision,
        parameter_bytes=v.parameter_bytes,
        latency=lat,
        batch_latency=batch,
        correct=evaluated[0],
        energy=energy,
        environment=env,
        latency_multiplier=latency_multiplier,
        logits_finite=evaluated[1],
    )


def collect_metrics(
    model: ModelLike,
    loader: DataLoader,
    device: Any = "cpu",
    power_watts: float = 15.0,
    precision: str = "fp32",
    latency_multiplier: float = 1.0,
    benchmark_repeats: int = 20,
    **kwargs: Any,
) -> PerfMetrics:
    """Measure accuracy, latency distribution, throughput, memory and energy of a model or variant.

    Args:
        model: a torch module (built at ``precision``: fp32 or fp16) or a backend ``Variant``.
        loader: evaluation data; its first batch is the latency/throughput input.
        device: where a plain torch module runs (CPU measurements).
        power_watts: device power for the energy proxy (used when RAPL is unreadable).
        precision: "fp32" or "fp16" for a plain module; ignored for a Variant.
        latency_multiplier: host → simulated-device factor; gives ``device_latency_ms`` (every other
            latency stays a host figure).
        benchmark_repeats: number of latency samples.
        **kwargs: benchmark_trials (minimum calls per sample), benchmark_warmup, latency_batch_size, threads,
            throughput_min_time_s, min_sample_ms (calls per sample grow until a sample lasts this long),
            target_rel_ci / max_extra_rounds (add rounds of samples while the CI is wider than that).
    Returns:
        ``PerfMetrics``.
    Raises:
        ValueError: the loader yields no batches ("No batches").
    """
    return measure_variant(
        model,
        loader,
        device=device,
        power_watts=power_watts,
        precision=precision,
        latency_multiplier=latency_multiplier,
        benchmark_repeats=benchmark_repeats,
        **kwargs,
    ).metrics
