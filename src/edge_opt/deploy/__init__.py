"""Deploy stage: the recommended variant as an artifact, MLPerf LoadGen scenarios on a simulated slower clock,
and measurements on the devices named in ``measure_on``.
"""

from __future__ import annotations

from .artifact import ExportedArtifact, export_recommended
from .results import (
    ArtifactAccuracy,
    DeploymentResult,
    ScenarioFigures,
    ScenarioRow,
    SimulationError,
    TargetSimulation,
)
from .scenarios import DeploymentSettings, DeploymentTarget, deployment_simulation, simulate_deployment
from .targets import TargetRun, measure_on_targets, simulation_gap, vendor_row

__all__ = [
    "ArtifactAccuracy",
    "DeploymentResult",
    "DeploymentSettings",
    "DeploymentTarget",
    "ExportedArtifact",
    "ScenarioFigures",
    "ScenarioRow",
    "SimulationError",
    "TargetRun",
    "TargetSimulation",
    "deployment_simulation",
    "export_recommended",
    "measure_on_targets",
    "simulate_deployment",
    "simulation_gap",
    "vendor_row",
]
