"""edge_opt: choose and export the compressed model to ship to an edge device.

The package root stays import-light (no torch) so that ``edge-opt predict`` can
run an exported model with onnxruntime alone. Public names live in their stage
modules: ``edge_opt.metrics``, ``edge_opt.reporting``, ``edge_opt.hardware`` …
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
