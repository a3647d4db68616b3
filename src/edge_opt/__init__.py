"""edge_opt: choose and export the compressed model to ship to an edge device.

The package root stays import-light (no torch) so that ``edge-opt predict`` can
run an exported model with onnxruntime alone. Public names live in the stage
packages' faces (``edge_opt.measure``, ``edge_opt.study``, ``edge_opt.report`` …); the module paths of earlier
releases (``edge_opt.metrics`` …) still import, through ``edge_opt.compat``.
"""

from typing import Any

from . import compat

compat.install()

__all__ = ["__version__", "optimize"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``edge_opt.optimize`` is imported on first use (it needs torch; ``edge-opt predict`` must not)."""
    if name == "optimize":
        from .api import optimize

        return optimize
    raise AttributeError(f"module 'edge_opt' has no attribute {name!r}")
