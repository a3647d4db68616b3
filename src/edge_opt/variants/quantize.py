"""Post-training static int8 quantization for PyTorch, behind one function.

torch.ao's FX flow still works in torch 2.13 but warns that it is deprecated; the
warnings are silenced here and only here. Swap this function for PT2E later
without touching callers.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["is_quantized_module", "quantization_metadata", "quantize_torch_int8"]


def quantize_torch_int8(model: nn.Module, calibration: Sequence[torch.Tensor], backend: str = "x86",
                        per_channel: bool = True, float_layers: Sequence[str] = (),
                        only_layers: Sequence[str] | None = None) -> nn.Module:
    """Static PTQ: observe ``calibration`` batches, convert to int8 kernels.

    Args:
        model: float model (copied, not modified).
        calibration: the input batches to calibrate on (all are used).
        backend: torch quantized engine / qconfig: x86, fbgemm or qnnpack.
        per_channel: per-output-channel weight scales (the engine's default qconfig); False = one scale
            per weight tensor.
        float_layers: module names kept in float (per-module qconfig None).
        only_layers: quantize these modules only (everything else float); None = all.
    Returns:
        The converted, quantized GraphModule.
    Raises:
        RuntimeError: the engine is not available in this torch build.
    """
    if backend not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization_backend {backend!r} is not supported by this torch build "
            f"(supported: {torch.backends.quantized.supported_engines})."
        )
    if not calibration:
        raise ValueError("int8 calibration needs at least one batch; got none.")
    torch.backends.quantized.engine = backend
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
        from torch.ao.quantization import QConfig, default_weight_observer, get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        mapping = get_default_qconfig_mapping(backend)
        default = mapping.global_qconfig
        if not per_channel and default is not None:
            default = QConfig(activation=default.activation, weight=default_weight_observer)
            mapping = mapping.set_global(default)
        if only_layers is not None:
            mapping = mapping.set_global(None)
            for name in only_layers:
                mapping = mapping.set_module_name(name, default)
        for name in float_layers:
            mapping = mapping.set_module_name(name, None)
        float_model = copy.deepcopy(model).eval().float()
        prepared = prepare_fx(float_model, mapping, (calibration[0][:1],))
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        return convert_fx(prepared).eval()


def is_quantized_module(m: nn.Module) -> bool:
    """True for torch.ao quantized (int8 kernel) modules."""
    return type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")) and (
        hasattr(m, "scale") or hasattr(m, "_packed_params")
    )


def quantization_metadata(qmodel: nn.Module) -> dict[str, Any]:
    """Per-layer output scale / zero point and weight quantization parameters of a converted model."""
    layers = {}
    for name, m in qmodel.named_modules():
        if not is_quantized_module(m) or not hasattr(m, "scale"):
            continue
        entry: dict[str, Any] = {"type": type(m).__name__, "output_scale": float(m.scale),
                                 "output_zero_point": int(m.zero_point)}
        w = m.weight() if callable(getattr(m, "weight", None)) else None
        if w is not None and w.is_quantized:
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                entry["weight_qscheme"] = "per_channel"
                entry["weight_scales"] = [float(s) for s in w.q_per_channel_scales()]
                entry["weight_zero_points"] = [int(z) for z in w.q_per_channel_zero_points()]
            else:
                entry["weight_qscheme"] = "per_tensor"
                entry["weight_scales"] = [float(w.q_scale())]
                entry["weight_zero_points"] = [int(w.q_zero_point())]
            entry["weight_dtype"] = str(w.dtype)
        layers[name] = entry
    return layers
