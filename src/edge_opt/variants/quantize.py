"""Post-training static int8 quantization for PyTorch, behind one module.

torch.ao's FX flow still works in torch 2.13 but warns that it is deprecated; the
warnings are silenced here and only here (``_fx_flow``, which also skips FX's per-node stack traces).
Calibrating and converting are separate steps, so one calibration serves every conversion of a parent
(plain int8, each layer alone, each step of a mixed-precision search). Swap these functions for PT2E
later without touching callers.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

__all__ = [
    "CalibratedInt8",
    "calibrate_torch_int8",
    "convert_torch_int8",
    "is_quantized_module",
    "quantization_metadata",
    "quantize_torch_int8",
]


@dataclass(frozen=True)
class CalibratedInt8:
    """A float model observed on its calibration batches with every layer quantizable (FX ``prepare_fx`` and
    the batches run once), ready to be converted with any set of layers kept in float. Calibrating is most
    of a conversion's cost; a per-layer sensitivity pass or a mixed-precision search converts one
    calibration many times."""

    float_model: nn.Module
    prepared: GraphModule
    calibration: tuple[torch.Tensor, ...]
    backend: str
    per_channel: bool
    observer: str = "histogram"


@contextlib.contextmanager
def _fx_flow() -> Iterator[None]:
    """Context of the torch.ao FX flow: its deprecation warnings silenced, and no Python stack trace recorded
    on each traced node (``torch.fx.config.do_not_emit_stack_traces``). Those traces only help debug a graph,
    and recording the first one in a process imports torch.export and functorch: the first calibration and
    conversion of a process took 1.4–1.6 s with them and 0.45 s without here, with the same int8 model."""
    import torch.fx.config as fx_config

    before = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
            warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
            warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
            yield
    finally:
        fx_config.do_not_emit_stack_traces = before


ACTIVATION_OBSERVERS = ("histogram", "minmax")


def _mapping(
    backend: str,
    per_channel: bool,
    float_layers: Sequence[str] = (),
    only_layers: Sequence[str] | None = None,
    observer: str = "histogram",
) -> Any:
    """The engine's default qconfig mapping; ``observer="minmax"`` swaps its activation observer (a histogram, whose
    ``histc`` over every activation of every batch was 2/3 of a MobileNetV2-224 calibration) for a min/max one
    with the same dtype, scheme and reduced range; ``per_channel=False``: one weight scale per tensor."""
    from torch.ao.quantization import MinMaxObserver, QConfig, default_weight_observer, get_default_qconfig_mapping

    if observer not in ACTIVATION_OBSERVERS:
        raise ValueError(f"observer must be one of {list(ACTIVATION_OBSERVERS)}; got {observer!r}")
    mapping = get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    if default is not None and observer == "minmax":
        act = default.activation()
        minmax = MinMaxObserver.with_args(dtype=act.dtype, qscheme=act.qscheme, reduce_range=act.reduce_range)
        default = QConfig(activation=minmax, weight=default.weight)
        mapping = mapping.set_global(default)
    if not per_channel and default is not None:
        default = QConfig(activation=default.activation, weight=default_weight_observer)
        mapping = mapping.set_global(default)
    if only_layers is not None:
        mapping = mapping.set_global(None)
        for name in only_layers:
            mapping = mapping.set_module_name(name, default)
    for name in float_layers:
        mapping = mapping.set_module_name(name, None)
    return mapping


def _observers(gm: GraphModule) -> dict[str, nn.Module]:
    """The activation observers of a prepared model, by the graph node each one observes."""
    found = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in str(node.target) and node.args:
            found[str(getattr(node.args[0], "name", node.args[0]))] = gm.get_submodule(str(node.target))
    return found


def _prepare(calibrated: CalibratedInt8, mapping: Any) -> GraphModule:
    """The float model prepared with ``mapping``, its observers holding the full calibration's statistics:
    calibration runs in float, so a tensor observed under any mapping sees the same values, and each tensor
    is quantized with the ranges the full int8 model uses for it (where the full model shares one observer
    across an op that keeps quantization parameters — a max-pool's input and output — both tensors'
    values count, as they do for the full model)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    prepared = prepare_fx(copy.deepcopy(calibrated.float_model), mapping, (calibrated.calibration[0][:1],))
    full, observers = _observers(calibrated.prepared), _observers(prepared)
    if all(node in full and type(full[node]) is type(obs) for node, obs in observers.items()):
        for node, observer in observers.items():
            observer.load_state_dict(full[node].state_dict())
    else:  # a tensor the full calibration did not observe: observe this layout itself
        with torch.inference_mode():
            for batch in calibrated.calibration:
                prepared(batch)
    return prepared


def calibrate_torch_int8(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    backend: str = "x86",
    per_channel: bool = True,
    observer: str = "histogram",
) -> CalibratedInt8:
    """Insert the engine's observers into a copy of ``model`` (every layer quantizable) and run all
    ``calibration`` batches through it once (``observer``: the activation observer, see ``_mapping``).

    Raises:
        RuntimeError: the engine is not available in this torch build.
        ValueError: no calibration batch.
    """
    if backend not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"quantization_backend {backend!r} is not supported by this torch build "
            f"(supported: {torch.backends.quantized.supported_engines})."
        )
    if not calibration:
        raise ValueError("int8 calibration needs at least one batch; got none.")
    torch.backends.quantized.engine = backend
    float_model = copy.deepcopy(model).eval().float()
    with _fx_flow():
        from torch.ao.quantization.quantize_fx import prepare_fx

        prepared = prepare_fx(
            copy.deepcopy(float_model), _mapping(backend, per_channel, observer=observer), (calibration[0][:1],)
        )
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
    return CalibratedInt8(float_model, prepared, tuple(calibration), backend, per_channel, observer)


def convert_torch_int8(
    calibrated: CalibratedInt8, float_layers: Sequence[str] = (), only_layers: Sequence[str] | None = None
) -> nn.Module:
    """Convert a calibrated model to int8 kernels, keeping ``float_layers`` in float (or quantizing only
    ``only_layers``). The layer choice is made at FX prepare time, as if calibrated for it alone (a float
    layer's fused activation stays float too); the observers take the stored calibration's statistics."""
    torch.backends.quantized.engine = calibrated.backend
    with _fx_flow():
        from torch.ao.quantization.quantize_fx import convert_fx

        if not float_layers and only_layers is None:
            prepared = copy.deepcopy(calibrated.prepared)
        else:
            prepared = _prepare(
                calibrated,
                _mapping(calibrated.backend, calibrated.per_channel, float_layers, only_layers, calibrated.observer),
            )
        return convert_fx(prepared).eval()


def quantize_torch_int8(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    backend: str = "x86",
    per_channel: bool = True,
    float_layers: Sequence[str] = (),
    only_layers: Sequence[str] | None = None,
) -> nn.Module:
    """Static PTQ: observe ``calibration`` batches, convert to int8 kernels (``calibrate_torch_int8`` then
    ``convert_torch_int8``).

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
    return convert_torch_int8(calibrate_torch_int8(model, calibration, backend, per_channel), float_layers, only_layers)


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
        entry: dict[str, Any] = {
            "type": type(m).__name__,
            "output_scale": float(m.scale),
            "output_zero_point": int(m.zero_point),
        }
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
