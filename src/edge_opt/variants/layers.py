"""Quantizable layers (Conv, Linear/Gemm/MatMul) of a model and what each really runs in.

A layer is named by its PyTorch module name, which the ONNX export (either exporter, no constant folding) keeps in
the weight's initializer name (``conv1.weight``), so one name means the same layer on every backend. After a build,
``torch_layer_precisions`` / ``ort_layer_precisions`` read, per layer, what the built module or ORT's
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
_ORT_FLOAT = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "NchwcConv"})


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer: its name, kind, MACs per sample, parameters, and its ONNX node (when known)."""

    name: str
    kind: str
    macs: int
    params: int
    node: str | None = None


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


def onnx_layers(path: str | Path) -> list[LayerInfo]:
    """Conv / Gemm / MatMul nodes with a weight initializer, named by that weight (minus ``.weight``), with
    MACs per sample from ONNX shape inference."""
    import numpy as np
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    shapes = {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in [*g.value_info, *g.output, *g.input]
    }
    out = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        per_out = int(np.prod(shapes.get(n.output[0], (1,))[1:] or (1,))) or 1
        fan_in = int(np.prod(w[1:])) if n.op_type == "Conv" else int(w[1] if n.op_type == "Gemm" else w[0])
        out.append(LayerInfo(n.input[1].removesuffix(".weight"), n.op_type, per_out * fan_in, int(np.prod(w)), n.name))
    return out


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
    """Per layer, from ORT's optimised graph: a quantized op reading ``<weight>_quantized`` is ``int8``; a float
    op reading the dequantized weight is ``fp32 (int8 QDQ emulated)``; a float op reading the float weight is
    ``fp32``."""
    reads: dict[str, str] = {}
    for n in nodes:
        for name in list(n.input)[:4]:
            if n.op_type in _ORT_QUANT and name.endswith("_quantized"):
                reads[name.removesuffix("_quantized")] = "int8"
            elif n.op_type in _ORT_FLOAT and name.endswith("_DequantizeLinear_Output"):
                reads.setdefault(name.removesuffix("_DequantizeLinear_Output"), "fp32 (int8 QDQ emulated)")
            elif n.op_type in _ORT_FLOAT:
                reads.setdefault(name, "fp32")
    return {layer.name: reads.get(f"{layer.name}.weight", reads.get(layer.name, "fp32")) for layer in layers}


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
