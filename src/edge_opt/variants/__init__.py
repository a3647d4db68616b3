"""Variants stage: structured pruning × precision × runtime backend, each backend one module registered in
one registry; precisions own their per-backend build hooks; sensitivity and the int8_mixed precision.
"""

from __future__ import annotations

# Each runtime registers itself when imported (the optional extras' libraries load only when a variant is built).
from . import executorch_backend, litert_backend, onnxruntime_backend, openvino_backend, torch_backend  # noqa: F401
from .base import (
    BuildContext,
    Variant,
    VariantBuildError,
    VariantNotApplicable,
    state_dict_bytes,
    torch_kernel_precision,
)
from .layers import coverage, onnx_layers, torch_layers
from .onnx_graph import OnnxNodeStats, onnx_node_stats
from .onnx_tools import onnx_input_name, onnx_variant
from .onnxruntime_backend import build_onnx_file, parent_onnx_layers
from .precisions import (
    PRECISIONS,
    Precision,
    from_seed_name,
    get_precision,
    list_precisions,
    register_precision,
    seed_names,
    to_seed_name,
)
from .prune import (
    PruningIneffective,
    PruningReport,
    apply_layer_shapes,
    layer_shapes,
    load_checkpoint,
    prune_model,
    pruning_report,
    save_checkpoint,
)
from .quantize import is_quantized_module, quantize_torch_int8
from .recovery import BIAS_CORRECTED, QAT_BUILDS, EqualizedModel, equalize, range_spread, recovered_parent
from .registry import BACKEND_KINDS, BACKENDS, backend_supports, build_variant, list_backends, register_backend
from .sensitivity import SensitivityReport, layer_sensitivity, mixed_search
from .torch_backend import wrap_torch_module

__all__ = [
    "BACKENDS",
    "BACKEND_KINDS",
    "BIAS_CORRECTED",
    "BuildContext",
    "EqualizedModel",
    "OnnxNodeStats",
    "PRECISIONS",
    "QAT_BUILDS",
    "Precision",
    "PruningIneffective",
    "PruningReport",
    "SensitivityReport",
    "Variant",
    "VariantBuildError",
    "VariantNotApplicable",
    "apply_layer_shapes",
    "backend_supports",
    "build_onnx_file",
    "build_variant",
    "coverage",
    "equalize",
    "from_seed_name",
    "get_precision",
    "is_quantized_module",
    "layer_sensitivity",
    "layer_shapes",
    "list_backends",
    "list_precisions",
    "load_checkpoint",
    "mixed_search",
    "onnx_input_name",
    "onnx_layers",
    "onnx_node_stats",
    "onnx_variant",
    "parent_onnx_layers",
    "prune_model",
    "pruning_report",
    "range_spread",
    "recovered_parent",
    "quantize_torch_int8",
    "register_backend",
    "register_precision",
    "save_checkpoint",
    "seed_names",
    "state_dict_bytes",
    "to_seed_name",
    "torch_kernel_precision",
    "torch_layers",
    "wrap_torch_module",
]
