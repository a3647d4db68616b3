"""The study's recommendation as a frozen record: the chosen config point, its metrics and its artifact.

``Recommendation.to_dict()`` is summary.json's ``recommended`` entry, built when the summary is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..deploy import ExportedArtifact
from ..measure import ConfigPoint
from ..study import Selection

__all__ = ["Recommendation"]


@dataclass(frozen=True)
class Recommendation:
    """The recommended (or, when ``goals_met`` is False, the best-effort) configuration.

    Attributes:
        point: the config point (backend, precision, pruning level, calibration).
        key: its store key.
        goals_met: whether it meets every goal; failed_goals: the goals it does not meet.
        accuracy, latency_ms, memory_mb: its host metrics.
        accuracy_drop: baseline accuracy − its accuracy; speedup_vs_baseline: baseline latency / its latency.
        kernel_precision: the precision its kernels really run.
        why: how it was chosen.
        artifact: the exported model file, relative to the output folder (None when the export failed).
        artifact_accuracy: the artifact's accuracy as its manifest records it.
        model, dataset, seed, config_hash: the study it came from, as the manifest records it.
        metric, metric_name, metric_drop: the study's metric when it is not top1 (its value, display name and drop
            from the baseline in its direction); None otherwise, and then left out of ``to_dict``.
    """

    point: ConfigPoint
    key: str
    goals_met: bool
    accuracy: float
    latency_ms: float
    memory_mb: float
    accuracy_drop: float
    speedup_vs_baseline: float
    failed_goals: tuple[str, ...] = ()
    kernel_precision: str | None = None
    why: str = ""
    artifact: str | None = None
    artifact_accuracy: float | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = ""
    seed: int = 0
    config_hash: str = ""
    metric: float | None = None
    metric_name: str | None = None
    metric_drop: float | None = None

    @property
    def backend(self) -> str:
        return self.point.backend

    @property
    def precision(self) -> str:
        return self.point.precision

    @property
    def pruning_level(self) -> float:
        return self.point.pruning_level

    @property
    def calibration(self) -> str:
        return self.point.calibration

    @classmethod
    def of(cls, selection: Selection, artifact: ExportedArtifact | None) -> Recommendation | None:
        """The selection's choice with its exported artifact (None when nothing was chosen or exported)."""
        chosen = selection.chosen
        if chosen is None or artifact is None:
            return None
        m, p = chosen.metrics, artifact.point
        rec = chosen.result.measurement
        scored = rec is not None and rec.metric_name is not None
        return cls(
            point=ConfigPoint(p["pruning_level"], p["precision"], p["backend"], p.get("calibration", "")),
            key=str(p["key"]),
            goals_met=selection.goals_met,
            failed_goals=tuple(selection.failed_goals),
            accuracy=m.accuracy,
            latency_ms=m.latency_ms,
            memory_mb=m.memory_mb,
            accuracy_drop=chosen.accuracy_drop,
            speedup_vs_baseline=chosen.speedup_vs_baseline,
            kernel_precision=rec.kernel_precision if rec is not None else None,
            why=selection.why,
            artifact=artifact.path,
            artifact_accuracy=artifact.manifest["artifact_accuracy"] if artifact.manifest else None,
            model=p["model"],
            dataset=p["dataset"],
            seed=p["seed"],
            config_hash=p["config_hash"],
            metric=m.metric if scored else None,
            metric_name=rec.metric_name if rec is not None else None,
            metric_drop=chosen.metric_drop if scored else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """summary.json's ``recommended``: the point as the manifest records it, then its metrics and artifact."""
        p = self.point
        return {
            "pruning_level": p.pruning_level,
            "precision": p.precision,
            "backend": p.backend,
            **({"calibration": p.calibration} if p.calibration else {}),
            "key": self.key,
            "model": self.model,
            "dataset": self.dataset,
            "seed": self.seed,
            "config_hash": self.config_hash,
            "goals_met": self.goals_met,
            "failed_goals": list(self.failed_goals),
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "memory_mb": self.memory_mb,
            "accuracy_drop": self.accuracy_drop,
            "speedup_vs_baseline": self.speedup_vs_baseline,
            "kernel_precision": self.kernel_precision,
            "why": self.why,
            "artifact": self.artifact,
            "artifact_accuracy": self.artifact_accuracy,
            **(
                {"metric": self.metric, "metric_name": self.metric_name, "metric_drop": self.metric_drop}
                if self.metric_name is not None
                else {}
            ),
        }
