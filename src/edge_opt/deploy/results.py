"""The deployment stage's frozen records: what ``simulate_deployment`` returns.

``DeploymentResult`` holds one ``TargetSimulation`` (or ``SimulationError``) per simulated target, LoadGen's
accuracy run on the exported artifact (``ArtifactAccuracy``) and the stage's warnings. The per-scenario rows of
``deployment.csv`` are ``ScenarioRow`` records (``DeploymentResult.rows()``); ``to_dict()`` gives summary.json's
``deployment`` entry and ``TargetSimulation.to_dict()`` the document the study store caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ArtifactAccuracy",
    "DeploymentResult",
    "ScenarioFigures",
    "ScenarioRow",
    "SimulationError",
    "TargetSimulation",
]

DRIVER = "mlperf_loadgen"
POWER_ASSUMPTION = "device power = power_watts × cpu_frequency_scale"


@dataclass(frozen=True)
class ScenarioFigures:
    """One scenario's figures for one target: LoadGen's on this host and the simulated device's (host × the
    clock factor), keyed as ``deployment.csv``'s columns (``p90_ms``, ``qps``, ``loadgen_verdict`` …)."""

    name: str
    host: Mapping[str, Any]
    device: Mapping[str, Any]
    extra: Mapping[str, Any] = field(default_factory=dict)  # scenario-level keys (server: the latency bound)

    def to_dict(self) -> dict[str, Any]:
        return {"host": dict(self.host), "device": dict(self.device), **self.extra}

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ScenarioFigures:
        extra = {k: v for k, v in d.items() if k not in ("host", "device")}
        return cls(name, dict(d.get("host", {})), dict(d.get("device", {})), extra)


