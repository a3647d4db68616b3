"""Quantizable layers (Conv, Linear/Gemm/MatMul) of a model and what each really runs in.

A layer is named by its PyTorch module name, which the ONNX export (either exporter, no constant folding) keeps in
the weight's initializer name (``conv1.weight``), so one name means the same layer on every backend. An ONNX input
model's layers are named by their weight tensor as the graph keeps it (initializer, external data or ``Constant``
node output; ``onnx_layers``). After a build, ``torch_layer_precisions`` / ``ort_layer_precisions`` (and the
OpenVINO backend's ``openvino_layer_precisions``) read, per layer, what the built module or the runtime's
optimised graph computes in: ``int8`` (a quantized kernel), ``fp32`` or ``fp32 (int8 QDQ emulated)``
(a float kernel between quantize/dequantize pairs). ``coverage`` turns that into the float layers and
the int8 share of the MACs that every int8 row reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import VariantBuildError
from .onnx_graph import MAC_OPS, onnx_node_stats
from .quantize import is_quantized_module

__all__ = [
    "LayerInfo",
    "coverage",
    "layer_report",
    "onnx_layers",
    "ort_layer_precisions",
    "torch_layer_precisions",
    "torch_layers",
]

_ORT_QUANT = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
_QUANTIZED_SUFFIXES = ("_quantized", "_QuantizeLinear_Output")
_ORT_FLOAT = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "NchwcConv"})


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer: its name, kind, MACs per sample, parameters, and its ONNX node and weight tensor
    (when known)."""

    name: str
    kind: str
    macs: int
    params: int
    node: str | None = None
    weight: str | None = None


