"""Hardware-analysis stage: layer tables, the machine's roofs and each variant's place under them.

``analyse_hardware`` measures (or reads the cached) machine calibration, builds the layer
tables of the baseline and the recommended variant at the study's latency batch and at the
loader's batch, places every measured variant on the roofline, and writes the hardware
artifacts (``layerwise_breakdown.csv``, ``precision_tradeoffs.csv``, ``hardware_summary.csv``,
``roofline_points.csv`` and their plots).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ..config import HardwareSettings, MeasureSettings
from ..measure import VariantResult
from ..study import Assessment, Selection, to_frame
from ..variants import BACKEND_KINDS, get_precision
from .roofs import place
from .tables import (
    add_layer_roofline,
    estimate_layerwise_stats,
    fuse_epilogues,
    machine_calibration,
    precision_tradeoff_table,
    save_hardware_artifacts,
    summarize_hardware,
)

__all__ = [
    "HardwareAnalysis",
    "Parent",
    "analyse_hardware",
    "fuses_epilogues",
    "layer_table",
    "placed_summary",
    "working_set_bytes",
]


Parent = nn.Module | Path  # a float parent: a PyTorch model, or the ONNX file an ONNX input model is


@dataclass(frozen=True)
class HardwareAnalysis:
    """What the hardware stage found.

    Attributes:
        summaries: ``summarize_hardware`` of the baseline, the recommended variant, and the recommended
            variant at the loader's batch (``recommended_batch``), each placed against its own roofs, plus
            the ``machine`` calibration.
        machine: the roofs (measured or configured).
        warnings: variants faster than their roof even after the roofs were measured again.
    """

    summaries: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def compute_bound_fraction(self, label: str) -> float | None:
        """Compute-bound share of the roofline time of ``label`` (baseline / recommended)."""
        return self.summaries.get(label, {}).get("compute_bound_fraction")


def layer_table(
    model: Parent, precision: str, batch: int, input_shape: tuple[int, ...], backend: str = "torch"
) -> pd.DataFrame:
    """Layer table of a float parent (a PyTorch model or an ONNX file) at ``precision`` as ``backend`` runs it:
    activations and parameters at the precision's bytes per value; on a graph runtime the activations/
    normalisations it fuses into the preceding convolution or linear layer move no bytes of their own (``fused``
    column)."""
    bpv = get_precision(precision).bytes_per_value
    df = estimate_layerwise_stats(model, batch, input_shape, activation_bytes_per_value=bpv)
    df["parameter_bytes"] = (df["parameter_bytes"] * (bpv / 4)).astype(int)  # the parent is fp32
    return fuse_epilogues(df) if fuses_epilogues(backend) else df.assign(fused=False)


def fuses_epilogues(backend: str) -> bool:
    """Whether ``backend`` is a graph runtime (ONNX Runtime, OpenVINO, ExecuTorch/XNNPACK) that fuses an
    element-wise activation or normalisation into the convolution/linear kernel before it; eager PyTorch
    runs each layer as its own kernel."""
    return BACKEND_KINDS.get(backend, "torch") != "torch"


def working_set_bytes(layers: pd.DataFrame) -> float:
    """What must stay close to the core while the model runs: all weights plus the largest activation."""
    return float(layers["parameter_bytes"].sum() + (layers["activation_bytes"].max() if len(layers) else 0))


def placed_summary(
    layers: pd.DataFrame, latency_ms: float, ci95_ms: float, kernel_precision: str | None, machine: dict[str, Any]
) -> dict[str, Any]:
    """``summarize_hardware`` against the roofs this variant runs under (its kernels' compute roof, its working
    set's memory level), with ``roof_exceeded`` when even the slow end of its latency CI beats the roofline."""
    ws = working_set_bytes(layers)
    roofs = place(kernel_precision, ws, machine)
    s = summarize_hardware(layers, latency_ms, roofs["memory_roof_gbps"], roofs["compute_roof_gmacs"])
    slow_end = latency_ms + (ci95_ms if ci95_ms == ci95_ms else 0.0)
    exceeded = (
        bool(s["attainable_latency_ms"] > slow_end)
        if s["attainable_latency_ms"] == s["attainable_latency_ms"]
        else False
    )
    return {
        **s,
        **roofs,
        "working_set_bytes": ws,
        "roof_exceeded": exceeded,
        "roof_note": _exceeded_cause(s, roofs) if exceeded else None,
    }


def _exceeded_cause(s: dict[str, Any], roofs: dict[str, Any]) -> str:
    roof = (
        f"the {roofs['compute_roof_precision']} compute roof ({roofs['compute_roof_gmacs']:.1f} GMAC/s)"
        if s["bound_regime"] == "compute-bound"
        else f"the {roofs['memory_level']} memory roof ({roofs['memory_roof_gbps']:.1f} GB/s)"
    )
    return (
        f"faster than {roof} even at the slow end of its latency CI (efficiency {s['roofline_efficiency']:.2f}): "
        "its kernels do fewer multiplications or move fewer bytes than the layers' nominal count "
        "(Winograd/FFT convolution, fused layers kept in registers), or the roof is under-measured"
    )


def _roofline_points(
    assessed: Sequence[Assessment],
    parent: Callable[[float], Parent],
    batch: int,
    input_shape: tuple[int, ...],
    machine: dict[str, Any],
) -> pd.DataFrame:
    cache: dict[tuple[float, str, str], pd.DataFrame] = {}
    rows = []
    for a in assessed:
        if not a.ok:
            continue
        k = (a.point.pruning_level, a.point.precision)
        if (*k, a.point.backend) not in cache:
            cache[(*k, a.point.backend)] = layer_table(parent(k[0]), k[1], batch, input_shape, a.point.backend)
        kernel = a.result.measurement.kernel_precision if a.result.measurement is not None else None
        s = placed_summary(
            cache[(*k, a.point.backend)], a.metrics.latency_ms, a.metrics.latency_ci95_ms, kernel, machine
        )
        rows.append(
            {
                "backend": a.point.backend,
                "precision": a.point.precision,
                "pruning_level": k[0],
                "kernel_precision": kernel,
                "arithmetic_intensity": s["arithmetic_intensity"],
                "achieved_gmacs": s["achieved_gmacs"],
                "roofline_efficiency": s["roofline_efficiency"],
                "compute_roof_gmacs": s["compute_roof_gmacs"],
                "compute_roof_precision": s["compute_roof_precision"],
                "memory_roof_gbps": s["memory_roof_gbps"],
                "memory_level": s["memory_level"],
                "working_set_bytes": s["working_set_bytes"],
                "roof_exceeded": s["roof_exceeded"],
                "roof_note": s["roof_note"],
            }
        )
    return pd.DataFrame(rows)


def _summaries(
    lb: int,
    parent: Callable[[float], Parent],
    input_shape: tuple[int, ...],
    baseline: VariantResult,
    selection: Selection,
    machine: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    base_m = baseline.metrics
    if base_m is None:
        raise ValueError("The hardware analysis needs a measured baseline. Got a baseline without measurement.")
    bw, peak = machine["memory_bandwidth_gbps"], machine["peak_compute_gmacs"]
    base_table = layer_table(parent(0.0), "fp32", lb, input_shape, baseline.point.backend)
    base_kernel = baseline.measurement.kernel_precision if baseline.measurement is not None else "fp32"
    summaries = {
        "baseline": placed_summary(base_table, base_m.latency_ms, base_m.latency_ci95_ms, base_kernel, machine)
    }
    layers = add_layer_roofline(base_table, bw, peak)
    chosen = selection.chosen
    if chosen is not None:
        level, precision = chosen.point.pruning_level, chosen.point.precision
        rec = chosen.result.measurement
        kernel = rec.kernel_precision if rec is not None else None
        backend = chosen.point.backend
        table = layer_table(parent(level), precision, lb, input_shape, backend)
        summaries["recommended"] = placed_summary(
            table, chosen.metrics.latency_ms, chosen.metrics.latency_ci95_ms, kernel, machine
        )
        r = summaries["recommended"]
        layers = add_layer_roofline(table, r["memory_roof_gbps"], r["compute_roof_gmacs"])
        loader_batch = rec.batch_latency.batch_size if rec is not None else lb
        big = layer_table(parent(level), precision, loader_batch, input_shape, backend)
        batch_ci = rec.batch_latency.ci95 if rec is not None else math.nan
        summaries["recommended_batch"] = placed_summary(big, chosen.metrics.batch_latency_ms, batch_ci, kernel, machine)
    return summaries, layers


def analyse_hardware(
    out: Path,
    hardware: HardwareSettings,
    measure: MeasureSettings,
    parent: Callable[[float], Parent],
    input_shape: tuple[int, ...],
    baseline: VariantResult,
    selection: Selection,
    assessed: Sequence[Assessment],
) -> tuple[HardwareAnalysis, pd.DataFrame]:
    """Stage: roofline analysis of the baseline, the chosen variant and every measured variant, each against the
    roofs it runs under; writes the hardware artifacts.

    A variant faster than its roofline (even at the slow end of its latency CI) makes the stage measure the
    roofs once more (once per host: the cached calibration records it, so a re-run keeps the same roofs and
    reuses its deployment results); what still exceeds is flagged (``roof_exceeded`` with its cause) and
    warned about.

    Returns:
        The analysis and the chosen variant's (else the baseline's) layer table with roofline columns.
    """
    machine = machine_calibration(out, measure.threads, hardware.memory_bandwidth_gbps, hardware.peak_compute_gmacs)
    summaries, layers = _summaries(measure.latency_batch_size, parent, input_shape, baseline, selection, machine)
    points = _roofline_points(assessed, parent, measure.latency_batch_size, input_shape, machine)
    if _any_exceeded(summaries, points) and machine.get("peak_source") == "measured" and not machine.get("remeasured"):
        machine = machine_calibration(
            out, measure.threads, hardware.memory_bandwidth_gbps, hardware.peak_compute_gmacs, remeasure=True
        )
        summaries, layers = _summaries(measure.latency_batch_size, parent, input_shape, baseline, selection, machine)
        points = _roofline_points(assessed, parent, measure.latency_batch_size, input_shape, machine)
    summaries["machine"] = machine
    chosen = selection.chosen
    frame = to_frame(assessed)
    ptable = precision_tradeoff_table(frame) if len(assessed) else pd.DataFrame()
    hw_summary = {
        **summaries["recommended" if chosen is not None else "baseline"],
        "bandwidth_source": machine["bandwidth_source"],
        "peak_source": machine["peak_source"],
        "peak_compute_gmacs_int8": machine.get("peak_compute_gmacs_int8"),
        "nominal_peak_gmacs": machine.get("nominal_peak_gmacs"),
    }
    save_hardware_artifacts(out, layers, ptable, hw_summary, points, machine)
    return HardwareAnalysis(summaries, machine, _exceeded_warnings(summaries, points)), layers


def _any_exceeded(summaries: dict[str, Any], points: pd.DataFrame) -> bool:
    return any(s.get("roof_exceeded") for s in summaries.values()) or bool(
        len(points) and points["roof_exceeded"].any()
    )


def _exceeded_warnings(summaries: dict[str, Any], points: pd.DataFrame) -> tuple[str, ...]:
    flagged = points[points["roof_exceeded"]] if len(points) else points
    out = [
        f"roofline: {r['backend']} {r['precision']} p{r['pruning_level']:g} is {r['roof_note']}"
        for _, r in flagged.iterrows()
    ]
    out += [
        f"roofline: {label} is {s['roof_note']}"
        for label, s in summaries.items()
        if isinstance(s, dict) and s.get("roof_exceeded")
    ]
    return tuple(out)
