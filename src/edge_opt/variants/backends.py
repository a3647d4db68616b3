"""Runtime backends behind one registry; each builds a ``Variant`` through the precision's hook.

A backend takes a (pruned) float model and a precision and returns a ``Variant``:
something that runs a batch and returns logits, and says what it is — backend,
requested precision, the precision its kernels really compute in, parameter
bytes, metadata. ``edge_opt.metrics.collect_metrics`` measures any variant the
same way. Register a new backend with ``@register_backend("name")``; precision
behaviour lives in ``edge_opt.variants.precisions``, not here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import Registry
from . import sensitivity as _sensitivity  # noqa: F401 — registers the int8_mixed precision
from .base import BuildContext, Replicas, Variant, VariantBuildError, state_dict_bytes, torch_kernel_precision
from .layers import LayerInfo, onnx_layers
from .onnx_tools import (
    export_onnx,
    exporter_label,
    fp32_onnx_path,
    onnx_initializer_bytes,
    onnx_variant,
    optimized_graph_ops,
)
from .precisions import PRECISIONS, PrecisionSpec, get_precision, list_precisions

__all__ = [
    "BACKENDS", "BACKEND_KINDS", "PRECISIONS", "BuildContext", "PrecisionSpec", "Variant", "VariantBuildError",
    "backend_supports", "build_onnx_file", "build_variant", "parent_onnx_layers", "export_onnx", "list_backends", "list_precisions", "module_runner", "onnx_initializer_bytes",
    "onnx_variant", "optimized_graph_ops", "register_backend", "state_dict_bytes", "torch_kernel_precision",
    "wrap_torch_module",
]

BackendBuilder = Callable[[nn.Module | None, str, BuildContext], Variant]
BACKENDS: Registry[BackendBuilder] = Registry("backend", "backends")
# Which precision hook a backend builds through ("torch" or "onnx"); a backend without one handles precisions itself.
BACKEND_KINDS: dict[str, str] = {}


def register_backend(name: str, kind: str | None = None) -> Callable[[BackendBuilder], BackendBuilder]:
    """Decorator: register a backend builder under ``name``; ``kind`` names the precision hook it uses."""
    def deco(fn: BackendBuilder) -> BackendBuilder:
        BACKENDS.register(name)(fn)
        if kind is not None:
            BACKEND_KINDS[name] = kind
        return fn

    return deco


def backend_supports(backend: str, precision: str) -> bool:
    """Whether ``precision`` has a build hook for ``backend`` (unknown for custom backends: True)."""
    kind = BACKEND_KINDS.get(backend)
    return kind is None or kind in get_precision(precision).hooks


def list_backends() -> list[str]:
    """Names of the registered backends."""
    return BACKENDS.names()


def build_variant(backend: str, model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """Build ``model`` at ``precision`` on ``backend``.

    Raises:
        UnknownNameError: unknown backend or precision. VariantBuildError: the build failed its checks.
    """
    get_precision(precision)
    return BACKENDS.get(backend)(model, precision, ctx)


def _torch_variant(model: nn.Module | None, precision: str, ctx: BuildContext, channels_last: bool,
                   name: str) -> Variant:
    if model is None:
        raise VariantBuildError(f"backend {name!r} needs a PyTorch model.")
    build = get_precision(precision).hook(BACKEND_KINDS[name], name)(model, ctx, channels_last)
    m = build.module
    meta = {"memory_format": "channels_last" if channels_last else "contiguous", **build.metadata}

    run = module_runner(m)
    return Variant(backend=name, precision=precision, kernel_precision=torch_kernel_precision(m),
                   parameter_bytes=state_dict_bytes(m), metadata=meta, prepare=build.prepare, run=run,
                   to_logits=lambda out: out.float().numpy(), module=m,
                   replicate=Replicas(run, lambda: module_runner(copy.deepcopy(m))))


def module_runner(m: nn.Module) -> Callable[[Any], torch.Tensor]:
    """``run`` of a torch module: one prepared batch under inference mode."""
    def run(x: Any) -> torch.Tensor:
        with torch.inference_mode():
            return m(x)

    return run


def wrap_torch_module(model: nn.Module, precision: str | None = None,
                      calibration: Sequence[torch.Tensor] = ()) -> Variant:
    """A ``Variant`` for a plain torch module, as it is when it already runs ``precision``.

    ``precision=None`` takes what the module computes in (int8 for a quantized module, fp16 for a
    ``.half()`` model, else fp32). A float module asked for another float precision is converted
    (a copy); asked for int8 it is quantized with ``calibration`` batches.

    Raises:
        ValueError: int8 requested for a float module without calibration batches.
    """
    kernel = torch_kernel_precision(model)
    known = kernel in PRECISIONS
    precision = precision or (kernel if known else "fp32")
    if kernel == "int8":
        precision = "int8"  # a quantized module runs (and is labelled) as what it is, whatever was asked
    if kernel == precision and precision != "fp32":
        dtype = get_precision(precision).torch_dtype or torch.float32

        run = module_runner(model)
        return Variant(backend="torch", precision=precision, kernel_precision=kernel,
                       parameter_bytes=state_dict_bytes(model), metadata={"wrapped": True},
                       prepare=lambda x: x.to(dtype), run=run, to_logits=lambda out: out.float().numpy(),
                       module=model, replicate=Replicas(run, lambda: module_runner(copy.deepcopy(model))))
    if get_precision(precision).quantized and not calibration:
        raise ValueError(f"The 'precision' parameter {precision!r} needs calibration batches for a float module "
                         "(or pass an already quantized module).")
    example = calibration[0] if calibration else torch.zeros(1)
    ctx = BuildContext(calibration=list(calibration), example_input=example, workdir=Path("."))
    return build_variant("torch", model, precision, ctx)


@register_backend("torch", kind="torch")
def torch_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """PyTorch eager, NCHW (contiguous) tensors."""
    return _torch_variant(model, precision, ctx, channels_last=False, name="torch")


@register_backend("torch_channels_last", kind="torch")
def torch_channels_last_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """PyTorch eager with ``channels_last`` memory format (NHWC kernels for conv/pool)."""
    return _torch_variant(model, precision, ctx, channels_last=True, name="torch_channels_last")


def build_onnx_file(model: nn.Module | None, precision: str, ctx: BuildContext,
                    backend: str = "onnxruntime") -> tuple[Path, dict[str, Any]]:
    """Write the ONNX graph for ``precision`` (the precision's ``onnx`` hook on the parent's fp32 export)."""
    hook = get_precision(precision).hook("onnx", backend)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    fp32 = fp32_onnx_path(model, ctx)
    path, meta = hook(fp32, ctx)
    return path, {"exporter": exporter_label(ctx.onnx_exporter), "dynamic_batch": True, **meta}


@register_backend("onnxruntime", kind="onnx")
def onnxruntime_backend(model: nn.Module | None, precision: str, ctx: BuildContext) -> Variant:
    """ONNX Runtime (CPU execution provider) on the parent's exported graph."""
    path, meta = build_onnx_file(model, precision, ctx)
    layers = parent_onnx_layers(model, ctx) if get_precision(precision).quantized else None
    return onnx_variant(path, precision, ctx.threads, meta, layers=layers,
                        must_be_float=meta.get("requested_float_layers", ()))


def parent_onnx_layers(model: nn.Module | None, ctx: BuildContext) -> list[LayerInfo]:
    """The quantizable layers of the parent's fp32 ONNX graph (memoised per parent)."""
    key = ("onnx_layers", ctx.parent_key)
    if key not in ctx.cache:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        ctx.cache[key] = onnx_layers(fp32_onnx_path(model, ctx))
    return list(ctx.cache[key])


# Runtimes of the optional extras register here (their libraries are imported only when a variant is built).
from . import executorch_backend as _executorch_backend  # noqa: E402, F401
from . import openvino_backend as _openvino_backend  # noqa: E402, F401