def torch_layers(model: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Conv and Linear modules of ``model`` in call order, with MACs per sample (forward hooks on ``example``)."""
    found: dict[str, LayerInfo] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):

            def hook(m: Any, args: Any, out: Any, name: str = name) -> None:
                if name in found or not isinstance(out, torch.Tensor):
                    return
                per = out[0].numel()
                fan_in = (
                    m.in_features
                    if isinstance(m, nn.Linear)
                    else (m.in_channels // m.groups * int(torch.tensor(m.kernel_size).prod()))
                )
                found[name] = LayerInfo(
                    name, type(m).__name__, int(per * fan_in), sum(p.numel() for p in m.parameters(recurse=False))
                )

            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(example[:1].float())
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def onnx_layers(path: str | Path, sample_shape: Sequence[Any] | None = None) -> list[LayerInfo]:
    """Conv / ConvTranspose / Gemm / MatMul nodes whose weight is a constant (initializer, external data or
    ``Constant`` node), named by that weight (minus ``.weight``), with MACs per sample from ONNX shape inference
    (``onnx_node_stats``) at one sample of ``sample_shape`` (C, H, W, or one per-sample shape per input for a
    model with several; None: the graph's own fixed dimensions).

    A weight read by several nodes (a shared layer) is one layer with the MACs of all of them.

    Raises:
        ValueError: ``sample_shape`` is None and the input has dynamic dimensions besides the batch, or the
            shapes cannot be inferred.
    """
    shape: tuple[Any, ...] = tuple(sample_shape) if sample_shape is not None else _fixed_sample_shape(path)
    several = bool(shape) and isinstance(shape[0], (tuple, list))
    full: Any = [(1, *s) for s in shape] if several else (1, *shape)
    found: dict[str, LayerInfo] = {}
    for n in onnx_node_stats(path, full):
        if n.op_type not in MAC_OPS or n.weight is None:
            continue
        name = n.weight.removesuffix(".weight")
        prior = found.get(name)
        macs = n.macs + (prior.macs if prior else 0)
        found[name] = LayerInfo(name, n.op_type, macs, n.params, prior.node if prior else n.node, n.weight)
    return list(found.values())


def _fixed_sample_shape(path: str | Path) -> tuple[int, ...]:
    """One sample's shape from the graph's first input (its batch dimension dropped); dynamic ones raise."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    first = next((i for i in g.input if i.name not in inits), None)
    dims = (
        [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in first.type.tensor_type.shape.dim]
        if first
        else []
    )
    if not dims or any(d is None for d in dims[1:]):
        raise ValueError(
            f"The ONNX model {str(path)!r} has dynamic input dimensions {dims}; give the sample shape (C, H, W)."
        )
    return tuple(int(d) for d in dims[1:] if d is not None)


def torch_layer_precisions(qmodel: nn.Module, layers: Sequence[LayerInfo]) -> dict[str, str]:
    """Per layer: ``int8`` when the built module at that name is a quantized kernel, else its float dtype."""
    mods = dict(qmodel.named_modules())
    out = {}
    for layer in layers:
        m = mods.get(layer.name)
        if m is not None and is_quantized_module(m):
            out[layer.name] = "int8"
        else:
            dtype = next((p.dtype for p in m.parameters()), torch.float32) if m is not None else torch.float32
            out[layer.name] = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")
    return out


def ort_layer_precisions(nodes: Sequence[Any], layers: Sequence[LayerInfo]) -> dict[str, str]:
    """Per layer, from ORT's optimised graph: a quantized op reading the quantized weight is ``int8``; a float op
    reading the dequantized weight is ``fp32 (int8 QDQ emulated)``; a float op reading the float weight is
    ``fp32``.

    The quantized weight is ``<weight>_quantized`` for an initializer and ``<weight>_QuantizeLinear_Output`` for a
    ``Constant``-node weight (ORT's quantizer treats it as an activation and ORT folds its QuantizeLinear into an
    initializer of that name); ``<weight>`` is the layer's weight tensor (``LayerInfo.weight``, else
    ``<name>.weight``)."""
    reads: dict[str, str] = {}
    for n in nodes:
        for name in list(n.input)[:4]:
            base = _strip(name, _QUANTIZED_SUFFIXES)
            if n.op_type in _ORT_QUANT and base is not None:
                reads[base] = "int8"
            elif n.op_type in _ORT_FLOAT and name.endswith("_DequantizeLinear_Output"):
                reads.setdefault(name.removesuffix("_DequantizeLinear_Output"), "fp32 (int8 QDQ emulated)")
            elif n.op_type in _ORT_FLOAT:
                reads.setdefault(name, "fp32")
    out = {}
    for layer in layers:
        weight = layer.weight or f"{layer.name}.weight"
        out[layer.name] = reads.get(weight, reads.get(layer.name, "fp32"))
    return out


def _strip(name: str, suffixes: Sequence[str]) -> str | None:
    return next((name.removesuffix(s) for s in suffixes if name.endswith(s)), None)


def coverage(layers: Sequence[LayerInfo], precisions: Mapping[str, str]) -> tuple[list[str], float]:
    """(layers that do not run int8, int8 share of the layers' MACs)."""
    total = sum(layer.macs for layer in layers) or 1
    int8 = sum(layer.macs for layer in layers if precisions.get(layer.name) == "int8")
    return [layer.name for layer in layers if precisions.get(layer.name) != "int8"], int8 / total


def layer_report(
    layers: Sequence[LayerInfo], precisions: dict[str, str], must_be_float: Sequence[str] = ()
) -> dict[str, Any]:
    """Per-layer precisions, float layers and int8 MAC share of a quantized build (checked against the
    layers that were asked to stay float)."""
    wrong = [name for name in must_be_float if precisions.get(name) == "int8"]
    if wrong:
        raise VariantBuildError(f"layers {wrong} were to stay float but run int8 kernels.")
    float_layers, fraction = coverage(layers, precisions)
    return {
        "layer_precisions": precisions,
        "float_layers": float_layers,
        "int8_mac_fraction": fraction,
        "layer_macs": {layer.name: layer.macs for layer in layers},
    }
