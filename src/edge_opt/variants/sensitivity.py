"""Per-layer int8 sensitivity and the ``int8_mixed`` precision that keeps the sensitive layers in float.

``layer_sensitivity`` quantizes each quantizable layer of a float parent alone (the rest stay float) and
records the accuracy drop against the float parent and the SQNR of the logits (dB, on the validation
split), on torch (a per-module qconfig) or ONNX Runtime (``nodes_to_quantize``). Results are memoised per
parent, backend and int8 options, and kept as JSON in ``ctx.sensitivity_dir`` so a resumed study reuses them.

``int8_mixed`` starts from full int8 and, while the drop against the float parent exceeds the study's
``max_accuracy_drop`` (with a study metric other than top1: the drop of that metric, in its direction, against
``max_metric_drop``), returns the most sensitive remaining layer to float; it stops when the budget holds, or
fails (an error row saying so) when more than ``max_float_mac_fraction`` of the MACs would be float.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import batch_len, batch_slice, class_scores, concat_outputs, output_arrays, sample_shapes
from .base import BuildContext, VariantBuildError
from .layers import LayerInfo, layer_report, onnx_layers, torch_layer_precisions, torch_layers
from .onnx_tools import ort_feed, ort_outputs
from .precisions import Precision, TorchBuild, int8_onnx_file, register_precision, torch_int8_calibration
from .quantize import convert_torch_int8

__all__ = ["LayerSensitivity", "SensitivityReport", "layer_sensitivity", "mixed_search", "sqnr_db"]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer quantized alone: its accuracy drop vs the float parent and the logits' SQNR (dB)."""

    layer: str
    kind: str
    macs: int
    params: int
    drop: float
    sqnr_db: float
    rank: int = 0


