"""Experiment tracking (optional extra ``edge-opt[mlflow]``): one parent run per study, one child run per variant."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunSettings, StudyConfig
from ..study import RAW_SAMPLE_COLUMNS, Assessment

__all__ = ["POINT_PARAMS", "check_tracking", "log_study_mlflow", "mlflow_available"]

POINT_PARAMS = ("pruning_level", "precision", "backend", "kernel_precision", "key")


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def check_tracking(cfg: RunSettings) -> list[str]:
    """Errors for a tracking config this installation cannot serve."""
    if cfg.tracking.mlflow is not None and not mlflow_available():
        return [
            "The 'tracking.mlflow' key needs MLflow: pip install 'edge-opt[mlflow]'. Got "
            f"{cfg.tracking.mlflow.model_dump()!r} with MLflow not installed."
        ]
    return []


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


def log_study_mlflow(
    cfg: StudyConfig, assessed: Sequence[Assessment], summary: dict[str, Any], output_dir: str | Path
) -> str:
    """Log a finished study: parent run (config params, summary metrics, report/model/CSV artifacts) and a
    child run per variant (params = config point, metrics = the row).

    Returns:
        The parent run id.
    """
    import mlflow

    mc = cfg.tracking.mlflow
    if mc is None:
        raise ConfigError(["log_study_mlflow called without tracking.mlflow in the config."])
    out = Path(output_dir)
    mlflow.set_tracking_uri(mc.uri)
    if mlflow.get_experiment_by_name(mc.experiment) is None:
        location = mc.artifact_location
        if location is None and mc.uri.startswith("sqlite:///"):
            # MLflow's default would be ./mlruns in the current folder; keep artifacts beside the database.
            location = (Path(mc.uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
        mlflow.create_experiment(mc.experiment, artifact_location=location)
    mlflow.set_experiment(mc.experiment)
    with mlflow.start_run(run_name=f"study {out.name}") as parent:
        params = {k: str(v)[:500] for k, v in _flat(cfg.model_dump(exclude={"tracking"})).items()}
        mlflow.log_params(params)
        top = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics(_metrics(top))
        rec = summary.get("recommended") or {}
        if rec:
            mlflow.set_tags(
                {
                    "recommended": f"{rec['backend']} {rec['precision']} p{rec['pruning_level']}",
                    "goals_met": str(rec.get("goals_met")),
                }
            )
        for name in (
            "report.html",
            "summary.json",
            "sweep_results.csv",
            "pareto_frontier_latency.csv",
            "pareto_frontier_energy.csv",
            "precision_tradeoffs.csv",
            "deployment.csv",
        ):
            if (out / name).exists():
                mlflow.log_artifact(str(out / name))
        if (out / "model").is_dir():
            mlflow.log_artifacts(str(out / "model"), artifact_path="model")
        for a in assessed:
            row = a.row()
            with mlflow.start_run(run_name=a.point.label, nested=True):
                mlflow.log_params({k: str(row.get(k)) for k in POINT_PARAMS})
                mlflow.log_metrics(_metrics({k: v for k, v in row.items() if k not in RAW_SAMPLE_COLUMNS}))
                if a.result.error:
                    mlflow.set_tag("error", a.result.error[:500])
        return parent.info.run_id
