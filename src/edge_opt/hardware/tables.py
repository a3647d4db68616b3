"""Hardware analysis tables: layer-wise MACs/bytes for any model of standard
layers, the host's measured roofline, precision trade-offs and their artifacts."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import FuncFormatter
from torch import nn

from ..core import atomic, cpu_model
from ..variants import onnx_node_stats
from .roofs import measure_roofs

__all__ = [
    "CALIBRATION_FILE",
    "HARDWARE_DPI",
    "LayerEstimate",
    "add_layer_roofline",
    "decade_axes",
    "estimate_layerwise_stats",
    "fuse_epilogues",
    "host_cache_dir",
    "machine_calibration",
    "measure_machine",
    "plot_roofline",
    "precision_tradeoff_table",
    "rebuild_hardware_plots",
    "save_hardware_artifacts",
    "summarize_hardware",
]

HARDWARE_DPI = 180  # the hardware outputs' documented resolution: 180 DPI, tight layout
CALIBRATION_VERSION = 5  # 2: roofs per precision and cache level; 3: copy sweep less call overhead; 4: ORT int8;
# 5: ORT 3×3 convolutions among the fp32 roof's sources


@dataclass(frozen=True)
class LayerEstimate:
    """Compute and memory estimate of one layer for one batch."""

    layer: str
    output_elements: int
    parameter_bytes: int
    activation_bytes: int
    macs: int
    input_bytes: int = 0
    layer_type: str = ""


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_SUPPORTED = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Softmax,
)


def _quantized_kind(m: nn.Module) -> str | None:
    mod = type(m).__module__
    if not mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
        return None
    name = type(m).__name__
    if name.startswith("Conv"):
        return "conv"
    if name.startswith("Linear") and name != "LinearPackedParams":
        return "linear"
    return None


def _tensor_bytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _param_bytes(m: Any) -> int:
    kind = _quantized_kind(m)
    if kind is not None:  # torch.ao quantized modules expose weight() / bias() methods
        w = m.weight()
        b = m.bias() if callable(getattr(m, "bias", None)) else None
        return _tensor_bytes(w) + _tensor_bytes(b)
    return sum(_tensor_bytes(p) for p in m.parameters(recurse=False)) + sum(
        _tensor_bytes(b) for b in m.buffers(recurse=False) if b.is_floating_point()
    )


def _macs(m: Any, out: torch.Tensor) -> int:
    kind = _quantized_kind(m)
    if isinstance(m, _CONV) or kind == "conv":
        k = int(np.prod(m.kernel_size))
        return int(out.numel() * (m.in_channels // m.groups) * k)
    if isinstance(m, nn.Linear) or kind == "linear":
        in_features = m.in_features if hasattr(m, "in_features") else m.weight().shape[1]
        return int(out.numel() * in_features)
    return 0


_LAYER_COLUMNS = [
    "layer",
    "output_elements",
    "parameter_bytes",
    "activation_bytes",
    "macs",
    "input_bytes",
    "layer_type",
]


def _supported_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named sub-modules the estimate hooks (standard and torch.ao quantized layers).

    Raises:
        ValueError: the model has none.
    """
    targets = [
        (n, m) for n, m in model.named_modules() if n and (isinstance(m, _SUPPORTED) or _quantized_kind(m) is not None)
    ]
    if not targets:
        raise ValueError(
            f"The model {type(model).__name__} has no supported layer "
            f"(Conv, Linear, pooling, normalisation, activation); cannot estimate layer statistics."
        )
    return targets


def _layer_estimate(
    label: str, mod: nn.Module, inp: torch.Tensor | None, out: torch.Tensor, activation_bytes_per_value: float | None
) -> LayerEstimate:
    """The estimate of one layer call from its input and output (bytes per value: the given one, else the dtype's)."""
    per_value = activation_bytes_per_value if activation_bytes_per_value is not None else out.element_size()
    in_per_value = (
        activation_bytes_per_value
        if activation_bytes_per_value is not None
        else (inp.element_size() if inp is not None else 0)
    )
    return LayerEstimate(
        layer=label,
        output_elements=int(out.numel()),
        parameter_bytes=_param_bytes(mod),
        activation_bytes=int(round(out.numel() * per_value)),
        macs=_macs(mod, out),
        input_bytes=int(round(inp.numel() * in_per_value)) if inp is not None else 0,
        layer_type=type(mod).__name__,
    )