@dataclass(frozen=True)
class SensitivityReport:
    """All layers of one parent on one backend, most sensitive first (rank 1)."""

    backend: str
    parent_key: str
    float_accuracy: float
    layers: tuple[LayerSensitivity, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "parent_key": self.parent_key,
            "float_accuracy": self.float_accuracy,
            "layers": [asdict(x) for x in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityReport:
        return cls(
            d["backend"], d["parent_key"], float(d["float_accuracy"]), tuple(LayerSensitivity(**x) for x in d["layers"])
        )


def sqnr_db(reference: Any, test: Any) -> float:
    """Signal-to-quantization-noise ratio of ``test`` against ``reference`` in dB (inf when identical); outputs of
    several arrays (``core.batches``) are read as one, every float output's values in order."""
    reference, test = _flat(reference), _flat(test)
    noise = float(np.sum((reference.astype(np.float64) - test) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)


def _flat(out: Any) -> np.ndarray:
    """A variant's outputs (one array, or a tuple) as one flat float64 array."""
    arrays = output_arrays(out)
    return np.concatenate([a.astype(np.float64).ravel() for a in arrays]) if len(arrays) > 1 else arrays[0]


def _validation(ctx: BuildContext) -> tuple[torch.Tensor, np.ndarray]:
    if ctx.validation is None:
        raise VariantBuildError("per-layer sensitivity and int8_mixed need the validation split in the build context.")
    return ctx.validation[0], ctx.validation[1].numpy()


def _torch_logits(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([module(x[i : i + 256].float()).float().numpy() for i in range(0, len(x), 256)])


def _ort_logits(path: Path, x: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names, types = [i.name for i in sess.get_inputs()], [i.type for i in sess.get_inputs()]
    chunks = [
        ort_outputs(sess.run(None, ort_feed(names, types, batch_slice(x, i, i + 256))))
        for i in range(0, batch_len(x), 256)
    ]
    out = concat_outputs(chunks)
    return out[0] if len(out) == 1 else tuple(out)


def _budget_key(ctx: BuildContext) -> str:
    return "max_accuracy_drop" if ctx.metric is None else "max_metric_drop"


def _metric_tag(ctx: BuildContext) -> str:
    """The metric the drops were measured in, in the kept results' names (empty for top1: earlier names hold)."""
    if ctx.metric is None:
        return ""
    return "_m" + hashlib.sha256(ctx.metric_label.encode()).hexdigest()[:8]


def _options_hash(ctx: BuildContext) -> str:
    text = json.dumps(ctx.quantization.model_dump(exclude={"max_float_mac_fraction"}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _rank(backend: str, parent_key: str, float_acc: float, rows: list[LayerSensitivity]) -> SensitivityReport:
    ordered = sorted(rows, key=lambda r: (-round(r.drop, 9), r.sqnr_db))
    ranked = tuple(LayerSensitivity(**{**asdict(r), "rank": i + 1}) for i, r in enumerate(ordered))
    return SensitivityReport(backend, parent_key, float_acc, ranked)


def _quality(ctx: BuildContext, labels: np.ndarray) -> Callable[[np.ndarray], float]:
    """How good a variant's validation logits are, higher better: the study's metric (``ctx.metric``, negated when
    lower is better) when it is not top1, else top-1 accuracy against ``labels``. A drop is a difference of two."""
    metric = ctx.metric
    if metric is not None:
        sign = 1.0 if ctx.metric_higher_is_better else -1.0
        return lambda logits: sign * float(metric(logits))
    return lambda logits: float((class_scores(output_arrays(logits)[0]).argmax(1) == labels).mean())  # (N, C, 1, 1) too


def _measure(
    layers: Sequence[LayerInfo],
    logits_of: Callable[[LayerInfo], np.ndarray],
    reference: np.ndarray,
    quality: Callable[[np.ndarray], float],
) -> tuple[float, list[LayerSensitivity]]:
    float_acc = quality(reference)
    rows = []
    for layer in layers:
        q = logits_of(layer)
        rows.append(
            LayerSensitivity(
                layer.name,
                layer.kind,
                layer.macs,
                layer.params,
                float_acc - quality(q),
                sqnr_db(reference, q),
            )
        )
    return float_acc, rows


def _torch_report(model: nn.Module, ctx: BuildContext) -> SensitivityReport:
    x, y = _validation(ctx)
    base = copy.deepcopy(model).float().eval()
    layers = torch_layers(base, x)
    calibrated = torch_int8_calibration(model, ctx)

    def logits_of(layer: LayerInfo) -> np.ndarray:
        return _torch_logits(convert_torch_int8(calibrated, only_layers=[layer.name]), x)

    float_acc, rows = _measure(layers, logits_of, _torch_logits(base, x), _quality(ctx, y))
    return _rank("torch", ctx.parent_key, float_acc, rows)


def _onnx_report(fp32: Path, ctx: BuildContext) -> SensitivityReport:
    x, y = _validation(ctx)
    layers = onnx_layers(fp32, sample_shapes(x))
    with tempfile.TemporaryDirectory() as tmp:

        def logits_of(layer: LayerInfo) -> np.ndarray:
            out = Path(tmp) / f"{hashlib.sha256(str(layer.node).encode()).hexdigest()[:16]}.onnx"  # names hold /
            int8_onnx_file(fp32, ctx, out, include=[str(layer.node)])
            return _ort_logits(out, x)

        float_acc, rows = _measure(layers, logits_of, _ort_logits(fp32, x), _quality(ctx, y))
    return _rank("onnxruntime", ctx.parent_key, float_acc, rows)


def layer_sensitivity(kind: str, source: nn.Module | Path, ctx: BuildContext) -> SensitivityReport:
    """Sensitivity of every quantizable layer of a parent (``kind``: "torch" with the module, "onnx" with its
    fp32 ONNX file), memoised in ``ctx.cache`` and in ``ctx.sensitivity_dir``."""
    backend = "torch" if kind == "torch" else "onnxruntime"
    key = ("sensitivity", backend, ctx.parent_key, _options_hash(ctx) + _metric_tag(ctx))
    if key in ctx.cache:
        cached: SensitivityReport = ctx.cache[key]
        return cached
    path = ctx.sensitivity_dir / f"{ctx.parent_key}_{backend}_{key[3]}.json" if ctx.sensitivity_dir else None
    if path is not None and path.is_file():
        report = SensitivityReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    else:
        report = _torch_report(source, ctx) if kind == "torch" else _onnx_report(Path(source), ctx)  # type: ignore[arg-type]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
            tmp.replace(path)
    ctx.cache[key] = report
    return report


def mixed_search(
    report: SensitivityReport,
    accuracy_with_float: Callable[[list[str]], float],
    max_drop: float,
    max_float_mac_fraction: float,
    budget_key: str = "max_accuracy_drop",
) -> tuple[list[str], list[dict[str, Any]]]:
    """Greedy: full int8, then return the most sensitive remaining layer to float until the drop against the
    float parent is within ``max_drop``.

    Returns:
        (the float layers, the search steps with their accuracy)
    Raises:
        VariantBuildError: the budget is not reachable within ``max_float_mac_fraction`` of the MACs in float.
    """
    total = sum(x.macs for x in report.layers) or 1
    ranked = [x.layer for x in sorted(report.layers, key=lambda r: r.rank)]
    macs = {x.layer: x.macs for x in report.layers}
    floats: list[str] = []
    steps: list[dict[str, Any]] = []
    while True:
        acc = accuracy_with_float(floats)
        steps.append({"float_layers": list(floats), "accuracy": acc, "drop": report.float_accuracy - acc})
        if report.float_accuracy - acc <= max_drop + 1e-12:
            return floats, steps
        nxt = next((name for name in ranked if name not in floats), None)
        share = (sum(macs[f] for f in floats) + (macs[nxt] if nxt else 0)) / total
        if nxt is None or share > max_float_mac_fraction:
            raise VariantBuildError(
                f"int8_mixed cannot meet {budget_key}={max_drop}: with {len(floats)} of {len(ranked)} layers in "
                f"float ({floats}) the drop is still {report.float_accuracy - acc:.4f}, and the next layer "
                f"({nxt}) would put {share:.0%} of the MACs in float (max_float_mac_fraction={max_float_mac_fraction})."
            )
        floats.append(nxt)


def _mixed_torch(model: nn.Module, ctx: BuildContext, channels_last: bool) -> TorchBuild:
    report = layer_sensitivity("torch", model, ctx)
    x, y = _validation(ctx)
    q = ctx.quantization
    base = copy.deepcopy(model).float().eval()
    calibrated = torch_int8_calibration(model, ctx)
    built: dict[tuple[str, ...], nn.Module] = {}

    quality = _quality(ctx, y)

    def accuracy(floats: list[str]) -> float:
        built[tuple(floats)] = convert_torch_int8(calibrated, float_layers=floats)
        return quality(_torch_logits(built[tuple(floats)], x))

    floats, steps = mixed_search(report, accuracy, ctx.max_accuracy_drop, ctx.max_float_mac_fraction, _budget_key(ctx))
    m = built[tuple(floats)]
    layers = torch_layers(base, x)
    meta = {
        "quantizer": "torch.ao.quantization FX (static PTQ), per-layer float fallback",
        "per_channel": q.channelwise,
        "quantization_backend": q.engine,
        "requested_float_layers": floats,
        "mixed_search": steps,
        "sensitivity_rank": [s.layer for s in report.layers],
        **layer_report(layers, torch_layer_precisions(m, layers), must_be_float=floats),
    }
    return TorchBuild(m, lambda t: t.float(), meta)


def _mixed_onnx(fp32: Path, ctx: BuildContext) -> tuple[Path, dict[str, Any]]:
    report = layer_sensitivity("onnx", fp32, ctx)
    x, y = _validation(ctx)
    nodes = {layer.name: str(layer.node) for layer in onnx_layers(fp32, sample_shapes(x))}
    files: dict[tuple[str, ...], tuple[Path, dict[str, Any]]] = {}
    quality = _quality(ctx, y)

    def accuracy(floats: list[str]) -> float:
        tag = hashlib.sha256(";".join(floats).encode()).hexdigest()[:8]
        out = ctx.workdir / f"{ctx.parent_key}_int8_mixed_{_options_hash(ctx)}_{tag}.onnx"
        files[tuple(floats)] = out, int8_onnx_file(fp32, ctx, out, exclude=[nodes[f] for f in floats])
        return quality(_ort_logits(out, x))

    floats, steps = mixed_search(report, accuracy, ctx.max_accuracy_drop, ctx.max_float_mac_fraction, _budget_key(ctx))
    path, built = files[tuple(floats)]
    meta = {
        **built,
        "quantizer": "onnxruntime.quantization.quantize_static, per-layer float fallback (nodes_to_exclude)",
        "requested_float_layers": floats,
        "mixed_search": steps,
        "sensitivity_rank": [s.layer for s in report.layers],
    }
    return path, meta


register_precision(
    Precision(
        "int8_mixed",
        1,
        "int8 with the most sensitive layers returned to float until the accuracy budget holds",
        "int8_mixed",
        quantized=True,
        searches=True,
        hooks={"torch": _mixed_torch, "onnx": _mixed_onnx},
    )
)