@dataclass(frozen=True)
class ScenarioRow:
    """One row of ``deployment.csv``: a target's scenario figures on the host or the simulated device."""

    model: str  # the target's label (baseline / recommended)
    scenario: str
    where: str  # host | device
    backend: str | None
    precision: str | None
    cpu_frequency_scale: float | None
    latency_model: str | None
    figures: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The CSV row: the row's identity, then the scenario's figures."""
        return {
            "model": self.model,
            "scenario": self.scenario,
            "where": self.where,
            "backend": self.backend,
            "precision": self.precision,
            "cpu_frequency_scale": self.cpu_frequency_scale,
            "latency_model": self.latency_model,
            **self.figures,
        }


_HEADER = (
    "backend",
    "precision",
    "kernel_precision",
    "cpu_frequency_scale",
    "latency_model",
    "device_latency_factor",
    "compute_bound_fraction",
    "threads",
    "device_power_w",
    "driver",
    "power_assumption",
)


@dataclass(frozen=True)
class TargetSimulation:
    """One target's deployment simulation (summary.json's ``deployment.<label>``).

    Attributes:
        label: baseline / recommended.
        backend, precision, kernel_precision: the variant simulated.
        cpu_frequency_scale: device clock / host clock.
        latency_model: linear / roofline; device_latency_factor: host → device latency factor.
        compute_bound_fraction: the roofline model's compute-bound share (None for the linear model).
        threads: intra-op threads; device_power_w: the assumed device power.
        scenarios: the scenarios run, in the order they ran.
        hardware: the target's hardware summary (None outside the study stage).
        measured_fewer_threads: the measured slow-down with fewer threads (None outside the study stage).
        skipped_scenarios: scenarios asked for but not run, each with its reason (the model's time budget).
    """

    label: str
    backend: str
    precision: str
    kernel_precision: str | None
    cpu_frequency_scale: float
    latency_model: str
    device_latency_factor: float
    compute_bound_fraction: float | None
    threads: int
    device_power_w: float
    scenarios: tuple[ScenarioFigures, ...] = ()
    hardware: Mapping[str, Any] | None = None
    measured_fewer_threads: Mapping[str, Any] | None = None
    driver: str = DRIVER
    power_assumption: str = POWER_ASSUMPTION
    skipped_scenarios: Mapping[str, str] = field(default_factory=dict)  # not run (the model's time budget), why

    def scenario(self, name: str) -> ScenarioFigures | None:
        """The named scenario's figures (None when it did not run)."""
        return next((s for s in self.scenarios if s.name == name), None)

    def rows(self) -> tuple[ScenarioRow, ...]:
        """``deployment.csv``'s rows: per scenario, the host's then the device's."""
        return tuple(
            ScenarioRow(
                self.label,
                s.name,
                where,
                self.backend,
                self.precision,
                self.cpu_frequency_scale,
                self.latency_model,
                dict(figures),
            )
            for s in self.scenarios
            for where, figures in (("host", s.host), ("device", s.device))
        )

    def to_dict(self) -> dict[str, Any]:
        """The simulation's document: its settings, ``scenarios``, the batch scenario's device figures at top level
        (the reference's keys), then the hardware summary and the fewer-threads run."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _HEADER}
        out["scenarios"] = {s.name: s.to_dict() for s in self.scenarios}
        batch = self.scenario("batch")
        if batch is not None:
            out.update(batch.device)
        if self.hardware is not None:
            out["hardware"] = dict(self.hardware)
        if self.measured_fewer_threads is not None:
            out["measured_fewer_threads"] = dict(self.measured_fewer_threads)
        if self.skipped_scenarios:
            out["skipped_scenarios"] = dict(self.skipped_scenarios)
        return out

    @classmethod
    def from_dict(cls, label: str, d: Mapping[str, Any]) -> TargetSimulation:
        """A simulation's document (``deployment_simulation``'s result, or one the study store cached)."""
        hardware, fewer = d.get("hardware"), d.get("measured_fewer_threads")
        return cls(
            label=label,
            **{k: d[k] for k in _HEADER if k in d},
            scenarios=tuple(ScenarioFigures.from_dict(n, parts) for n, parts in d.get("scenarios", {}).items()),
            hardware=dict(hardware) if hardware is not None else None,
            measured_fewer_threads=dict(fewer) if fewer is not None else None,
            skipped_scenarios=dict(d.get("skipped_scenarios") or {}),
        )


@dataclass(frozen=True)
class SimulationError:
    """A target whose simulation failed, and why."""

    label: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error}


@dataclass(frozen=True)
class ArtifactAccuracy:
    """LoadGen's AccuracyOnly run on the exported artifact, next to the accuracy its manifest records; for a study
    scored by another metric than top-1, its metric (``metric``, named ``metric_name``) next to the manifest's."""

    accuracy: float | None  # None when LoadGen's accuracy log gave none
    manifest_accuracy: float | None
    runtime: str
    samples: int
    loadgen_log: str
    mode: str = "AccuracyOnly"
    metric: float | None = None  # the study's metric from LoadGen's accuracy log (None for top1)
    metric_name: str | None = None  # its display name (None for top1: no metric keys)
    manifest_metric: float | None = None  # the manifest's ``metric.value``

    def to_dict(self) -> dict[str, Any]:
        out = {
            "accuracy": self.accuracy,
            "manifest_accuracy": self.manifest_accuracy,
            "runtime": self.runtime,
            "samples": self.samples,
            "loadgen_log": self.loadgen_log,
            "mode": self.mode,
        }
        if self.metric_name is not None:
            out.update(metric=self.metric, metric_name=self.metric_name, manifest_metric=self.manifest_metric)
        return out


@dataclass(frozen=True)
class DeploymentResult:
    """What the deployment stage produced: per target its simulation or its error, LoadGen's accuracy run on the
    artifact, and the stage's warnings."""

    targets: tuple[TargetSimulation | SimulationError, ...] = ()
    loadgen_accuracy: ArtifactAccuracy | None = None
    warnings: tuple[str, ...] = ()

    @property
    def simulations(self) -> tuple[TargetSimulation, ...]:
        """The targets whose simulation ran."""
        return tuple(t for t in self.targets if isinstance(t, TargetSimulation))

    @property
    def errors(self) -> tuple[SimulationError, ...]:
        """The targets whose simulation failed."""
        return tuple(t for t in self.targets if isinstance(t, SimulationError))

    def get(self, label: str) -> TargetSimulation | SimulationError | None:
        """The target labelled ``label`` (baseline / recommended), or None."""
        return next((t for t in self.targets if t.label == label), None)

    def rows(self) -> tuple[ScenarioRow, ...]:
        """``deployment.csv``'s rows: per simulated target and scenario, the host's then the device's figures."""
        return tuple(r for t in self.simulations for r in t.rows())

    def to_dict(self) -> dict[str, Any]:
        """summary.json's ``deployment`` entry: ``{label: simulation or {"error": …}, "loadgen_accuracy": …}``."""
        out: dict[str, Any] = {t.label: t.to_dict() for t in self.targets}
        if self.loadgen_accuracy is not None:
            out["loadgen_accuracy"] = self.loadgen_accuracy.to_dict()
        return out
