"""ONNX Runtime backend (CPU execution provider) on the parent's exported graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..core import sample_shapes
from .base import BuildContext, Variant
from .layers import LayerInfo, onnx_layers
from .onnx_tools import exporter_label, fp32_onnx_path, onnx_variant
from .precisions import get_precision
from .recovery import recovered_parent
from .registry import register_backend

__all__ = ["build_onnx_file", "onnxruntime_backend", "parent_onnx_layers"]


def build_onnx_file(
    model: nn.Module | None, precision: str, ctx: BuildContext, backend: str = "onnxruntime"
) -> tuple[Path, dict[str, Any]]:
    """Write the ONNX graph for ``precision`` (the precision's ``onnx`` hook on the parent's fp32 export)."""
    hook = get_precision(precision).hook("onnx", backend)
    if get_precision(precision).quantized:
        model, ctx, _ = recovered_parent(model, ctx, precision, "onnx")
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_onnx_path(model, ctx)
    path, meta = hook(fp32, ctx)
    users_file = bool(ctx.cache.get(("onnx_input", ctx.parent_key)))  # an ONNX input: no torch export ran
    return path, {"exporter": None if users_file else exporter_label(ctx.onnx_exporter), "dynamic_batch": True, **meta}


@register_backend("onnxruntime", kind="onnx")
def onnxruntime_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """ONNX Runtime (CPU execution provider) on the parent's exported graph."""
    path, meta = build_onnx_file(model, precision, ctx)
    layers = parent_onnx_layers(model, ctx) if get_precision(precision).quantized else None
    return onnx_variant(
        path, precision, ctx.threads, meta, layers=layers, must_be_float=meta.get("requested_float_layers", ())
    )


def parent_onnx_layers(model: nn.Module | None, ctx: BuildContext) -> list[LayerInfo]:
    """The quantizable layers of the parent's fp32 ONNX graph at the study's sample shape (memoised per parent)."""
    key = ("onnx_layers", ctx.parent_key)
    if key not in ctx.cache:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ctx.cache[key] = onnx_layers(fp32_onnx_path(model, ctx), sample_shapes(ctx.example_input))
    return list(ctx.cache[key])