def estimate_layerwise_stats(
    model: nn.Module | str | os.PathLike[str],
    batch_size: int,
    input_shape: Sequence[int] = (1, 28, 28),
    activation_bytes_per_value: float | None = None,
) -> pd.DataFrame:
    """Per-layer output elements, parameter bytes, activation bytes and MACs: from forward hooks for a PyTorch
    model, from ONNX shape inference for an ONNX file (``edge_opt.variants.onnx_node_stats``).

    Works for any model of standard layers (Conv1d/2d incl. depthwise/grouped, Linear, pooling,
    normalisation, activations, and torch.ao quantized conv/linear). Parameter bytes use the real
    dtype sizes (fp16 = 2, int8 = 1). MACs count conv and linear products (what
    ``torch.utils.flop_counter`` counts as FLOPs / 2). An ONNX file's rows are its Conv/ConvTranspose/Gemm/MatMul,
    pooling, normalisation, activation and element-wise arithmetic nodes (``layer_type`` = the ONNX operator;
    a MAC node is named by its weight, minus ``.weight``, else by the node): their MACs total the same as the
    PyTorch original's; input bytes count every non-constant input.

    Args:
        model: the network, or the path of an ``.onnx`` file (weights in initializers, external data or
            ``Constant`` nodes; dynamic dimensions are fixed at ``(batch_size, *input_shape)``).
        batch_size: batch the estimate is for.
        input_shape: one sample's shape, e.g. (C, H, W).
        activation_bytes_per_value: bytes per activation value; None = the output tensor's dtype size.
    Returns:
        DataFrame with columns layer, output_elements, parameter_bytes, activation_bytes, macs,
        input_bytes, layer_type (one row per layer call, in execution order).
    Raises:
        ValueError: the model has no supported layer, or a bad batch size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be a positive integer. Got {batch_size!r} instead.")
    if isinstance(model, (str, os.PathLike)):
        return _onnx_layerwise_stats(Path(model), batch_size, input_shape, activation_bytes_per_value)
    targets = _supported_layers(model)
    rows: list[LayerEstimate] = []
    seen: dict[str, int] = {}

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            if not isinstance(out, torch.Tensor):
                return
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name}#{seen[name]}"
            rows.append(_layer_estimate(label, mod, inp, out, activation_bytes_per_value))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in targets]
    try:
        params = [p for p in model.parameters() if p.is_floating_point()]
        dtype = params[0].dtype if params else torch.float32
        x = torch.zeros((batch_size, *input_shape), dtype=dtype)
        with torch.inference_mode():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return pd.DataFrame([asdict(r) for r in rows], columns=_LAYER_COLUMNS)


def _onnx_layerwise_stats(
    path: Path, batch_size: int, input_shape: Sequence[int], activation_bytes_per_value: float | None
) -> pd.DataFrame:
    """``estimate_layerwise_stats`` of an ONNX file: one row per table node (see ``onnx_node_stats``)."""
    nodes = onnx_node_stats(path, (batch_size, *input_shape))
    if not nodes:
        raise ValueError(
            f"The ONNX model {str(path)!r} has no supported layer (Conv, Gemm, MatMul, pooling, normalisation, "
            "activation); cannot estimate layer statistics."
        )
    rows: list[LayerEstimate] = []
    seen: dict[str, int] = {}
    for n in nodes:
        name = n.weight.removesuffix(".weight") if n.weight is not None else n.node
        seen[name] = seen.get(name, 0) + 1
        per_value = activation_bytes_per_value
        rows.append(
            LayerEstimate(
                layer=name if seen[name] == 1 else f"{name}#{seen[name]}",
                output_elements=n.output_elements,
                parameter_bytes=n.parameter_bytes,
                activation_bytes=n.output_bytes if per_value is None else int(round(n.output_elements * per_value)),
                macs=n.macs,
                input_bytes=n.input_bytes if per_value is None else int(round(n.input_elements * per_value)),
                layer_type=n.op_type,
            )
        )
    return pd.DataFrame([asdict(r) for r in rows], columns=_LAYER_COLUMNS)


# --- machine calibration ------------------------------------------------------------------

CALIBRATION_FILE = "machine_calibration.json"


def measure_machine(
    threads: int = 1, gemm_n: int = 2048, copy_mb: int = 128, min_run_time: float = 0.1
) -> dict[str, Any]:
    """Measure this host's roofs (``edge_opt.hardware.roofs.measure_roofs``) in the calibration's record.

    Peak: the best fp32 rate (``torch.matmul`` over several large shapes, ONNX Runtime's MatMul and 3×3 Conv);
    int8: the best of ``torch._int_mm`` and ONNX Runtime's MatMulInteger; bandwidth: the DRAM copy (read +
    write); plus the per-precision compute roofs, the per-cache-level memory roofs and the CPU's nominal peak.
    ``gemm_n`` and ``copy_mb`` are kept for callers of earlier releases (the shapes and working sets are now
    fixed sweeps).

    Returns:
        dict with peak_compute_gmacs, peak_compute_gmacs_int8 (None if unavailable),
        memory_bandwidth_gbps, compute_roofs_gmacs, memory_roofs, nominal_peak_gmacs, threads, how each
        was measured, host identity.
    """
    roofs = measure_roofs(threads, min_run_time=min_run_time)
    compute = roofs["compute_roofs_gmacs"]
    dram = next(m for m in roofs["memory_roofs"] if m["level"] == "DRAM")
    return {
        **roofs,
        "peak_compute_gmacs": compute["fp32"],
        "peak_compute_gmacs_int8": compute.get("int8"),
        "memory_bandwidth_gbps": dram["gbps"],
        "calibration_version": CALIBRATION_VERSION,
        "threads": threads,
        "peak_method": "best of torch.matmul fp32 over several large shapes and ONNX Runtime's MatMul (median of "
        "blocked_autorange each)",
        "int8_method": (
            "best of torch._int_mm over several large shapes and ONNX Runtime's MatMulInteger (uint8 × int8)"
        )
        if compute.get("int8")
        else "not available",
        "bandwidth_method": f"tensor copy of {dram['working_set_bytes'] // 1_000_000} MB (read + write)",
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def host_cache_dir() -> Path | None:
    """Where per-host measurements (the machine's roofs) are kept across studies: ``$EDGE_OPT_CACHE_DIR``
    (empty: no host cache), else ``$XDG_CACHE_HOME/edge_opt`` or ``~/.cache/edge_opt``."""
    env = os.environ.get("EDGE_OPT_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge_opt"


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _usable(doc: dict[str, Any]) -> bool:
    """A stored calibration holds the figures a study reads: positive fp32 peak and DRAM bandwidth, optional
    int8 peak, compute roofs by precision, memory roofs each with a level and a positive bandwidth."""
    compute, memory = doc.get("compute_roofs_gmacs", {}), doc.get("memory_roofs", [])
    return (
        _positive(doc.get("peak_compute_gmacs"))
        and _positive(doc.get("memory_bandwidth_gbps"))
        and (doc.get("peak_compute_gmacs_int8") is None or _positive(doc.get("peak_compute_gmacs_int8")))
        and isinstance(compute, dict)
        and all(v is None or _positive(v) for v in compute.values())
        and isinstance(memory, list)
        and all(
            isinstance(m, dict)
            and isinstance(m.get("level"), str)
            and _positive(m.get("gbps"))
            and (m.get("size_bytes") is None or _positive(m.get("size_bytes")))
            for m in memory
        )
    )


def _read_calibration(path: Path | None, ident: dict[str, Any]) -> dict[str, Any] | None:
    """The stored calibration of this host, or None when absent, of another host/version, or damaged (it is then
    measured again and rewritten)."""
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(doc, dict) and all(doc.get(k) == v for k, v in ident.items()) and _usable(doc)
    return doc if ok else None


def _keep_for_host(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        atomic.write_json(path, doc)
    except OSError:  # an unwritable cache only costs a later study the measurement
        pass


def machine_calibration(
    output_dir: str | Path,
    threads: int = 1,
    memory_bandwidth_gbps: float | None = None,
    peak_compute_gmacs: float | None = None,
    remeasure: bool = False,
) -> dict[str, Any]:
    """Measured machine figures, cached per host (``host_cache_dir()``, copied into ``output_dir``); configured
    values override (both given: nothing is measured). ``remeasure`` measures again unless the host's figures
    already are a re-measurement (a variant beat its roof: measure once more, once per host).

    Returns:
        dict with memory_bandwidth_gbps, peak_compute_gmacs, peak_compute_gmacs_int8 and
        ``bandwidth_source`` / ``peak_source`` = "measured" or "configured".
    """
    if memory_bandwidth_gbps and peak_compute_gmacs:  # both roofs given: nothing to measure
        return {
            "memory_bandwidth_gbps": float(memory_bandwidth_gbps),
            "peak_compute_gmacs": float(peak_compute_gmacs),
            "peak_compute_gmacs_int8": None,
            "bandwidth_source": "configured",
            "peak_source": "configured",
            "threads": threads,
        }
    path = Path(output_dir) / CALIBRATION_FILE
    ident = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "threads": threads,
        "torch": torch.__version__,
        "calibration_version": CALIBRATION_VERSION,
    }
    cache_dir = host_cache_dir()
    host_path = cache_dir / f"machine_calibration-{threads}t.json" if cache_dir is not None else None
    local, host = _read_calibration(path, ident), _read_calibration(host_path, ident)
    cached = max((d for d in (local, host) if d is not None), key=lambda d: bool(d.get("remeasured")), default=None)
    if cached is None or (remeasure and not cached.get("remeasured")):
        cached = {**measure_machine(threads), "remeasured": remeasure}  # re-measured once per host, not per run
        _keep_for_host(host_path, cached)
    if cached != local:
        atomic.write_json(path, cached)
    return _with_overrides(cached, memory_bandwidth_gbps, peak_compute_gmacs)


def _with_overrides(
    cached: dict[str, Any], memory_bandwidth_gbps: float | None, peak_compute_gmacs: float | None
) -> dict[str, Any]:
    out = dict(cached)
    out["bandwidth_source"] = "configured" if memory_bandwidth_gbps else "measured"
    out["peak_source"] = "configured" if peak_compute_gmacs else "measured"
    if memory_bandwidth_gbps:
        out["memory_bandwidth_gbps"] = float(memory_bandwidth_gbps)
    if peak_compute_gmacs:
        out["peak_compute_gmacs"] = float(peak_compute_gmacs)
    return out


# --- roofline -----------------------------------------------------------------------------


_EPILOGUES = {
    "ReLU",
    "ReLU6",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "LeakyReLU",
    "Hardswish",
    "BatchNorm1d",
    "BatchNorm2d",
    # the same layers as ONNX operators (an ONNX model's layer table)
    "Relu",
    "Clip",
    "Gelu",
    "LeakyRelu",
    "HardSwish",
    "BatchNormalization",
}


def fuse_epilogues(layerwise_df: pd.DataFrame) -> pd.DataFrame:
    """The layer table as a fusing runtime runs it: an activation or batch norm right after a convolution/linear
    layer (or after another fused one) runs in that layer's kernel, so it moves no bytes (``fused`` = True)."""
    df = layerwise_df.copy()
    fused, prev = [], None
    for kind in df["layer_type"]:
        fused.append(kind in _EPILOGUES and prev is not None)
        prev = kind if (kind in _EPILOGUES and prev is not None) or _producer(kind) else None
    df["fused"] = fused
    for col in ("parameter_bytes", "activation_bytes", "input_bytes"):
        if col in df:
            df.loc[df["fused"], col] = 0
    return df


def _producer(kind: str) -> bool:
    return "Conv" in kind or "Linear" in kind or kind in ("Gemm", "MatMul")


def add_layer_roofline(
    layerwise_df: pd.DataFrame, memory_bandwidth_gbps: float, peak_compute_gmacs: float
) -> pd.DataFrame:
    """Per-layer bytes moved, arithmetic intensity (MAC/byte), regime and roofline time (ms)."""
    df = layerwise_df.copy()
    moved = df["parameter_bytes"] + df["activation_bytes"] + df.get("input_bytes", 0)
    df["bytes_moved"] = moved
    df["arithmetic_intensity"] = np.where(moved > 0, df["macs"] / moved.replace(0, np.nan), 0.0)
    knee = peak_compute_gmacs / memory_bandwidth_gbps
    df["bound_regime"] = np.where(df["arithmetic_intensity"] >= knee, "compute-bound", "memory-bound")
    df["compute_time_ms"] = df["macs"] / (peak_compute_gmacs * 1e9) * 1e3
    df["memory_time_ms"] = moved / (memory_bandwidth_gbps * 1e9) * 1e3
    df["roofline_time_ms"] = np.maximum(df["compute_time_ms"], df["memory_time_ms"])
    return df


def summarize_hardware(
    layerwise_df: pd.DataFrame, latency_ms: float, memory_bandwidth_gbps: float, peak_compute_gmacs: float | None = None
) -> dict[str, Any]:
    """Bandwidth and compute achieved by a measured latency, against the machine's roofline.

    Args:
        layerwise_df: from ``estimate_layerwise_stats`` (for the batch the latency was measured at).
        latency_ms: measured latency of that batch.
        memory_bandwidth_gbps: the machine's bandwidth (measured or configured).
        peak_compute_gmacs: the machine's peak MAC rate; None leaves the roofline keys NaN.
    Returns:
        The documented core keys (estimated_total_bytes, estimated_total_macs, achieved_bandwidth_gbps,
        configured_memory_bandwidth_gbps, bandwidth_utilization, achieved_gmacs) plus
        arithmetic_intensity, roofline_knee, bound_regime, attainable_latency_ms, roofline_efficiency,
        compute_bound_fraction (share of roofline time in compute-bound layers).
    """
    total_bytes = int(layerwise_df["parameter_bytes"].sum() + layerwise_df["activation_bytes"].sum())
    total_macs = int(layerwise_df["macs"].sum())
    secs = latency_ms / 1e3 if latency_ms and latency_ms > 0 else math.nan
    achieved_bw = total_bytes / secs / 1e9 if secs == secs else math.nan
    out: dict[str, Any] = {
        "estimated_total_bytes": total_bytes,
        "estimated_total_macs": total_macs,
        "achieved_bandwidth_gbps": achieved_bw,
        "configured_memory_bandwidth_gbps": float(memory_bandwidth_gbps),
        "bandwidth_utilization": achieved_bw / memory_bandwidth_gbps if memory_bandwidth_gbps else math.nan,
        "achieved_gmacs": total_macs / secs / 1e9 if secs == secs else math.nan,
        "arithmetic_intensity": total_macs / total_bytes if total_bytes else math.nan,
        "peak_compute_gmacs": float(peak_compute_gmacs) if peak_compute_gmacs else math.nan,
        "roofline_knee": math.nan,
        "bound_regime": None,
        "attainable_latency_ms": math.nan,
        "roofline_efficiency": math.nan,
        "compute_bound_fraction": math.nan,
        "latency_ms": float(latency_ms),
    }
    if peak_compute_gmacs:
        layers = add_layer_roofline(layerwise_df, memory_bandwidth_gbps, peak_compute_gmacs)
        attainable = float(layers["roofline_time_ms"].sum())
        knee = peak_compute_gmacs / memory_bandwidth_gbps
        compute_ms = float(layers.loc[layers["bound_regime"] == "compute-bound", "roofline_time_ms"].sum())
        out.update(
            {
                "roofline_knee": knee,
                "bound_regime": "compute-bound" if out["arithmetic_intensity"] >= knee else "memory-bound",
                "attainable_latency_ms": attainable,
                "roofline_efficiency": attainable / latency_ms if latency_ms > 0 else math.nan,
                "compute_bound_fraction": compute_ms / attainable if attainable > 0 else math.nan,
            }
        )
    return out


def precision_tradeoff_table(sweep_df: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy, latency, memory and energy per precision (per backend too when there are several).

    Rows with an ``error`` are left out of the means but count as not accepted in ``accepted_ratio``.

    Returns:
        Columns [backend,] precision, accuracy_mean, latency_ms_mean, memory_mb_mean,
        energy_proxy_j_mean, accepted_ratio; sorted by latency_ms_mean ascending; clean index.
    """
    df = sweep_df.copy()
    keys = ["precision"]
    if "backend" in df.columns and df["backend"].nunique() > 1:
        keys = ["backend", "precision"]
    ok = df[df["error"].isna()] if "error" in df.columns else df
    means = ok.groupby(keys, sort=False)[["accuracy", "latency_ms", "memory_mb", "energy_proxy_j"]].mean()
    means.columns = [f"{c}_mean" for c in means.columns]
    ratio = df.groupby(keys, sort=False)["accepted"].apply(lambda s: float(s.fillna(False).astype(bool).mean()))
    out = means.join(ratio.rename("accepted_ratio"), how="right").reset_index()
    out = out.sort_values("latency_ms_mean", kind="mergesort", na_position="last").reset_index(drop=True)
    return out[[*keys, "accuracy_mean", "latency_ms_mean", "memory_mb_mean", "energy_proxy_j_mean", "accepted_ratio"]]


def _draw_ceilings(ax: Any, xs: np.ndarray, ceilings: Mapping[str, Any], fp32: float, int8: float | None) -> None:
    top = max([fp32, *(v for v in ceilings.get("compute", {}).values() if v)])
    for name, gmacs in ceilings.get("compute", {}).items():
        if name != "int8" or not int8:
            ax.axhline(gmacs, color="tab:purple", ls="--", lw=0.8)
            ax.annotate(f"{name} {gmacs:.0f}", (xs[0], gmacs), fontsize=6, color="tab:purple", va="bottom")
    for level, gbps in ceilings.get("memory", []):
        ax.plot(xs, np.minimum(top, xs * gbps), color="tab:brown", ls="-.", lw=0.8)
        knee = top / gbps
        ax.annotate(
            f"{level} {gbps:.0f} GB/s",
            (max(xs[0], knee / 30), knee / 30 * gbps),
            fontsize=6,
            color="tab:brown",
            rotation=30,
        )


def _bar(path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) + 2), 4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=HARDWARE_DPI, format="png", bbox_inches="tight"))
    plt.close(fig)


def decade_axes(ax: Any, which: str) -> None:
    """Log axes ticked and labelled at whole decades in plain numbers (0.1, 1, 10), their limits widened to whole
    decades so at least two are labelled; no minor ticks (the default scientific labels are typeset by mathtext
    and minor ticks on log axes cost more to draw than the rest of a plot)."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        low, high = ax.get_xlim() if name == "x" else ax.get_ylim()
        if low > 0 and high > low:
            lims = (10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)))
            (ax.set_xlim if name == "x" else ax.set_ylim)(*lims)
        axis.set_major_formatter(plain)
    ax.minorticks_off()


