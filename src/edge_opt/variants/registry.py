"""The backend registry: one runtime a module registers itself here with ``@register_backend("name")``.

A backend takes a (pruned) float model and a precision and returns a ``Variant``: something that runs a batch
and says what it is — backend, requested precision, the precision its kernels really compute in, parameter
bytes, metadata. Precision behaviour lives in ``precisions`` (each precision's per-backend build hooks), not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from ..core import Registry
from .base import BuildContext, Variant
from .precisions import get_precision
from .recovery import recovered_parent

__all__ = ["BACKENDS", "BACKEND_KINDS", "backend_supports", "build_variant", "list_backends", "register_backend"]

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
    """Build ``model`` at ``precision`` on ``backend`` (a quantized precision from the parent its
    ``quantization.recovery`` gives, see ``recovery.recovered_parent``; the variant's metadata records it).

    Raises:
        UnknownNameError: unknown backend or precision. VariantBuildError: the build failed its checks.
    """
    builder = BACKENDS.get(backend)
    if not get_precision(precision).quantized:
        return builder(model, precision, ctx)
    model, ctx, recovery = recovered_parent(
        model, ctx, precision, BACKEND_KINDS.get(backend)
    )  # cle: the equalized parent, whatever the runtime
    variant = builder(model, precision, ctx)
    return dataclasses.replace(variant, metadata={**variant.metadata, **recovery})
