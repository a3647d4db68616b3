"""What every backend and precision shares: the ``Variant`` a build returns, the frozen
``BuildContext`` a build reads, and the int8 options (``QuantOptions``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import QuantizationConfig
from .quantize import is_quantized_module

__all__ = [
    "BuildContext",
    "Replicas",
    "Variant",
    "VariantBuildError",
    "VariantNotApplicable",
    "state_dict_bytes",
    "torch_kernel_precision",
]


class VariantBuildError(RuntimeError):
    """A variant could not be built as requested (becomes a row with ``error`` set)."""


class VariantNotApplicable(VariantBuildError):
    """The point does not apply to this model on this backend (a converter has no lowering for one of its ops):
    the study records it as skipped with this message, not as an error row."""


@dataclass(frozen=True, eq=False)
class BuildContext:
    """What a backend may need to build a variant; frozen (use ``dataclasses.replace`` for a variation).

    Attributes:
        calibration: exactly the batches int8 calibration uses.
        example_input: one input batch (shape and dtype reference).
        workdir: where files (ONNX graphs, metadata) go.
        parent_key: identifies the float parent (pruning level etc.): its ONNX export, int8 calibrations and
            sensitivity results are shared under it, so one context serves one model per key (build another
            model with ``dataclasses.replace(ctx, parent_key=...)``).
        quantization: the int8 options.
        threads: intra-op threads of the runtime session.
        ort_op_types_to_quantize: None = ORT's default set; used by tests to force an unquantized graph.
        cache: shared exports per parent (the only mutable part: a memo, not a setting).
        validation: (inputs, labels) of the validation split, for builds that search (int8_mixed).
        max_accuracy_drop: the budget such a search must meet: of the accuracy, or of ``metric`` when given (in its
            units, absolute).
        metric: the study's metric of a variant's outputs (logits of every validation sample, in ``validation``'s
            order) when it is not top1; None: such a search judges top-1 accuracy.
        metric_higher_is_better: ``metric``'s direction.
        metric_label: identifies ``metric`` in the kept sensitivity results (``top1``: the accuracy).
        max_float_mac_fraction: the most MACs such a search may leave in float.
        sensitivity_dir: where per-layer sensitivity results are kept (reused on resume).
        batch_sizes: the batch sizes the study runs (runtimes with static shapes build one program each).
        onnx_exporter: how the parent's ONNX file is made (``torchscript`` or ``dynamo``, see ``export_onnx``).
        recovered: the model and this context are already those of the point's ``quantization.recovery``
            (``recovery.recovered_parent`` ran).
        train_loader: training batches (x, y) for quantization-aware training (``recovery: qat``); None: none.
        loss: the study's training loss ``fn(outputs, targets)`` (None: cross-entropy on class ids).
        learning_rate: the study's training step size (QAT fine-tunes at a tenth of it).
        seed: seeds QAT's training, so the same config gives the same scales.
        calibration_stop: where and why ``calibration`` was cut to the samples min/max calibration needs
            (``calibration.converged_calibration``; empty: not decided, every batch given).
    """

    calibration: Sequence[torch.Tensor]
    example_input: torch.Tensor
    workdir: Path
    parent_key: str = "model"
    quantization: QuantizationConfig = QuantizationConfig()
    threads: int = 1
    ort_op_types_to_quantize: tuple[str, ...] | None = None
    cache: dict[Any, Any] = field(default_factory=dict)
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    max_accuracy_drop: float = 0.01
    metric: Callable[[np.ndarray], float] | None = None
    metric_higher_is_better: bool = True
    metric_label: str = "top1"
    max_float_mac_fraction: float = 0.5
    sensitivity_dir: Path | None = None
    batch_sizes: tuple[int, ...] = (1,)
    onnx_exporter: str = "torchscript"
    recovered: bool = False
    train_loader: Any = None
    loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    learning_rate: float = 1e-3
    seed: int = 0
    calibration_stop: str = ""


@dataclass(frozen=True, eq=False)
class Replicas:
    """Makes independent instances of one ``run`` (``of``): each call of ``make`` returns the ``run`` of a new
    runtime session over the same file, or of a copy of the module. A ``Variant`` uses it only while its
    ``run`` is still ``of``, so a copy made with another ``run`` is not timed through the original runtime."""

    of: Callable[[Any], Any]
    make: Callable[[], Callable[[Any], Any]]
    timed: bool = True  # latency rounds may rotate over several such instances (False: one)

    def __call__(self) -> Callable[[Any], Any]:
        return self.make()


@dataclass(frozen=True, eq=False)
class Variant:
    """A runnable, self-describing build of one config point.

    ``prepare`` converts a batch (``core.batches``: a float32 NCHW tensor, or one tensor per model input) to the
    backend's native input once, outside any timed region; ``run`` executes one prepared batch; ``to_logits``
    turns what ``run`` returns into the outputs (float32 logits; a tuple of arrays for several outputs) and
    ``predict`` chains the three.
    ``replicate`` (None where a backend cannot) returns the ``run`` of an independent instance of the same
    build (a new runtime session over the same file, a copy of the module): latency is measured over
    several, since one instance's memory placement can make it several % faster or slower than another's.
    The backends give a ``Replicas`` bound to their ``run``: a copy made with another ``run``
    (``dataclasses.replace``) keeps it but ``replicas`` is then None, and that ``run`` itself is timed;
    a plain callable given as ``replicate`` is trusted to copy whatever ``run`` is.
    """

    backend: str
    precision: str
    kernel_precision: str
    parameter_bytes: int
    metadata: dict[str, Any]
    prepare: Callable[[torch.Tensor], Any]
    run: Callable[[Any], Any]
    to_logits: Callable[[Any], np.ndarray]
    module: nn.Module | None = None
    onnx_path: Path | None = None
    replicate: Callable[[], Callable[[Any], Any]] | None = None

    @property
    def replicas(self) -> Callable[[], Callable[[Any], Any]] | None:
        """What makes fresh instances of this variant's ``run``: ``replicate``, unless it is a ``Replicas``
        of another ``run`` (a copy with a replaced ``run``), or None."""
        r = self.replicate
        return None if isinstance(r, Replicas) and r.of is not self.run else r

    def predict(self, x: Any) -> Any:
        """The outputs of a batch (``core.batches``): float32 logits for a float32 NCHW batch; one array per
        output, a tuple for a model with several."""
        return self.to_logits(self.run(self.prepare(x)))


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_tensor_bytes(o) for o in obj)
    return 0


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the state dict at its real dtype (qint8 = 1 byte, packed int8 weights included)."""
    return sum(_tensor_bytes(v) for v in model.state_dict().values())


_TORCH_FLOAT_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


def torch_kernel_precision(model: nn.Module) -> str:
    """What a torch module really computes in: int8 if it holds quantized modules, else its float dtype."""
    if any(is_quantized_module(m) for m in model.modules()):
        return "int8"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return "+".join(sorted(_TORCH_FLOAT_NAMES.get(d, str(d)) for d in dtypes)) or "fp32"
