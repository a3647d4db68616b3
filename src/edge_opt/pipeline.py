"""Pipeline: a study is a short chain of stage calls, each in its stage's module. Nothing below imports it.

``run_study`` reads as the list of stages: data → baseline → variants (executor) → assess →
select → artifact → hardware → deployment → report → tracking. Each stage takes typed inputs
and returns a frozen record; ``StudyResult`` keeps them (Olive's footprint idea).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import (
    BudgetSettings,
    ConfigError,
    HardwareSettings,
    InputSettings,
    MeasureSettings,
    RunSettings,
    StudyConfig,
    VariantSettings,
    load_config,
    nearest_existing,
)
from .core import (
    atomic,
    batch_slice,
    begin_generation,
    close_cache_ledger,
    commit_generation,
    foreign_entries,
    open_cache_ledger,
    remove_study,
    reusable_files,
    stamp_outputs,
)
from .deploy import (
    DeploymentResult,
    DeploymentTarget,
    ExportedArtifact,
    TargetRun,
    export_recommended,
    measure_on_targets,
    simulate_deployment,
)
from .hardware import HardwareAnalysis, analyse_hardware, precision_tradeoff_table, rebuild_hardware_plots
from .inputs import (
    DATASETS,
    MODELS,
    DataBundle,
    ModelSource,
    ModelSourceError,
    RawDataset,
    StopRequested,
    check_model_fits,
    load_model_source,
    load_study_data,
    model_param_errors,
    normalise_source,
    onnx_inputs,
    resolve_device,
    set_deterministic,
    takes_images,
    with_onnx_conversion,
)
from .measure import HostLoad, StageMemory, VariantResult, metric_config_errors, target_kind
from .report import (
    Recommendation,
    StudyOutcome,
    StudyReport,
    build_summary,
    frontiers,
    reproducibility_record,
    with_vendor_rows,
    write_html_report,
    write_outputs,
    write_plots,
    write_search_history,
    write_sensitivity,
    write_study_report,
)
from .study import (
    Assessment,
    LocalExecutor,
    SearchOutcome,
    Selection,
    StoreFormatError,
    StudyInterrupted,
    StudyStore,
    Sweep,
    assess_results,
    baseline_point,
    check_metric,
    folder_digest,
    judge_with,
    load_search,
    metric_higher_is_better,
    model_factory,
    run_search,
    search_space,
    select_recommendation,
    stored_results,
    stored_vendor_rows,
    study_warnings,
    sweep_points,
    to_frame,
    train_baseline,
)
from .variants import BACKENDS, PRECISIONS

__all__ = [
    "StudyResult",
    "check_output_dir",
    "check_study_folder",
    "input_warnings",
    "load_study_config",
    "rebuild_report",
    "registry_errors",
    "run_study",
]

EventFn = Callable[..., None]


def registry_errors(cfg: StudyConfig) -> list[str]:
    """Config values that name unknown registry entries (model, params, dataset, backends, precisions)."""
    errors = []
    name = cfg.model.name
    if name is not None and name not in MODELS:
        errors.append(f"The 'model.name' parameter must be one of {MODELS.names()}. Got {name!r} instead.")
    elif name is not None:
        errors += model_param_errors(name, cfg.model.params)
    errors += _dataset_errors(cfg)
    bad_b = [b for b in cfg.backends if b not in BACKENDS]
    if bad_b:
        errors.append(f"The 'backends' parameter must contain names from {BACKENDS.names()}. Got {bad_b} instead.")
    bad_p = [p for p in cfg.precisions if p not in PRECISIONS]
    if bad_p:
        errors.append(f"The 'precisions' parameter must contain names from {PRECISIONS.names()}. Got {bad_p} instead.")
    errors += _extra_errors(cfg)
    errors += metric_config_errors(cfg.part(BudgetSettings))
    from .report import check_tracking

    errors += check_tracking(cfg.part(RunSettings))
    if cfg.executor == "ray" and cfg.model.kind == "python":
        errors.append(
            "The 'executor' parameter 'ray' cannot ship an in-memory module (edge_opt.optimize) to its "
            "workers; use executor 'local' or save the model (ONNX, .pt2, factory + weights). Got 'ray'."
        )
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            errors.append(
                "The 'executor' parameter 'ray' needs Ray: pip install 'edge-opt[ray]'. Got 'ray' with Ray "
                "not installed."
            )
    return errors


# backend → (the modules it imports, the pip extra that installs them)
BACKEND_EXTRAS = {
    "openvino": (("openvino", "nncf"), "openvino"),
    "executorch": (("executorch",), "executorch"),
    "litert": (("litert_torch", "ai_edge_litert"), "litert"),
}


def _extra_errors(cfg: StudyConfig) -> list[str]:
    """Backends whose optional extra is not installed (checked before anything runs)."""
    import importlib.util

    errors = []
    for backend in cfg.backends:
        modules, extra = BACKEND_EXTRAS.get(backend, ((), ""))
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            errors.append(
                f"The 'backends' parameter {backend!r} needs the optional extra: pip install "
                f"'edge-opt[{extra}]'. Got {backend!r} with {missing} not installed."
            )
    return errors


FILE_DATASETS = ("npz", "image_folder", "python")  # python: in-memory arrays of edge_opt.optimize


def _dataset_errors(cfg: StudyConfig) -> list[str]:
    if cfg.dataset == "npz" and not cfg.data_path:
        return ["The 'data_path' parameter must name the .npz file of the 'npz' dataset. Got None instead."]
    if cfg.dataset in DATASETS or cfg.dataset in FILE_DATASETS or ":" in cfg.dataset:
        return []
    return [
        f"The 'dataset' parameter must be one of {DATASETS.names() + list(FILE_DATASETS)} or "
        f"'package.module:callable'. Got {cfg.dataset!r} instead."
    ]


def load_study_config(path: str | Path, overrides: dict | None = None) -> StudyConfig:
    """Load a YAML study config and check it against the registries.

    Raises:
        ConfigError: one message per invalid key.
    """
    cfg = load_config(path, overrides)
    errors = registry_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def check_output_dir(path: str | Path, create: bool = True) -> Path:
    """Prove the output folder is writable (creating it when ``create``), before any training starts.

    With ``create=False`` nothing is written: a missing folder is checked through its nearest
    existing parent.

    Raises:
        ConfigError: naming the folder when it cannot be created or written.
    """
    out = Path(path)

    def fail(reason: str) -> ConfigError:
        return ConfigError(
            [f"The 'output_dir' parameter must name a writable folder. Got {str(path)!r} instead ({reason})."]
        )

    if not create:
        probe = nearest_existing(out)
        if probe.exists() and not probe.is_dir():
            raise fail(f"{str(probe)!r} is not a folder")
        try:  # a real probe (access() says yes to root even on read-only file systems); removed at once
            os.rmdir(tempfile.mkdtemp(prefix=".edge_opt_probe_", dir=probe))
        except OSError as exc:
            raise fail(f"{str(probe)!r} is not writable: {exc.strerror or exc}") from None
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write_probe_{os.getpid()}"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        raise fail(str(exc.strerror or exc)) from None
    return out


@dataclass(frozen=True)
class StudyResult:
    """What a finished (or interrupted) study produced: its table, summary and the stages' records.

    Attributes:
        output_dir: where every output was written.
        sweep: the sweep table (sweep_results.csv's rows, raw samples included).
        summary: summary.json's document (JSON-ready; ``recommended`` is ``recommendation.to_dict()``).
        reused, computed: points read back from the store / measured in this run.
        interrupted: the study stopped before every point and stage finished.
        goals_met: the recommendation meets every goal (False: a best effort, or nothing to recommend).
        recommendation: the recommended (or best-effort) configuration: its config point, metrics and artifact
            (None when nothing was chosen or the study was interrupted).
        warnings: the study's warnings.
        timings: seconds per stage.
        peak_rss_mb, children_peak_rss_mb: peak RSS (MB) per stage of this process and of its child processes
            (the report stage's too, which summary.json, written during it, lacks).
        outcome: the stages' records.
        frontier: the latency–accuracy Pareto frontier.
    """

    output_dir: Path
    sweep: pd.DataFrame
    summary: dict[str, Any]
    reused: int = 0
    computed: int = 0
    interrupted: bool = False
    goals_met: bool = False
    recommendation: Recommendation | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    children_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    outcome: StudyOutcome | None = None
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def deployment(self) -> DeploymentResult:
        """The deployment stage's result (empty when it did not run)."""
        return self.outcome.deployment if self.outcome is not None else DeploymentResult()

    @property
    def finished_points(self) -> int:
        """Config points finished (measured, stored or skipped)."""
        return int(self.summary.get("finished_points") or 0)

    @property
    def total_points(self) -> int:
        """Config points of the grid (or of the search space)."""
        return int(self.summary.get("total_points") or 0)

    @property
    def paths(self) -> dict[str, Path]:
        """Where the main outputs are."""
        names = {
            "sweep_results": "sweep_results.csv",
            "summary": "summary.json",
            "report": "report.html",
            "frontier_latency": "pareto_frontier_latency.csv",
            "model": str((self.recommendation.artifact if self.recommendation else None) or "model/model.onnx"),
            "manifest": "model/manifest.json",
        }
        return {k: self.output_dir / v for k, v in names.items() if (self.output_dir / v).exists()}


class _Clock:
    """Seconds and peak RSS (MB: this process, and its child processes) per stage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self.children_peak_rss_mb: dict[str, float] = {}
        self._memory = StageMemory()
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._t
        self._t = now
        own, children = self._memory.lap()
        self.peak_rss_mb[name] = round(max(self.peak_rss_mb.get(name, 0.0), own), 1)
        self.children_peak_rss_mb[name] = round(max(self.children_peak_rss_mb.get(name, 0.0), children), 1)

    def memory(self) -> dict[str, Any]:
        """summary.json's ``peak_rss_mb`` and ``children_peak_rss_mb`` by stage (the stages lapped so far)."""
        return {"peak_rss_mb": dict(self.peak_rss_mb), "children_peak_rss_mb": dict(self.children_peak_rss_mb)}


def _lock(out: Path, wait: bool = False, command: str = "") -> atomic.FolderLock:
    """One study at a time per folder: a second run would share its cores, its store and its outputs."""
    try:
        return atomic.FolderLock(out, wait=wait, command=command)
    except atomic.FolderBusy as exc:
        raise ConfigError(
            [
                f"The 'output_dir' folder {str(out)!r} is in use by another edge-opt run ({exc}); wait "
                "for it to finish (or pass --wait) or give another output_dir."
            ]
        ) from None


def check_study_folder(out: Path, fresh: bool) -> None:
    """The output folder is new, empty, or holds an edge_opt study (its store); anything else is refused.

    Raises:
        ConfigError: a folder with files no study wrote, or a store that is not edge_opt's (with
            ``fresh``, a store of an earlier release is allowed: it will be replaced).
    """
    problem = StudyStore.probe(out / "study.sqlite")
    if problem is not None and not (fresh and problem.ours):
        raise ConfigError([str(problem)])
    if (out / "study.sqlite").exists():
        return
    foreign = foreign_entries(out)
    if foreign:
        raise ConfigError(
            [
                f"The 'output_dir' folder {str(out)!r} holds files that no edge_opt study wrote "
                f"({', '.join(repr(f) for f in foreign)}) and no study store; edge_opt writes (and "
                "--fresh deletes) only in a new or empty folder or one of its own studies. Give another "
                "output_dir."
            ]
        )


def _open_store(out: Path, fresh: bool) -> tuple[StudyStore, list[str]]:
    """Open the output folder's study store (``--fresh``: first delete what the study wrote, nothing else).

    Returns:
        The store, and a warning naming the files ``--fresh`` left in the cache folders (not the study's).
    """
    kept = remove_study(out) if fresh else []
    notes = []
    if kept:
        shown = ", ".join(repr(k) for k in kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        notes.append(
            f"--fresh left {len(kept)} file{'s' if len(kept) != 1 else ''} in the cache folders that the study "
            f"did not write: {shown}; remove them yourself if they are not needed"
        )
    try:
        store = StudyStore(out / "study.sqlite")
    except StoreFormatError as exc:
        raise ConfigError([str(exc)]) from None
    open_cache_ledger(out)
    return store, notes


def _measure(
    cfg: StudyConfig,
    data: DataBundle,
    source: ModelSource,
    out: Path,
    store: StudyStore,
    on_event: EventFn,
    should_stop: Callable[[], bool],
    clock: _Clock,
) -> tuple[Sweep, bool, list[str], SearchOutcome | None]:
    """Stages graph + baseline + variants: an ONNX model's graph as the variants are built from it, the baseline
    trained (or reloaded), then ``run_point`` mapped over the grid."""
    source, graph_notes = _normalise_graph(cfg, data, source, out, on_event)
    device, dev_warning = resolve_device(cfg.device)
    warnings = ([dev_warning] if dev_warning else []) + input_warnings(cfg, data) + graph_notes
    warnings += [source.conversion.note()] if source.conversion is not None else []
    set_deterministic(cfg.seed)
    clock.lap("data")
    try:
        baseline, cached = train_baseline(cfg, data, out, device, on_event, source, should_stop)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    except StopRequested:  # stopped while training: the report covers the points stored before
        sweep = Sweep(None, data, cfg, out, store, on_event=on_event, should_stop=should_stop, source=source)
        return sweep, True, warnings, None
    if cached:
        on_event("log", message="baseline checkpoint reused")
    if cfg.fine_tune_epochs and data.train_loader is None and any(lv > 0 for lv in cfg.pruning_levels):
        warnings.append("fine-tuning after pruning skipped: the data has no training split")
    clock.lap("training")
    sweep = Sweep(
        baseline,
        data,
        cfg,
        out,
        store,
        model_factory=model_factory(cfg, data, source),
        on_event=on_event,
        should_stop=should_stop,
        source=source,
    )
    _prepare_scoring(sweep)
    if cfg.search.strategy != "grid":
        outcome, interrupted = _search(cfg, sweep, out, on_event, should_stop)
        clock.lap("variants")
        return sweep, interrupted, warnings, outcome
    points = sweep_points(cfg.part(VariantSettings))
    on_event("stage", name="variants", detail=f"{len(points)} config points")
    interrupted = False
    try:
        executor = _executor(cfg)
        executor.map(sweep, points)
        if baseline_point(cfg) not in points:
            executor.map(sweep, [baseline_point(cfg)])
    except (StudyInterrupted, StopRequested):
        interrupted = True
    clock.lap("variants")
    return sweep, interrupted, warnings, None


def _prepare_scoring(sweep: Sweep) -> None:
    """The fp32 baseline's outputs kept as the metric's reference, and its value checked, before any variant is
    built: a metric that cannot score the trained baseline, or a fine-tuning ``loss`` that cannot train it, is a
    ``ConfigError``."""
    try:
        sweep.check_fine_tuning()
        sweep.prepare_scoring()
    except ValueError as exc:  # MetricError, LossError, UserCodeError, CallableImportError: metric, postprocess, loss
        raise ConfigError([_one_line(exc)]) from None
    if sweep.scoring is not None:  # the progress lines show the metric by its name (top1: acc= as before)
        m = sweep.scoring.metric
        sweep.on_event(
            "metric", display_name=m.display_name, higher_is_better=m.higher_is_better, baseline=sweep.baseline_metric
        )


def _search(
    cfg: StudyConfig, sweep: Sweep, out: Path, on_event: EventFn, should_stop: Callable[[], bool]
) -> tuple[SearchOutcome | None, bool]:
    """Stage variants as an Optuna search: the baseline first (the accuracy-drop budget needs it), then the trials."""
    space = search_space(cfg.part(VariantSettings))
    s = cfg.search
    on_event(
        "stage",
        name="variants",
        detail=f"{s.strategy} search over {space.size} config points "
        f"(n_trials={s.n_trials}, timeout_s={s.timeout_s}, stop_when={s.stop_when})",
    )
    try:
        baseline = LocalExecutor().map(sweep, [baseline_point(cfg)])[0]
        outcome = run_search(
            cfg,
            lambda p: sweep.run_point_within(p, cfg.active_memory_budget_mb),
            judge_with(cfg, baseline),
            out,
            should_stop,
            on_event,
        )
    except (StudyInterrupted, StopRequested):
        return None, True
    return outcome, outcome.stopped_by == "interrupted"


def _executor(cfg: StudyConfig) -> Any:
    if cfg.executor == "ray":
        from .study import RayExecutor

        return RayExecutor()
    return LocalExecutor()


def _deployment_targets(
    cfg: StudyConfig, selection: Selection, hardware: HardwareAnalysis | None
) -> list[DeploymentTarget]:
    summaries = hardware.summaries if hardware is not None else {}
    targets = [DeploymentTarget("baseline", baseline_point(cfg), summaries.get("baseline", {}))]
    if selection.chosen is not None:
        targets.append(DeploymentTarget("recommended", selection.chosen.point, summaries.get("recommended", {})))
    return targets


def _export(
    out: Path, selection: Selection, sweep: Sweep, on_event: EventFn, warnings: list[str]
) -> ExportedArtifact | None:
    """Stage artifact (with its progress event and warning)."""
    if selection.chosen is not None:
        on_event("stage", name="artifact", detail=selection.chosen.point.label)
    artifact = export_recommended(out, selection, sweep)
    if artifact is not None and artifact.error:
        warnings.append(artifact.error)
    return artifact


def _analyse(
    sweep: Sweep,
    store: StudyStore,
    out: Path,
    interrupted: bool,
    on_event: EventFn,
    clock: _Clock,
    warnings: list[str],
    search: SearchOutcome | None = None,
) -> StudyOutcome:
    """Stages assess → select → artifact → hardware → deployment, over the stored records of the grid."""
    cfg = sweep.cfg
    points = search.points if search is not None else sweep_points(cfg.part(VariantSettings))
    # outputs describe every finished point of this config's grid, or the points its search evaluated
    results, baseline = stored_results(store, cfg, points, untimed=search is not None)
    skipped = tuple(r for r in results if r.skipped is not None)
    assessed = tuple(assess_results([r for r in results if r.skipped is None], cfg, baseline))
    host_selection = select_recommendation(assessed, baseline, cfg.part(BudgetSettings))
    warnings += study_warnings(assessed)
    clock.lap("analysis")
    runs: list[TargetRun] = []
    if cfg.agent_targets and not interrupted:
        runs, target_warnings = measure_on_targets(sweep, store, results, out, sweep.should_stop, on_event)
        warnings += target_warnings
        clock.lap("targets")
    on_target = {run.name: _assess_on_target(cfg, run, baseline) for run in runs}
    selection = _recommendation(cfg, host_selection, on_target, baseline, warnings)
    interrupted = interrupted or sweep.should_stop()  # a stop asked for after the last variant ends here too
    artifact = None if interrupted else _export(out, selection, sweep, on_event, warnings)
    clock.lap("artifact")
    interrupted = interrupted or sweep.should_stop()
    hardware: HardwareAnalysis | None = None
    deployment = DeploymentResult()
    if not interrupted and baseline is not None and baseline.ok:
        hardware = _hardware(sweep, out, baseline, host_selection, assessed, on_event, warnings)
        clock.lap("hardware")
        interrupted = sweep.should_stop()
    if not interrupted and baseline is not None and baseline.ok:
        deployment = _deploy(sweep, store, out, host_selection, hardware, on_event, clock, warnings)
        interrupted = sweep.should_stop()
    return StudyOutcome(
        cfg,
        assessed,
        baseline,
        selection,
        artifact,
        hardware,
        deployment,
        tuple(warnings + _search_note(search)),
        search.space_size if search is not None else len(points),
        interrupted,
        skipped,
        search,
        tuple(runs),
        on_target,
        host_selection,
        tuple(stored_vendor_rows(store)),
        model_conversion=sweep.source.conversion.to_dict() if sweep.source and sweep.source.conversion else None,
        graph_transform=sweep.source.graph_transform.details if sweep.source and sweep.source.graph_transform else None,
    )


def _with_host(o: StudyOutcome, clock: _Clock) -> StudyOutcome:
    """The outcome with summary.json's host entries: peak RSS by stage so far, and how busy the host was over the
    host's rows (``HostLoad``, with its warnings; the recommendation's when the host's rows chose it)."""
    rows = [(a.point.label, a.result.measurement.environment) for a in o.assessed if a.result.measurement is not None]
    load = HostLoad.of(rows, o.cfg.host_load_threshold)
    chosen = o.selection.chosen if o.host_selection is None or o.selection is o.host_selection else None
    recommended = chosen.point.label if chosen is not None and not o.interrupted else None
    host = {**clock.memory(), "host_load": load.to_dict(recommended)}
    return replace(o, warnings=(*o.warnings, *load.warnings(recommended)), host=host)


def _deploy(
    sweep: Sweep,
    store: StudyStore,
    out: Path,
    selection: Selection,
    hardware: HardwareAnalysis | None,
    on_event: EventFn,
    clock: _Clock,
    warnings: list[str],
) -> DeploymentResult:
    """Stage deployment: the LoadGen scenarios of the baseline and of the host's choice (with their warnings)."""
    cfg = sweep.cfg
    on_event("stage", name="deployment simulation", detail=f"cpu_frequency_scale={cfg.cpu_frequency_scale}")
    deployment = simulate_deployment(sweep, _deployment_targets(cfg, selection, hardware), store, out)
    warnings += deployment.warnings
    clock.lap("deployment")
    return deployment


def _search_note(search: SearchOutcome | None) -> list[str]:
    """The warning saying how the search ended (none for the grid)."""
    if search is None:
        return []
    return [
        f"search ({search.strategy}) stopped by {search.stopped_by} after {len(search.trials)} trials "
        f"({len(search.points)} distinct points of {search.space_size})"
    ]


def _assess_on_target(cfg: StudyConfig, run: TargetRun, baseline: VariantResult | None) -> tuple[Assessment, ...]:
    """A target's rows against the budgets, its measured latency being the device latency (no clock model)."""
    measured = cfg.model_copy(update={"cpu_frequency_scale": 1.0})
    return tuple(assess_results([r for r in run.results if r.skipped is None], measured, baseline))


def _recommendation(
    cfg: StudyConfig,
    host: Selection,
    on_target: dict[str, tuple[Assessment, ...]],
    baseline: VariantResult | None,
    warnings: list[str],
) -> Selection:
    """The selection of the target whose numbers choose the artifact (``recommend_for``; else the host's)."""
    name = cfg.recommendation_target
    if name == "host":
        return host
    if not any(a.ok for a in on_target.get(name, ())):
        warnings.append(
            f"recommend_for {name!r}: no successful measurement from that target in this run; the "
            "host's numbers chose (run again when the target is back: only its failed points are measured)"
        )
        return host
    return select_recommendation(on_target[name], baseline, cfg.part(BudgetSettings))


def _hardware(
    sweep: Sweep,
    out: Path,
    baseline: VariantResult,
    selection: Selection,
    assessed: Sequence[Assessment],
    on_event: EventFn,
    warnings: list[str],
) -> HardwareAnalysis | None:
    """Stage hardware, when the model has layers to analyse (else a warning: the deployment uses the linear model)."""
    on_event("stage", name="hardware analysis", detail="machine calibration + layer tables")
    try:
        parts = sweep.cfg.part(HardwareSettings), sweep.cfg.part(MeasureSettings)
        analysis = analyse_hardware(
            out, *parts, _layer_parent(sweep), sweep.data.input_shape, baseline, selection, assessed
        )[0]
        warnings += analysis.warnings
        return analysis
    except ValueError as exc:
        why = str(exc).rstrip(".")
    warnings.append(f"hardware analysis skipped: {why}; the deployment simulation uses the linear clock model")
    return None


def _layer_parent(sweep: Sweep) -> Callable[[float], torch.nn.Module | Path]:
    """The float parent a layer table is made of: an ONNX input model's graph (the one its variants are built
    from) for the unpruned level, else the PyTorch model (a pruned level's module)."""

    def parent(level: float) -> torch.nn.Module | Path:
        if level == 0.0 and sweep.source is not None and sweep.source.onnx_path is not None:
            return sweep.source.onnx_path
        model = sweep.parent(level)
        if model is None:
            raise ValueError("The hardware analysis needs a PyTorch model or an ONNX file.")
        return model

    return parent


def _track(cfg: StudyConfig, outcome: StudyOutcome, report: StudyReport, on_event: EventFn) -> list[str]:
    """Stage tracking (MLflow, when configured): never loses the study's own outputs."""
    if cfg.tracking.mlflow is None or outcome.interrupted:
        return []
    from .report import log_study_mlflow

    on_event("stage", name="tracking", detail=f"MLflow {cfg.tracking.mlflow.uri}")
    try:
        report.summary["mlflow_run_id"] = log_study_mlflow(cfg, outcome.assessed, report.summary, report.output_dir)
    except Exception as exc:  # noqa: BLE001 — tracking must never lose the study's own outputs
        return [f"MLflow logging failed: {type(exc).__name__}: {exc}"]
    return []


def input_warnings(cfg: StudyConfig, data: DataBundle) -> list[str]:
    """Legal but suspicious inputs, said once in the study's warnings (never silently accepted)."""
    warnings = []
    cores = os.cpu_count() or 1
    if cfg.threads > cores:
        warnings.append(
            f"threads={cfg.threads} is more than this machine's {cores} cores: the threads share cores and "
            "the latencies measure contention"
        )
    quantized = any(p in PRECISIONS and PRECISIONS.get(p).quantized for p in cfg.precisions)
    asked = max(c.batches for c in cfg.quantization.choices())
    batch = data.val_loader.batch_size or 1
    have = -(-data.calibration_images // batch)
    if quantized and asked > have:
        warnings.append(
            f"quantization.calibration_batches={asked} asks for more than the calibration data holds "
            f"({data.calibration_images} images = {have} batches of {batch}, from the "
            f"{data.calibration_source}): int8 points calibrate on all {have}"
        )
    if data.n_val < 10 or 1 / data.n_val > cfg.max_accuracy_drop:
        warnings.append(
            f"the accuracy is measured on {data.n_val} validation image{'s' if data.n_val != 1 else ''}: "
            f"it moves in steps of {100 / data.n_val:.3g} points (max_accuracy_drop is "
            f"{100 * cfg.max_accuracy_drop:g} points)"
        )
    return warnings


def _load_inputs(
    cfg: StudyConfig, module: torch.nn.Module | None, raw: RawDataset | None, calibration: np.ndarray | None
) -> tuple[DataBundle, ModelSource]:
    """Stages data + model: load both and check that they fit (every error before anything is written)."""
    channels, model_inputs = None, None
    if cfg.model.onnx is not None and Path(cfg.model.onnx).is_file():
        try:
            model_inputs = onnx_inputs(cfg.model.onnx)
        except ModelSourceError as exc:
            raise ConfigError([str(exc)]) from None
        channels = model_inputs[0].dims[1] if takes_images(model_inputs) else None
    inputs = cfg.part(InputSettings)
    data = load_study_data(inputs, raw, channels, calibration, target_kind(cfg.part(BudgetSettings)), model_inputs)
    try:
        source = load_model_source(inputs, data.input_shape, data.num_classes, module, seed=cfg.seed)
        if not data.takes_images and source.onnx_path is None:
            raise ModelSourceError(
                f"The data gives the model's inputs one by one ({', '.join(data.input_names)}): a model with several "
                f"inputs is studied from its ONNX file (model: {{onnx: model.onnx}}; torch.onnx.export(model, "
                f"(x1, x2, ...), input_names=[...])). Got the model {source.label}."
            )
        sample = batch_slice(next(iter(data.val_loader))[0], 0, 2)  # class scores: only for a metric reading them
        check_model_fits(source, data.input_shape, data.num_classes, sample, data.targets == "class_ids")
    except ModelSourceError as exc:
        raise ConfigError([str(exc)]) from None
    try:
        check_metric(cfg, data, source)  # a metric that cannot score this model fails before anything is written
    except ValueError as exc:  # MetricError, UserCodeError, CallableImportError: the metric or postprocess
        raise ConfigError([_one_line(exc)]) from None
    return data, with_onnx_conversion(source, data)  # an ONNX model: its PyTorch module, checked, or why not


def _one_line(exc: BaseException) -> str:
    """An error as the one line a ``ConfigError`` shows."""
    return " ".join(str(exc).split())


def _normalise_graph(
    cfg: StudyConfig, data: DataBundle, source: ModelSource, out: Path, on_event: EventFn
) -> tuple[ModelSource, list[str]]:
    """Stage graph (an ONNX model): the graph its variants are built from, onnxslim's normalised copy in ``onnx/``
    (``model.simplify``) or the file as given, with the warning when a normalised graph asked for is not used."""
    if source.kind != "onnx":
        return source, []
    source = normalise_source(source, cfg.model.simplify_graph, out / "onnx", next(iter(data.val_loader))[0])
    graph = source.graph_transform
    if graph is None:
        return source, []
    on_event("log", message=f"ONNX graph: {graph.label} ({graph.path.name})")
    return source, [graph.warning] if graph.warning else []


def _take_folder(
    cfg: StudyConfig, fresh: bool, wait: bool, command: list[str] | None
) -> tuple[Path, atomic.FolderLock, tuple[StudyStore, list[str]]]:
    """Check, create and lock the output folder and open its store (``fresh``: after deleting the study's files).

    Returns:
        The folder, its lock, the store and the warnings of ``--fresh``.
    """
    check_study_folder(Path(cfg.output_dir), fresh)
    out = check_output_dir(cfg.output_dir)
    lock = _lock(out, wait, " ".join(command or []))
    try:
        check_study_folder(out, fresh)  # again under the lock: the folder may have changed while we waited
        if not fresh:  # a damaged search.sqlite is refused (ConfigError) before anything is trained or measured
            load_search(cfg, out)
        return out, lock, _open_store(out, fresh)
    except ConfigError:
        lock.release()
        raise


def run_study(
    cfg: StudyConfig,
    *,
    fresh: bool = False,
    on_event: EventFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    command: list[str] | None = None,
    module: torch.nn.Module | None = None,
    raw_data: RawDataset | None = None,
    calibration_images: np.ndarray | None = None,
    wait: bool = False,
) -> StudyResult:
    """Run (or resume) a study and write every output into ``cfg.output_dir``.

    Args:
        cfg: validated config (see ``load_study_config``).
        fresh: delete what an earlier study wrote in the folder (store, caches, outputs) first.
        on_event: progress callback ``on_event(kind, **info)``.
        should_stop: checked between variants and stages; when it returns True the outputs for the
            finished points are written and ``StudyInterrupted`` is raised (carrying the ``StudyResult``).
        command: the command line, for reproducibility.json.
        module, raw_data, calibration_images: a model and data handed over in memory (``edge_opt.optimize``).
        wait: wait for another run holding the folder's lock instead of refusing.
    Raises:
        ConfigError: invalid config, an output folder that is not writable, holds files no study wrote,
            is locked by another run, or holds a store of another program or release.
        DataError: data that cannot be read.
    """
    emit: EventFn = on_event or (lambda kind, **info: None)
    errors = registry_errors(cfg)
    if errors:
        raise ConfigError(errors)
    check_output_dir(cfg.output_dir, create=False)
    folder_digest.cache_clear()  # an image folder is hashed once per study, never from a stale walk
    clock = _Clock()
    emit("stage", name="data", detail=cfg.dataset)
    data, source = _load_inputs(cfg, module, raw_data, calibration_images)  # errors before anything is written
    out, lock, (store, fresh_notes) = _take_folder(cfg, fresh, wait, command)
    try:
        store.set_meta("config", cfg.model_dump(mode="json"))  # the last run's config: what report/status read
        # as text: the record keeps its key order (the store sorts the keys of what it keeps)
        store.set_meta("reproducibility", json.dumps(reproducibility_record(cfg, data, command), default=str))
        sweep, interrupted, warnings, search = _measure(
            cfg, data, source, out, store, emit, should_stop or (lambda: False), clock
        )
        warnings = [*fresh_notes, *warnings]
        journal, _ = begin_generation(out, cfg.config_hash)  # the previous outputs go before any new one is written
        with journal:
            outcome = _with_host(_analyse(sweep, store, out, interrupted, emit, clock, warnings, search), clock)
            emit("stage", name="report", detail=str(out))
            report = write_study_report(out, outcome, data, command)
            stamp_outputs(out, list(journal.files), cfg.config_hash)
        commit_generation(out, cfg.config_hash, journal, outcome.interrupted)
        clock.lap("report")
        warnings = [*outcome.warnings, *_track(cfg, outcome, report, emit)]
    finally:
        store.close()
        close_cache_ledger(out)
        lock.release()
    return _study_result(report, outcome, sweep, warnings, clock)


def _study_result(
    report: StudyReport, outcome: StudyOutcome, sweep: Sweep, warnings: list[str], clock: _Clock
) -> StudyResult:
    """The study's result (an interrupted study raises ``StudyInterrupted`` carrying it)."""
    result = StudyResult(
        report.output_dir,
        report.frame,
        report.summary,
        reused=sweep.reused,
        computed=sweep.computed,
        interrupted=outcome.interrupted,
        goals_met=outcome.selection.goals_met,
        recommendation=report.recommendation,
        warnings=sorted(set(warnings)),
        timings={**clock.timings, **{f"variants.{k}": v for k, v in sweep.timings.items()}},
        peak_rss_mb=dict(clock.peak_rss_mb),
        children_peak_rss_mb=dict(clock.children_peak_rss_mb),
        outcome=outcome,
        frontier=report.frontier_latency,
    )
    if result.interrupted:
        raise StudyInterrupted(result)
    return result


# What only a run can produce (the model, the hardware and deployment stages): kept by a rebuild when intact.
RUN_ONLY_OUTPUTS = (
    "model/",
    "deployment.csv",
    "deployment/",
    "hardware_summary.csv",
    "layerwise_breakdown.csv",
    "roofline_points.csv",
    "precision_tradeoffs.csv",
    "reproducibility.json",
)


def rebuild_report(output_dir: str | Path, before: Callable[[], None] | None = None) -> Path:
    """Rebuild every table, plot and the HTML of a study from its store, re-running nothing (``before``: a
    change to the store made first, while the folder is held, e.g. an imported measurement).

    The study is the folder's last run (its config is kept in the store). The sweep rows, frontiers,
    plots and precision table are recomputed from ``study.sqlite``. What only a run produces (the
    model, hardware and deployment results) is kept when the folder's outputs are an intact
    generation of the same config; otherwise it is removed with the rest, never mixed in, and the
    summary says to run the study again.

    Raises:
        ConfigError: the folder holds no study, is locked by a run, or its store is not readable.
    """
    from .study import load_stored_study

    out = Path(output_dir)
    if not (out / "study.sqlite").is_file():
        raise ConfigError([f"{str(out)!r} holds no study (no study.sqlite)."])
    with _lock(out):
        if before is not None:
            before()
        study = load_stored_study(out)
        cfg = study.cfg
        keep = reusable_files(out, cfg.config_hash, RUN_ONLY_OUTPUTS, required=("summary.json",))
        intact = keep is not None
        old = _old_summary(out) if intact else {}
        journal, _ = begin_generation(out, cfg.config_hash, keep=keep or [])
        with journal:
            summary = _rebuild_tables(out, cfg, study, old)
            if not intact:
                summary["warnings"] = sorted({*summary.get("warnings", []), REBUILD_NOTE})
            atomic.write_json(out / "summary.json", summary)
            _rebuild_repro(out)
            write_sensitivity(out, cfg)
            path = write_html_report(out)
            stamp_outputs(out, list(journal.files), cfg.config_hash)
        commit_generation(out, cfg.config_hash, journal, interrupted=bool(summary.get("interrupted")))
    return path


REBUILD_NOTE = (
    "the model, hardware and deployment outputs were not rebuilt (they belonged to another or an "
    "unfinished run): run the study again (edge-opt run) to produce them"
)


def _old_summary(out: Path) -> dict[str, Any]:
    try:
        doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _rebuild_tables(out: Path, cfg: StudyConfig, study: Any, old: dict[str, Any]) -> dict[str, Any]:
    """Sweep table, frontiers, plots and precision table from the stored records; the summary to write."""
    measured = [r for r in study.results if r.skipped is None]
    frame = with_vendor_rows(to_frame(assess_results(measured, cfg, study.baseline)), study.vendor_rows)
    higher = metric_higher_is_better(cfg.part(BudgetSettings))
    frontier_lat, frontier_en = frontiers(frame, cfg.pareto_use_ci, higher)
    fresh = build_summary(
        old.get("baseline", {}),
        cfg.memory_budgets_mb,
        cfg.active_memory_budget_mb,
        cfg.cpu_frequency_scale,
        cfg.latency_multiplier,
        frame,
        old.get("deployment", {}),
    )
    total = study.search.space_size if study.search is not None else len(sweep_points(cfg.part(VariantSettings)))
    summary = {
        **old,
        **fresh,
        "config_hash": cfg.config_hash,
        "finished_points": len(study.results),
        "total_points": total,
    }
    if study.search is not None:
        write_search_history(out, study.search)
    summary.setdefault("interrupted", study.search is None and len(study.results) < total)
    write_outputs(out, frame, frontier_lat, frontier_en, summary)
    if measured:
        write_plots(
            out,
            frame,
            frontier_lat,
            frontier_en,
            recommended_key=(summary.get("recommended") or {}).get("key"),
            higher_is_better=higher,
        )
        if not (out / "precision_tradeoffs.csv").exists():
            ptable = precision_tradeoff_table(frame)
            atomic.write_with(
                out / "precision_tradeoffs.csv", lambda t: ptable.to_csv(t, index=False, encoding="utf-8")
            )
    rebuild_hardware_plots(out)
    return summary


def _rebuild_repro(out: Path) -> None:
    """reproducibility.json of the last run (kept when intact, else from the record in the store)."""
    if (out / "reproducibility.json").exists():
        return
    with StudyStore(out / "study.sqlite") as store:
        record = store.get_meta("reproducibility")
    if isinstance(record, str):
        atomic.write_json(out / "reproducibility.json", json.loads(record))
