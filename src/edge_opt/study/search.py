"""Search stage: a multi-objective Optuna search (NSGA-II or TPE) over the study's config points, for spaces
too big for the grid.

The trials are the grid's config points (pruning level, precision, backend, int8 calibration choice) and share
the study store: a point measured by a grid is reused by a search and the other way round. Objectives: accuracy
(maximised), device latency (minimised) and, when asked for, run-time memory (minimised); the budgets (memory,
latency, accuracy drop) are Optuna constraints, so a point that breaks one is infeasible whatever its values.

Optuna keeps its trials in ``search.sqlite`` (RDB storage) in the study folder: a killed search resumes, a
finished trial is never run again, and a trial the kill interrupted is finished first, under its own number.
The sampler is seeded
per trial from ``search.seed`` and the number of finished trials, so a resumed search proposes what an
uninterrupted one with the same seed would have. A damaged ``search.sqlite`` (or another program's database
under that name) is refused with a ``ConfigError`` naming it and saying what to do, before Optuna touches it.

``n_trials`` counts distinct config points: a sampler proposing a point already evaluated costs nothing (its
values are told again, marked ``duplicate``) and does not use up the budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, StudyConfig, VariantSettings
from ..measure import ConfigPoint, VariantResult
from .selection import assess_results, directed_drop, metric_higher_is_better, metric_value, scores_metric

__all__ = [
    "CONSTRAINTS",
    "SEARCH_FILE",
    "Judgement",
    "SearchOutcome",
    "SearchSpace",
    "TrialRecord",
    "history_rows",
    "hypervolume_2d",
    "judge_with",
    "load_search",
    "run_search",
    "search_progress",
    "search_space",
]

SEARCH_FILE = "search.sqlite"
CONSTRAINTS = ("memory_over_budget_mb", "latency_over_budget_ms", "accuracy_drop_over_max")
INFEASIBLE_LATENCY_MS = 1e9  # the value told to Optuna for a point with no latency (it is infeasible anyway)
_MAX_DUPLICATES_IN_A_ROW = 200


@dataclass(frozen=True)
class SearchSpace:
    """The config points a search chooses from (the grid's points)."""

    levels: tuple[float, ...]
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    calibrations: tuple[str, ...]  # labels of the int8 calibration choices ("" when not labelled)
    quantized: frozenset[str]  # the precisions the calibration choice applies to
    step: float | None = None  # levels form a range with this step (sampled as a stepped float)

    @property
    def size(self) -> int:
        """Distinct config points."""
        per_level = sum(len(self.calibrations) if p in self.quantized else 1 for p in self.precisions)
        return len(self.levels) * per_level * len(self.backends)

    def suggest(self, trial: Any) -> ConfigPoint:
        """The trial's config point (every parameter is always suggested, so the space is static)."""
        if self.step is not None and len(self.levels) > 1:
            level = round(trial.suggest_float("pruning_level", self.levels[0], self.levels[-1], step=self.step), 6)
        else:
            level = trial.suggest_categorical("pruning_level", list(self.levels))
        precision = trial.suggest_categorical("precision", list(self.precisions))
        backend = trial.suggest_categorical("backend", list(self.backends))
        calibration = trial.suggest_categorical("calibration", list(self.calibrations))
        return ConfigPoint(float(level), precision, backend, calibration if precision in self.quantized else "")

    def describe(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "precisions": list(self.precisions),
            "backends": list(self.backends),
            "calibrations": list(self.calibrations),
            "step": self.step,
        }


def search_space(cfg: VariantSettings) -> SearchSpace:
    """The study's grid as a search space."""
    from ..variants import PRECISIONS

    calibrations = tuple(q.label for q in cfg.quantization.choices()) if cfg.quantization.labelled else ("",)
    quantized = frozenset(p for p in cfg.precisions if p in PRECISIONS and PRECISIONS.get(p).quantized)
    step = cfg.pruning_step if cfg.pruning_range is not None else None
    return SearchSpace(
        tuple(float(x) for x in cfg.pruning_levels),
        tuple(cfg.precisions),
        tuple(cfg.backends),
        calibrations,
        quantized,
        step,
    )


@dataclass(frozen=True)
class Judgement:
    """A result against the study's objectives and budgets."""

    accuracy: float
    latency_ms: float
    memory_mb: float
    feasible: bool
    reason: str | None
    constraints: tuple[float, ...]  # Optuna's convention: feasible when every value is <= 0

    def values(self, objectives: Sequence[str]) -> list[float]:
        """The objective values Optuna is told (finite stand-ins for a point without numbers)."""
        pick = {
            "accuracy": self.accuracy if math.isfinite(self.accuracy) else 0.0,
            "latency": self.latency_ms if math.isfinite(self.latency_ms) else INFEASIBLE_LATENCY_MS,
            "memory": self.memory_mb if math.isfinite(self.memory_mb) else INFEASIBLE_LATENCY_MS,
        }
        return [pick[o] for o in objectives]


Judge = Callable[[VariantResult], Judgement]


def judge_with(cfg: StudyConfig, baseline: VariantResult | None) -> Judge:
    """Judge results as the study's selection does: budgets accepted and within ``max_accuracy_drop`` (the metric's
    budget, in its direction). The ``accuracy`` objective is the study's metric, negated for a lower-is-better one
    (the accuracy itself for top1)."""
    base_acc = metric_value(baseline) if baseline is not None else math.nan
    higher = metric_higher_is_better(cfg)
    budget, relative = cfg.metric_budget, cfg.metric_drop_relative
    what = "accuracy" if not scores_metric(cfg) else cfg.metric_name or cfg.metric
    key = "max_metric_drop" if cfg.max_metric_drop is not None or scores_metric(cfg) else "max_accuracy_drop"

    def judge(result: VariantResult) -> Judgement:
        if result.skipped is not None or result.error is not None or result.metrics is None:
            memory = _untimed_memory(result)
            over = memory - cfg.active_memory_budget_mb if math.isfinite(memory) else 1.0
            return Judgement(
                math.nan, math.nan, memory, False, result.skipped or result.error, (max(over, 1e-9), 1.0, 1.0)
            )
        a = assess_results([result], cfg, baseline)[0]
        drop = directed_drop(base_acc, a.metric_value, higher, relative) if math.isfinite(base_acc) else 0.0
        latency_budget = cfg.latency_budget_ms if cfg.latency_budget_ms is not None else math.inf
        constraints = (
            a.runtime_memory_mb - cfg.active_memory_budget_mb,
            a.device_latency_ms - latency_budget,
            drop - budget if math.isfinite(drop) else 1.0,
        )
        reason = (
            a.rejected_reason
            if not a.accepted
            else (f"{what} drop {drop:.4f} > {key} {budget}" if constraints[2] > 1e-12 else None)
        )
        feasible = a.accepted and constraints[2] <= 1e-12
        return Judgement(
            a.metric_score,
            a.device_latency_ms,
            a.runtime_memory_mb,
            feasible,
            reason,
            tuple(0.0 if c == -math.inf else c for c in constraints),
        )

    return judge


def _untimed_memory(result: VariantResult) -> float:
    """The run-time memory a search recorded for a point it built but did not time (from its reason)."""
    text = result.skipped or ""
    if "runtime memory " in text:
        try:
            return float(text.split("runtime memory ")[1].split(" MB")[0])
        except (IndexError, ValueError):
            return math.nan
    return math.nan


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a search, as ``search_history.csv`` lists it."""

    number: int
    point: ConfigPoint
    how: str  # measured / stored / untimed / not built / duplicate
    accuracy: float
    latency_ms: float
    memory_mb: float
    feasible: bool
    reason: str | None
    wall_s: float
    measure_s: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "point": asdict(self.point)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        return cls(**{**d, "point": ConfigPoint(**d["point"])})


@dataclass(frozen=True)
class SearchOutcome:
    """What a search did and why it stopped."""

    strategy: str
    trials: tuple[TrialRecord, ...]
    stopped_by: str
    n_trials: int | None
    timeout_s: float | None
    stop_when: str
    patience: int
    elapsed_s: float
    resumed_from: int  # trials finished by earlier runs of this search
    space_size: int

    @property
    def points(self) -> list[ConfigPoint]:
        """Distinct config points in the order they were first evaluated."""
        return list(dict.fromkeys(t.point for t in self.trials))

    @property
    def best(self) -> TrialRecord | None:
        """The fastest feasible trial so far (ties: the more accurate)."""
        ok = [t for t in self.trials if t.feasible]
        return min(ok, key=lambda t: (t.latency_ms, -t.accuracy)) if ok else None

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "strategy": self.strategy,
            "trials": len(self.trials),
            "distinct_points": len(self.points),
            "space_size": self.space_size,
            "n_trials": self.n_trials,
            "timeout_s": self.timeout_s,
            "stop_when": self.stop_when,
            "patience": self.patience,
            "stopped_by": self.stopped_by,
            "elapsed_s": self.elapsed_s,
            "resumed_from": self.resumed_from,
            "feasible_trials": sum(t.feasible for t in self.trials),
            "best": None
            if best is None
            else {"trial": best.number, **asdict(best.point), "accuracy": best.accuracy, "latency_ms": best.latency_ms},
        }


Evaluate = Callable[[ConfigPoint], tuple[VariantResult, str]]


def _study_name(cfg: StudyConfig, space: SearchSpace) -> str:
    s = cfg.search
    ident = {
        "space": space.describe(),
        "strategy": s.strategy,
        "seed": s.seed,
        "objectives": s.objectives,
        "population": s.population_size,
        "budgets": [cfg.active_memory_budget_mb, cfg.latency_budget_ms, cfg.metric_budget]
        + (
            [cfg.flash_budget_kb, cfg.ram_budget_kb] if (cfg.flash_budget_kb, cfg.ram_budget_kb) != (None, None) else []
        ),
        **({"metric": [cfg.metric, cfg.postprocess, cfg.metric_drop_relative]} if scores_metric(cfg) else {}),
    }
    return "edge_opt-" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _sampler(cfg: StudyConfig, finished: int) -> Any:
    import optuna

    s = cfg.search
    seed = (s.seed * 1_000_003 + finished) % 2**32
    if s.strategy == "nsga2":
        budget = s.n_trials or 100
        population = s.population_size or max(4, min(50, budget // 5))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    startup = max(4, min(10, (s.n_trials or 40) // 4))
    with warnings.catch_warnings():  # multivariate TPE is flagged experimental
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)


_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})


def _damaged(path: Path, why: object) -> ConfigError:
    return ConfigError(
        [
            f"The search store {str(path)!r} is damaged ({why}); remove it to start the search over (the points "
            "already measured stay in study.sqlite and are reused) or run again with --fresh to start the whole "
            "study over."
        ]
    )


def _stored_search(path: Path) -> bool:
    """Whether ``path`` holds Optuna's tables (False: no file, or an empty database). Nothing is changed but
    SQLite's rollback of a journal a killed search left behind (what Optuna would do on opening it).

    Raises:
        ConfigError: not a file, not an SQLite database, a damaged one, or one of another program.
    """
    if not path.exists():
        return False
    if not path.is_file():
        raise ConfigError([f"The search store {str(path)!r} is not a file; remove it or give another output_dir."])
    try:
        # read-write, never creating: a read-only connection cannot roll back such a journal
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=30)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, exc) from None
    if problems != ["ok"]:
        raise _damaged(path, "; ".join(map(str, problems)))
    if tables and not _OPTUNA_TABLES <= tables:
        raise ConfigError(
            [
                f"The search store {str(path)!r} is an SQLite database of another program (tables "
                f"{sorted(tables)[:5]}), not an Optuna search store; remove it or give another output_dir."
            ]
        )
    return bool(tables)


@contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """Optuna's storage failing on the file (SQLAlchemy's errors) as a ConfigError naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        why = str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__]
        raise _damaged(path, why[0]) from None


