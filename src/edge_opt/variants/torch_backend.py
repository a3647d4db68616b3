"""PyTorch eager backends: NCHW (``torch``) and ``channels_last`` tensors, and a plain module as a ``Variant``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import BuildContext, Replicas, Variant, VariantBuildError, state_dict_bytes, torch_kernel_precision
from .precisions import PRECISIONS, get_precision
from .registry import BACKEND_KINDS, build_variant, register_backend

__all__ = ["module_runner", "torch_backend", "torch_channels_last_backend", "wrap_torch_module"]


def _torch_variant(
    model: nn.Module | None, precision: str, ctx: BuildContext, channels_last: bool, name: str
) -> Variant:
    if model is None:
        raise VariantBuildError(f"backend {name!r} needs a PyTorch model.")
    build = get_precision(precision).hook(BACKEND_KINDS[name], name)(model, ctx, channels_last)
    m = build.module
    meta = {"memory_format": "channels_last" if channels_last else "contiguous", **build.metadata}

    run = module_runner(m)
    return Variant(
        backend=name,
        precision=precision,
        kernel_precision=torch_kernel_precision(m),
        parameter_bytes=state_dict_bytes(m),
        metadata=meta,
        prepare=build.prepare,
        run=run,
        to_logits=lambda out: out.float().numpy(),
        module=m,
        replicate=Replicas(run, lambda: module_runner(copy.deepcopy(m))),
    )


def module_runner(m: nn.Module) -> Callable[[Any], torch.Tensor]:
    """``run`` of a torch module: one prepared batch under inference mode."""

    def run(x: Any) -> torch.Tensor:
        with torch.inference_mode():
            return m(x)

    return run


def wrap_torch_module(
    model: nn.Module, precision: str | None = None, calibration: Sequence[torch.Tensor] = ()
) -> Variant:
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
        return Variant(
            backend="torch",
            precision=precision,
            kernel_precision=kernel,
            parameter_bytes=state_dict_bytes(model),
            metadata={"wrapped": True},
            prepare=lambda x: x.to(dtype),
            run=run,
            to_logits=lambda out: out.float().numpy(),
            module=model,
            replicate=Replicas(run, lambda: module_runner(copy.deepcopy(model))),
        )
    if get_precision(precision).quantized and not calibration:
        raise ValueError(
            f"The 'precision' parameter {precision!r} needs calibration batches for a float module "
            "(or pass an already quantized module)."
        )
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
