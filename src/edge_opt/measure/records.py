"""Typed, frozen records that flow from measurement to the report.

``ConfigPoint`` is one cell of the study grid; ``VariantResult`` is what measuring (or failing
to build) one point produced: the point, its key, the raw ``MeasurementRecord`` (samples and
environment), the error, and where it ran. The study store keeps ``VariantResult.to_dict()``
(versioned JSON, NaN kept) and gives back ``VariantResult.from_dict`` — the record, not a row.
``VariantResult.row()`` is the one flat view of the raw columns (modelled on pyperf's ``Run``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .host import host_columns
from .metrics import MeasurementRecord, PerfMetrics

__all__ = ["RESULT_FORMAT", "ConfigPoint", "ResultFormatError", "VariantResult"]

# Version of the stored result document; bump when its fields change meaning.
RESULT_FORMAT = 2


class ResultFormatError(ValueError):
    """A stored document that is not a result of this format."""


@dataclass(frozen=True, order=True)
class ConfigPoint:
    """One cell of the study grid."""

    pruning_level: float
    precision: str
    backend: str
    calibration: str = ""  # the calibration choice of a quantized point when the config lists several

    @property
    def label(self) -> str:
        """``backend precision pN`` (+ the calibration choice) for messages."""
        return f"{self.backend} {self.precision} p{self.pruning_level:g}" + (
            f" [{self.calibration}]" if self.calibration else ""
        )


METRIC_FIELDS = tuple(PerfMetrics.__dataclass_fields__)


@dataclass(frozen=True)
class VariantResult:
    """What one config point produced.

    Attributes:
        point: the config point.
        key: its stable key (everything that shapes its numbers).
        measurement: raw samples and environment; None when the variant could not be built or measured.
        error: why the point has no usable numbers (None when it has).
        runtime_parameter_bytes: bytes the weights occupy in the graph the runtime executes.
        threads: intra-op threads it was measured with.
        metadata_file: the variant's metadata document, relative to the output folder.
        node_id: the Ray node that measured it (None locally).
        traceback: the failure's traceback, for error rows.
        timings: seconds spent building and measuring.
        skipped: why the point does not apply to this model (not built, not measured; never an error).
        model_source: the input model (``registry:small_cnn``, ``onnx:model.onnx`` …).
        model_sha256: SHA-256 of the model file, or of the baseline's state dict for a module.
        float_layers: quantized builds: the layers whose kernels do not run int8 (read from the built graph).
        int8_mac_fraction: quantized builds: the share of the layers' MACs that runs int8 kernels.
        pruning: what pruning really removed from the parent (``param_fraction`` kept, ``kept_channels`` as
            "layer kept/original; …"), None for a model that cannot be pruned.
        measured_on: ``host`` (the machine running the study) or the name of the target (device agent or
            vendor tool) whose measurement this is.
        source: how a target's figures were obtained (``edge-opt agent``, ``openvino benchmark_app`` …).
        graph_transform: an ONNX model's graph as the variants were built from it (``onnxslim-<version>``: the
            normalised graph, ``none``: the file as given); None for other models.
        flash_bytes: a microcontroller's flash for the model: the bytes of the built ``.tflite`` (LiteRT rows only).
        peak_ram_bytes: its tensor arena estimate: the largest set of activations live at once in the file's
            execution order (LiteRT rows only).
    """

    point: ConfigPoint
    key: str
    measurement: MeasurementRecord | None = None
    error: str | None = None
    runtime_parameter_bytes: int | None = None
    threads: int = 1
    metadata_file: str | None = None
    node_id: str | None = None
    traceback: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    skipped: str | None = None
    model_source: str | None = None
    model_sha256: str | None = None
    float_layers: tuple[str, ...] | None = None
    int8_mac_fraction: float | None = None
    pruning: Mapping[str, Any] | None = None
    measured_on: str = "host"
    source: str | None = None
    graph_transform: str | None = None
    flash_bytes: int | None = None
    peak_ram_bytes: int | None = None

    @classmethod
    def skip(cls, point: ConfigPoint, key: str, reason: str, **info: Any) -> VariantResult:
        """A point that does not apply (not built, not measured, not an error)."""
        return cls(point=point, key=key, skipped=reason, **info)

    @classmethod
    def failed(cls, point: ConfigPoint, key: str, message: str, **info: Any) -> VariantResult:
        """An error result (no measurement)."""
        return cls(point=point, key=key, error=message.strip()[:2000], **info)

    @property
    def ok(self) -> bool:
        """Has usable numbers."""
        return self.error is None and self.skipped is None and self.measurement is not None

    @property
    def metrics(self) -> PerfMetrics | None:
        """Statistics of the raw samples (None for a failed build)."""
        return self.measurement.metrics if self.measurement is not None else None

    @property
    def hostname(self) -> str | None:
        return self.measurement.environment.get("hostname") if self.measurement is not None else None

    @property
    def cpu_model(self) -> str | None:
        return self.measurement.environment.get("cpu_model") if self.measurement is not None else None

    def with_info(self, **changes: Any) -> VariantResult:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)

    def row(self) -> dict[str, Any]:
        """The raw columns of this result (no budgets, no comparisons): the sweep table's measured part."""
        row: dict[str, Any] = {
            "key": self.key,
            **asdict(self.point),
            "measured_on": self.measured_on,
            "source": self.source,
            "error": self.error,
        }
        m, rec = self.metrics, self.measurement
        if m is None or rec is None:
            row.update(
                {
                    "kernel_precision": None,
                    **{c: math.nan for c in METRIC_FIELDS},
                    "energy_source": None,
                    "parameter_bytes": math.nan,
                    "latency_samples_ms": [],
                    "batch_latency_samples_ms": [],
                }
            )
        else:
            row.update({"kernel_precision": rec.kernel_precision, **asdict(m)})
            runtime = self.runtime_parameter_bytes if self.runtime_parameter_bytes is not None else rec.parameter_bytes
            row.update(
                {
                    "parameter_bytes": rec.parameter_bytes,
                    "runtime_memory_mb": runtime / 1e6,
                    "latency_batch_size": rec.latency.batch_size,
                    "batch_size": rec.batch_latency.batch_size,
                    "n_eval": len(rec.correct),
                    "latency_samples": rec.latency.n,
                    "calls_per_sample": rec.latency.runs_per_sample,
                    "latency_rounds": rec.latency.rounds,
                    "latency_interrupted": len(rec.latency.interrupted_ms),
                    "latency_instances": rec.latency.instances,
                    "latency_budget_hit": rec.latency.budget_hit,
                    "latency_measure_s": rec.latency.spent_s if rec.latency.spent_s is not None else math.nan,
                    **_environment_columns(rec.environment),  # pinned_cores, how busy the host was
                    "latency_samples_ms": list(rec.latency.samples_ms),
                    "batch_latency_samples_ms": list(rec.batch_latency.samples_ms),
                    "hostname": self.hostname,
                    "cpu_model": self.cpu_model,
                    "threads": self.threads,
                }
            )
        row.pop("device_latency_ms", None)  # the device figure depends on the study's clock model: see Assessment
        _metric_columns(row, rec)
        row.update(
            {k: v for k, v in (("metadata_file", self.metadata_file), ("node_id", self.node_id)) if v is not None}
        )
        if self.model_source is not None:
            row.update(model_source=self.model_source, model_sha256=self.model_sha256)
        return row | self._build_columns()

    def _build_columns(self) -> dict[str, Any]:
        """What the build says of the variant: kernels left in float, pruning, graph, the MCU numbers (LiteRT)."""

        def number(v: float | None) -> float:
            return v if v is not None else math.nan

        return {
            "float_layers": ";".join(self.float_layers) if self.float_layers is not None else None,
            "int8_mac_fraction": number(self.int8_mac_fraction),
            "build_s": self.timings.get("variant_building", math.nan),  # building this variant (lowering, export …)
            "param_fraction": self.pruning["param_fraction"] if self.pruning else math.nan,
            "kept_channels": self.pruning["kept_channels"] if self.pruning else None,
            "graph_transform": self.graph_transform or "",  # empty: not an ONNX model
            "flash_bytes": number(self.flash_bytes),
            "peak_ram_bytes": number(self.peak_ram_bytes),
        }

    def to_dict(self) -> dict[str, Any]:
        """Versioned, JSON-able document (raw samples included)."""
        return {
            "format": RESULT_FORMAT,
            "point": asdict(self.point),
            "key": self.key,
            "measurement": self.measurement.to_dict() if self.measurement is not None else None,
            "error": self.error,
            "runtime_parameter_bytes": self.runtime_parameter_bytes,
            "threads": self.threads,
            "metadata_file": self.metadata_file,
            "node_id": self.node_id,
            "traceback": self.traceback,
            "timings": dict(self.timings),
            "skipped": self.skipped,
            "model_source": self.model_source,
            "model_sha256": self.model_sha256,
            "float_layers": list(self.float_layers) if self.float_layers is not None else None,
            "int8_mac_fraction": self.int8_mac_fraction,
            "pruning": dict(self.pruning) if self.pruning is not None else None,
            "measured_on": self.measured_on,
            "source": self.source,
            "graph_transform": self.graph_transform,
            "flash_bytes": self.flash_bytes,
            "peak_ram_bytes": self.peak_ram_bytes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VariantResult:
        """Inverse of ``to_dict``.

        Raises:
            ResultFormatError: a document of another format (an earlier release's store).
        """
        if not isinstance(d, Mapping) or d.get("format") != RESULT_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise ResultFormatError(f"stored result format {got!r}, this edge_opt reads format {RESULT_FORMAT}")
        m = d.get("measurement")
        return cls(
            point=ConfigPoint(
                float(d["point"]["pruning_level"]),
                d["point"]["precision"],
                d["point"]["backend"],
                d["point"].get("calibration", ""),
            ),
            key=d["key"],
            measurement=MeasurementRecord.from_dict(m) if m is not None else None,
            error=d.get("error"),
            runtime_parameter_bytes=d.get("runtime_parameter_bytes"),
            threads=int(d.get("threads", 1)),
            metadata_file=d.get("metadata_file"),
            node_id=d.get("node_id"),
            traceback=d.get("traceback"),
            timings=dict(d.get("timings") or {}),
            skipped=d.get("skipped"),
            model_source=d.get("model_source"),
            model_sha256=d.get("model_sha256"),
            float_layers=tuple(d["float_layers"]) if d.get("float_layers") is not None else None,
            int8_mac_fraction=d.get("int8_mac_fraction"),
            pruning=d.get("pruning"),
            measured_on=str(d.get("measured_on") or "host"),
            source=d.get("source"),
            graph_transform=d.get("graph_transform"),
            flash_bytes=d.get("flash_bytes"),
            peak_ram_bytes=d.get("peak_ram_bytes"),
        )


def _metric_columns(row: dict[str, Any], rec: MeasurementRecord | None) -> None:
    """Only a study scored by another metric than top1 has the ``metric`` and ``metric_name`` columns."""
    row.pop("metric", None)
    if rec is not None and rec.metric_name is not None:
        row.update(metric=rec.metrics.metric, metric_name=rec.metric_name)


def _environment_columns(env: Mapping[str, Any]) -> dict[str, Any]:
    """The row's columns from the record's environment: ``pinned_cores``, then the host's (``host_columns``)."""
    return {"pinned_cores": _cores(env.get("pinned_cores")), **host_columns(env)}


def _cores(cores: Any) -> str | None:
    """``"1"`` / ``"2,3"``: the cores the timed calls were pinned to (None: not pinned)."""
    return ",".join(str(c) for c in cores) if cores else None