def _open_study(cfg: StudyConfig, folder: Path, space: SearchSpace) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [
        optuna.study.StudyDirection.MAXIMIZE if o == "accuracy" else optuna.study.StudyDirection.MINIMIZE
        for o in cfg.search.objectives
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SEARCH_FILE
    _stored_search(path)
    with _storage_errors(path):
        return optuna.create_study(
            storage=f"sqlite:///{path}",
            study_name=_study_name(cfg, space),
            directions=directions,
            load_if_exists=True,
        )


def _unfinished(study: Any) -> list[Any]:
    """The trials a kill left running, to be finished first under their own numbers (so the storage ends as an
    uninterrupted search's would; the caller holds the study folder's lock: no other process runs them)."""
    from optuna.trial import Trial, TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [Trial(study, t._trial_id) for t in sorted(running, key=lambda t: t.number)]


def _finished(study: Any) -> list[TrialRecord]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [TrialRecord.from_dict(t.user_attrs["record"]) for t in done if "record" in t.user_attrs]


def _why_stop(
    records: Sequence[TrialRecord],
    cfg: StudyConfig,
    started: float,
    space_size: int,
    should_stop: Callable[[], bool],
    duplicates_in_a_row: int,
) -> str | None:
    s = cfg.search
    distinct = len({r.point for r in records})
    if should_stop():
        return "interrupted"
    if s.n_trials is not None and distinct >= s.n_trials:
        return f"n_trials ({s.n_trials} distinct points)"
    if s.timeout_s is not None and time.perf_counter() - started >= s.timeout_s:
        return f"timeout_s ({s.timeout_s:g} s)"
    if distinct >= space_size:
        return f"space exhausted (all {space_size} points evaluated)"
    if duplicates_in_a_row >= _MAX_DUPLICATES_IN_A_ROW:
        return f"space exhausted (the sampler proposed {duplicates_in_a_row} evaluated points in a row)"
    if s.stop_when == "goals_met":
        best_at = _best_trial_index(records)
        before = {r.point for r in records[: best_at + 1]} if best_at is not None else set()
        if best_at is not None and len({r.point for r in records[best_at + 1 :]} - before) >= s.patience:
            return f"goals_met (a point meets every budget; no better one in {s.patience} trials since)"
    return None


def _best_trial_index(records: Sequence[TrialRecord]) -> int | None:
    best, at = None, None
    for i, r in enumerate(records):
        if r.feasible and (best is None or (r.latency_ms, -r.accuracy) < best):
            best, at = (r.latency_ms, -r.accuracy), i
    return at


def _trial(
    trial: Any, space: SearchSpace, evaluate: Evaluate, judge: Judge, seen: dict[ConfigPoint, TrialRecord]
) -> tuple[TrialRecord, Judgement | None]:
    t0 = time.perf_counter()
    point = space.suggest(trial)
    if point in seen:
        prev = seen[point]
        return TrialRecord(
            trial.number,
            point,
            "duplicate",
            prev.accuracy,
            prev.latency_ms,
            prev.memory_mb,
            prev.feasible,
            prev.reason,
            time.perf_counter() - t0,
            0.0,
        ), None
    result, how = evaluate(point)
    j = judge(result)
    measure_s = float(result.timings.get("measurement", 0.0)) if how == "measured" else 0.0
    return TrialRecord(
        trial.number,
        point,
        how,
        j.accuracy,
        j.latency_ms,
        j.memory_mb,
        j.feasible,
        j.reason,
        time.perf_counter() - t0,
        measure_s,
    ), j


def run_search(
    cfg: StudyConfig,
    evaluate: Evaluate,
    judge: Judge,
    folder: str | Path,
    should_stop: Callable[[], bool] = lambda: False,
    on_event: Callable[..., None] = lambda kind, **info: None,
) -> SearchOutcome:
    """Run (or resume) the configured search until its budget, timeout or goal stops it.

    Args:
        evaluate: a config point → its result and how it was obtained (``Sweep.run_point_within``).
        judge: a result → objectives, feasibility and constraint values (``judge_with``).
        folder: the study folder (holds ``search.sqlite``).
    """
    space = search_space(cfg.part(VariantSettings))
    study = _open_study(cfg, Path(folder), space)
    pending = _unfinished(study)
    records = _finished(study)
    resumed = len(records)
    seen = {r.point: r for r in records if r.how != "duplicate"}
    started, in_a_row, stopped = time.perf_counter(), 0, None
    while pending or (stopped := _why_stop(records, cfg, started, space.size, should_stop, in_a_row)) is None:
        study.sampler = _sampler(cfg, len(records))
        trial = pending.pop(0) if pending else study.ask()
        record, j = _trial(trial, space, evaluate, judge, seen)
        judged = j or _as_judgement(record)
        for name, value in zip(CONSTRAINTS, judged.constraints, strict=True):
            trial.set_constraint(name, float(value))  # Optuna's constraints: feasible when every value <= 0
        trial.set_user_attr("record", record.to_dict())
        study.tell(trial, judged.values(cfg.search.objectives))
        records.append(record)
        seen.setdefault(record.point, record)
        in_a_row = in_a_row + 1 if record.how == "duplicate" else 0
        on_event("trial", record=record, distinct=len(seen), budget=cfg.search.n_trials)
    s = cfg.search
    return SearchOutcome(
        s.strategy,
        tuple(records),
        stopped,
        s.n_trials,
        s.timeout_s,
        s.stop_when,
        s.patience,
        time.perf_counter() - started,
        resumed,
        space.size,
    )


def _as_judgement(r: TrialRecord) -> Judgement:
    """A duplicate's values and constraints: those of the trial that evaluated its point."""
    c = (-1.0,) if r.feasible else (1.0,)
    return Judgement(r.accuracy, r.latency_ms, r.memory_mb, r.feasible, r.reason, c * 3)


def load_search(cfg: StudyConfig, folder: str | Path) -> SearchOutcome | None:
    """The finished trials of this config's search in ``folder`` (None for a grid or when none ran), read
    without changing the storage; ``stopped_by`` is then unknown (``edge-opt report`` rebuilds from it).

    Raises:
        ConfigError: ``search.sqlite`` is damaged or not an Optuna search store (the message says what to do).
    """
    path = Path(folder) / SEARCH_FILE
    if cfg.search.strategy == "grid" or not _stored_search(path):
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(cfg.part(VariantSettings))
    with _storage_errors(path):
        try:
            study = optuna.load_study(study_name=_study_name(cfg, space), storage=f"sqlite:///{path}")
        except KeyError:  # no search of this config in the storage
            return None
        records = _finished(study)
    s = cfg.search
    return SearchOutcome(
        s.strategy,
        tuple(records),
        "unknown (read back from search.sqlite)",
        s.n_trials,
        s.timeout_s,
        s.stop_when,
        s.patience,
        0.0,
        len(records),
        space.size,
    )


def history_rows(outcome: SearchOutcome) -> list[dict[str, Any]]:
    """``search_history.csv``: one row per trial (number, config point, values, feasibility, wall time)."""
    return [
        {
            "trial": t.number,
            "how": t.how,
            **asdict(t.point),
            "accuracy": t.accuracy,
            "latency_ms": t.latency_ms,
            "memory_mb": t.memory_mb,
            "feasible": t.feasible,
            "reason": t.reason,
            "wall_s": t.wall_s,
            "measure_s": t.measure_s,
        }
        for t in outcome.trials
    ]


def search_progress(folder: str | Path) -> list[dict[str, Any]]:
    """What the searches in a study folder have done (for ``edge-opt status``): per search, the finished trials,
    distinct points and the best feasible point so far. Reads the storage without changing it.

    Raises:
        ConfigError: ``search.sqlite`` is damaged or not an Optuna search store.
    """
    path = Path(folder) / SEARCH_FILE
    if not _stored_search(path):
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _storage_errors(path):
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_compatibility_check=True)
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    out = []
    for summary in summaries:
        with _storage_errors(path):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            records = _finished(study)
        best_at = _best_trial_index(records)
        out.append(
            {
                "study": summary.study_name,
                "trials": len(records),
                "distinct_points": len({r.point for r in records}),
                "running": sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)),
                "best": records[best_at] if best_at is not None else None,
            }
        )
    return out


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (accuracy ↑, latency ↓) points and bounded by ``reference`` = (accuracy, latency):
    the part of the rectangle [reference accuracy, ∞) × (0, reference latency] the points cover."""
    ref_acc, ref_lat = reference
    pts = sorted((lat, acc) for acc, lat in points if acc > ref_acc and lat < ref_lat)
    area, best_acc = 0.0, ref_acc
    for i, (lat, acc) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][0] if i + 1 < len(pts) else ref_lat
        area += (best_acc - ref_acc) * (next_lat - lat)
    return area