def _scatter_points(ax: Any, ok: pd.DataFrame, colors: Mapping[str, str], markers: Mapping[str, str]) -> None:
    """One scatter per (backend, precision), the points that beat their roof ringed in red, each labelled by
    its pruning level."""
    if not len(ok):
        return
    frame = ok.assign(
        backend=ok.get("backend", pd.Series("", index=ok.index)).astype(str),
        precision=ok.get("precision", pd.Series("", index=ok.index)).astype(str),
    )
    for (backend, prec), grp in frame.groupby(["backend", "precision"], sort=False):
        flagged = (
            grp["roof_exceeded"].fillna(False).astype(bool)
            if "roof_exceeded" in grp
            else pd.Series(False, index=grp.index)
        )
        ax.scatter(
            grp["arithmetic_intensity"].astype(float),
            grp["achieved_gmacs"].astype(float),
            s=36,
            c=colors.get(prec, "tab:grey"),
            marker=markers.get(backend, "D"),
            edgecolors=["red" if f else "k" for f in flagged],
            linewidths=[1.5 if f else 0.4 for f in flagged],
            label=f"{backend} {prec}",
        )
        if "pruning_level" not in grp:
            continue
        for x, y, level in zip(grp["arithmetic_intensity"], grp["achieved_gmacs"], grp["pruning_level"], strict=True):
            if level == level:
                ax.annotate(f"p{float(level):g}", (x, y), fontsize=6, textcoords="offset points", xytext=(3, 2))


def plot_roofline(
    path: str | Path,
    peak_compute_gmacs: float,
    memory_bandwidth_gbps: float,
    points: pd.DataFrame,
    peak_int8_gmacs: float | None = None,
    ceilings: Mapping[str, Any] | None = None,
) -> Path:
    """The machine's roof (fp32 × DRAM, and int8 when measured), every other measured ceiling (``ceilings``:
    ``compute`` {precision: GMAC/s}, ``memory`` [(cache level, GB/s)]) and each variant at (arithmetic
    intensity, achieved GMAC/s); variants that beat their roof are ringed in red.

    ``points`` columns: arithmetic_intensity, achieved_gmacs and optionally backend, precision, pruning_level,
    roof_exceeded.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    knee = peak_compute_gmacs / memory_bandwidth_gbps
    ok = (
        points[np.isfinite(points["arithmetic_intensity"].astype(float)) & (points["achieved_gmacs"].astype(float) > 0)]
        if len(points)
        else points
    )
    xs_pts = ok["arithmetic_intensity"].astype(float) if len(ok) else pd.Series([knee])
    lo, hi = min(xs_pts.min(), knee) / 10, max(xs_pts.max(), knee) * 10
    xs = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.plot(xs, np.minimum(peak_compute_gmacs, xs * memory_bandwidth_gbps), "k-", lw=2, label="fp32 roof (measured)")
    if peak_int8_gmacs:
        ax.plot(xs, np.minimum(peak_int8_gmacs, xs * memory_bandwidth_gbps), "k--", lw=1, label="int8 roof (measured)")
    _draw_ceilings(ax, xs, ceilings or {}, peak_compute_gmacs, peak_int8_gmacs)
    ax.axvline(knee, color="grey", ls=":", lw=1)
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green", "bf16": "tab:red"}
    markers = {"torch": "o", "onnxruntime": "s", "torch_channels_last": "^", "openvino": "P", "executorch": "X"}
    _scatter_points(ax, ok, colors, markers)
    ax.set_xscale("log")
    ax.set_yscale("log")
    decade_axes(ax, "xy")
    ax.set_xlabel("arithmetic intensity (MAC / byte)")
    ax.set_ylabel("GMAC/s")
    ax.set_title(f"roofline: fp32 peak {peak_compute_gmacs:.1f} GMAC/s, {memory_bandwidth_gbps:.1f} GB/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=HARDWARE_DPI, format="png", bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def _write_tables(
    out: Path, layers: pd.DataFrame, precision_df: pd.DataFrame, summary: Mapping[str, Any]
) -> dict[str, Path]:
    """layerwise_breakdown.csv, precision_tradeoffs.csv and hardware_summary.csv (the summary's scalar entries)."""
    return {
        "layerwise_breakdown": atomic.write_with(
            out / "layerwise_breakdown.csv", lambda t: layers.to_csv(t, index=False, encoding="utf-8")
        ),
        "precision_tradeoffs": atomic.write_with(
            out / "precision_tradeoffs.csv", lambda t: precision_df.to_csv(t, index=False, encoding="utf-8")
        ),
        "hardware_summary": atomic.write_with(
            out / "hardware_summary.csv",
            lambda t: pd.DataFrame([{k: v for k, v in summary.items() if not isinstance(v, (dict, list))}]).to_csv(
                t, index=False, encoding="utf-8"
            ),
        ),
    }


def _layer_bar_charts(out: Path, layers: pd.DataFrame) -> dict[str, Path]:
    """layerwise_activation_memory.png and layerwise_macs.png: one bar per layer call."""
    _bar(
        out / "layerwise_activation_memory.png",
        list(layers["layer"]),
        list(layers["activation_bytes"] / 1e3),
        "activation memory (kB)",
        "activation memory per layer",
    )
    _bar(out / "layerwise_macs.png", list(layers["layer"]), list(layers["macs"] / 1e6), "MMACs", "MACs per layer")
    return {
        "layerwise_activation_memory": out / "layerwise_activation_memory.png",
        "layerwise_macs": out / "layerwise_macs.png",
    }


def save_hardware_artifacts(
    output_dir: str | Path,
    layerwise_df: pd.DataFrame,
    precision_df: pd.DataFrame,
    summary: Mapping[str, Any],
    roofline_points: pd.DataFrame | None = None,
    machine: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write layerwise_breakdown.csv, precision_tradeoffs.csv, hardware_summary.csv,
    layerwise_activation_memory.png, layerwise_macs.png (180 DPI, tight layout, UTF-8), and
    roofline.png when the summary has a peak and a bandwidth.

    Args:
        output_dir: folder (created if missing).
        layerwise_df: from ``estimate_layerwise_stats`` (roofline columns added when known).
        precision_df: from ``precision_tradeoff_table``.
        summary: from ``summarize_hardware``.
        roofline_points: optional rows with label, arithmetic_intensity, achieved_gmacs (one per variant).
    Returns:
        Name → path of each file written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bw = summary.get("configured_memory_bandwidth_gbps")
    peak = summary.get("peak_compute_gmacs")
    layers = layerwise_df
    if bw and peak and peak == peak and "bound_regime" not in layers.columns:
        layers = add_layer_roofline(layerwise_df, bw, peak)
    paths = _write_tables(out, layers, precision_df, summary)
    paths.update(_layer_bar_charts(out, layers))
    if roofline_points is not None:
        paths["roofline_points"] = atomic.write_with(
            out / "roofline_points.csv", lambda t: roofline_points.to_csv(t, index=False, encoding="utf-8")
        )
    if bw and peak and peak == peak:
        fp32, dram = (machine["peak_compute_gmacs"], machine["memory_bandwidth_gbps"]) if machine else (peak, bw)
        paths["roofline"] = plot_roofline(
            out / "roofline.png",
            fp32,
            dram,
            roofline_points if roofline_points is not None else pd.DataFrame(),
            summary.get("peak_compute_gmacs_int8"),
            ceilings=_ceilings(machine),
        )
    return paths


def _ceilings(machine: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every measured roof of the machine: compute per precision, memory per cache level."""
    if not machine:
        return {}
    compute = {k: v for k, v in (machine.get("compute_roofs_gmacs") or {}).items() if v and k != "fp32"}
    memory = [(m["level"], m["gbps"]) for m in machine.get("memory_roofs") or [] if m["level"] != "DRAM"]
    return {"compute": compute, "memory": memory}


def rebuild_hardware_plots(output_dir: str | Path) -> list[Path]:
    """Redraw the layer bar charts and the roofline from the stored CSVs (no model is run)."""
    out = Path(output_dir)
    written: list[Path] = []
    if (out / "layerwise_breakdown.csv").exists():
        layers = pd.read_csv(out / "layerwise_breakdown.csv")
        _bar(
            out / "layerwise_activation_memory.png",
            list(layers["layer"].astype(str)),
            list(layers["activation_bytes"] / 1e3),
            "activation memory (kB)",
            "activation memory per layer",
        )
        _bar(
            out / "layerwise_macs.png",
            list(layers["layer"].astype(str)),
            list(layers["macs"] / 1e6),
            "MMACs",
            "MACs per layer",
        )
        written += [out / "layerwise_activation_memory.png", out / "layerwise_macs.png"]
    if (out / "hardware_summary.csv").exists():
        summary = pd.read_csv(out / "hardware_summary.csv").iloc[0].to_dict()
        bw, peak = summary.get("configured_memory_bandwidth_gbps"), summary.get("peak_compute_gmacs")
        points = pd.read_csv(out / "roofline_points.csv") if (out / "roofline_points.csv").exists() else pd.DataFrame()
        int8 = summary.get("peak_compute_gmacs_int8")
        if bw and peak and peak == peak:
            written.append(
                plot_roofline(
                    out / "roofline.png", float(peak), float(bw), points, float(int8) if int8 == int8 and int8 else None
                )
            )
    return written
