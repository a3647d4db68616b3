"""Training stage: deterministic set-up, device resolution, training and fine-tuning."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..config import LOSS_NAMES
from ..core import batch_map, batch_parts, call_user_code, class_scores, import_callable

__all__ = [
    "LOSS_NAMES",
    "LossError",
    "LossFn",
    "StopRequested",
    "TrainResult",
    "check_loss",
    "make_loss",
    "resolve_device",
    "set_deterministic",
    "train_model",
]

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
# Target pixels of a dense (N, C, H, W) output labelled 255 are void, as for the metric miou (VOC / Cityscapes).
VOID_LABEL = 255


def set_deterministic(seed: int) -> None:
    """Seed Python, NumPy and torch; on CUDA also ask for deterministic kernels.

    CPU kernels are deterministic for a fixed thread count already; enabling torch's
    global deterministic mode there only floods stderr with warnings from quantized ops.

    Args:
        seed: the seed for every generator.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(requested: str) -> tuple[torch.device, str | None]:
    """Map ``cpu``/``cuda``/``mps``/``auto`` to an available device.

    Returns:
        (device, warning): the warning says when the request fell back to the CPU, else None (no Python
        warning is raised: the caller reports it).
    """
    if requested == "cpu":
        return torch.device("cpu"), None
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda"), None
    mps = getattr(torch.backends, "mps", None)
    if requested in ("mps", "auto") and mps is not None and mps.is_available():
        return torch.device("mps"), None
    if requested == "auto":
        return torch.device("cpu"), None
    # returned, not warned: the study lists it with its other warnings (silent under --quiet)
    return torch.device("cpu"), f"device {requested!r} is not available on this machine; using 'cpu' instead."


@dataclass(frozen=True)
class TrainResult:
    """What training did: loss per epoch, seconds per epoch, final train accuracy."""

    epoch_losses: tuple[float, ...]
    epoch_seconds: tuple[float, ...]
    train_accuracy: float


class LossError(ValueError):
    """The ``loss`` cannot train this model on this data (names the loss, the outputs and the targets)."""


def _one_output(out: Any, name: str) -> torch.Tensor:
    """The one output a built-in loss reads (a model with several needs a loss callable, which gets the tuple)."""
    if isinstance(out, (tuple, list)):
        if len(out) != 1:
            raise LossError(
                f"The 'loss' {name!r} reads one model output; the model gives {len(out)}. Use a "
                "package.module:function loss: it gets the tuple of outputs."
            )
        out = out[0]
    return out


def _class_scores(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Caffe2-style (N, C, 1, 1) class scores as (N, C) when the targets are one class id per sample."""
    return class_scores(out) if y.ndim == 1 else out


def _cross_entropy(out: Any, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (N, C, ...) against class ids (N, ...) or class probabilities of the logits' shape;
    dense outputs (N, C, H, W) with C ≤ 255 skip void pixels labelled 255."""
    logits = _class_scores(_one_output(out, "cross_entropy"), y)
    if y.is_floating_point() and y.shape == logits.shape:
        return F.cross_entropy(logits, y)
    void = VOID_LABEL if logits.ndim > 2 and logits.shape[1] <= VOID_LABEL else -100
    return F.cross_entropy(logits, y.long(), ignore_index=void)


def _same_shape(out: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """``y`` as float targets of ``out``'s shape (axes of length 1 aside)."""
    if y.shape != out.shape:
        if [d for d in y.shape if d != 1] != [d for d in out.shape if d != 1]:
            raise LossError(
                f"The 'loss' {name!r} needs targets of the output's shape {tuple(out.shape)}; got {tuple(y.shape)}."
            )
        y = y.reshape(out.shape)
    return y.to(out.dtype)


def _mse(out: Any, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the one output against float targets of its shape."""
    pred = _one_output(out, "mse")
    return F.mse_loss(pred, _same_shape(pred, y, "mse"))


def _bce(out: Any, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the one output, read as logits, against 0/1 targets of its shape."""
    logits = _one_output(out, "bce")
    target = _same_shape(logits, y, "bce")
    if bool(((target < 0) | (target > 1)).any()):
        raise LossError(
            f"The 'loss' 'bce' needs 0/1 targets (or probabilities in [0, 1]); got values in "
            f"[{float(target.min()):g}, {float(target.max()):g}]."
        )
    return F.binary_cross_entropy_with_logits(logits, target)


_BUILT_IN_LOSSES: dict[str, LossFn] = {"cross_entropy": _cross_entropy, "mse": _mse, "bce": _bce}


def make_loss(spec: str, search_dirs: Sequence[str | Path | None] = ()) -> LossFn:
    """The training loss named by the config's ``loss``: a built-in (``LOSS_NAMES``) or
    ``package.module:function(outputs, targets) -> scalar tensor`` (``outputs``: the model's one output tensor, or
    the tuple of its outputs; ``targets``: the batch's labels as the data gives them).

    Raises:
        LossError: an unknown name. CallableImportError: the callable does not import.
    """
    if spec in _BUILT_IN_LOSSES:
        return _BUILT_IN_LOSSES[spec]
    if ":" not in spec:
        raise LossError(
            f"The 'loss' parameter must be one of {list(LOSS_NAMES)} or 'package.module:function'. Got {spec!r}."
        )
    fn = import_callable(spec, "loss", search_dirs)

    def user_loss(out: Any, y: torch.Tensor) -> torch.Tensor:
        value = call_user_code(f"The 'loss' callable {spec!r}", fn, out, y)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
            raise LossError(
                f"The 'loss' callable {spec!r} must return a scalar float torch tensor; got "
                f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}."
            )
        return value.reshape(())

    return user_loss


def check_loss(model: nn.Module, loader: DataLoader, loss_fn: LossFn, spec: str) -> float:
    """Run ``loss_fn`` once on the first training batch through ``model`` (no step taken, the model left as it
    is), so a loss that cannot train it stops the study before anything is built. Returns the loss.

    Raises:
        LossError, UserCodeError: the loss fails, or is not a finite scalar with a gradient.
    """
    batch = next(iter(loader))
    x, y = batch[0], batch[1]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.enable_grad():
        out = model(*batch_parts(batch_map(x, lambda t: t.to(device))))
        try:
            value = loss_fn(out, y.to(device))
        except (RuntimeError, TypeError, IndexError) as exc:  # torch's own shape / dtype complaints
            shapes = [tuple(o.shape) for o in (out if isinstance(out, (tuple, list)) else (out,))]
            raise LossError(
                f"The 'loss' {spec!r} cannot train this model: outputs {shapes}, targets {tuple(y.shape)} "
                f"{y.dtype}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
            ) from None
    if not bool(torch.isfinite(value).all()) or not value.requires_grad:
        what = "has no gradient (computed outside torch?)" if value.requires_grad is False else "is not finite"
        raise LossError(f"The 'loss' {spec!r} on the first training batch {what}: {float(value.detach()):g}.")
    return float(value.detach())


def _step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    x: Any,
    y: torch.Tensor,
    autocast_dtype: torch.dtype | None,
) -> tuple[float, Any]:
    """One optimiser step; returns (loss, outputs)."""
    opt.zero_grad(set_to_none=True)
    if autocast_dtype is not None:
        with torch.autocast(device_type=y.device.type, dtype=autocast_dtype):
            out = model(*batch_parts(x))
        loss = loss_fn(batch_map(out, lambda t: t.float()), y)
    else:
        out = model(*batch_parts(x))
        loss = loss_fn(out, y)
    loss.backward()
    opt.step()
    return float(loss.detach()), out


def _hits(out: Any, y: torch.Tensor) -> tuple[int, int]:
    """(correct, counted) of argmax over class scores (N, C) or (N, C, 1, 1) against class ids (N,); (0, 0) for
    any other outputs or targets (the train accuracy is then NaN)."""
    if not isinstance(out, torch.Tensor) or y.ndim != 1 or y.is_floating_point():
        return 0, 0
    scores = _class_scores(out, y)
    if scores.ndim != 2 or scores.shape[0] != y.shape[0]:
        return 0, 0
    return int((scores.argmax(1) == y).sum()), int(y.shape[0])


class StopRequested(BaseException):
    """Training was asked to stop (a signal). A ``BaseException``, like ``KeyboardInterrupt``, so that the
    handlers that turn a failed variant into an error row (``except Exception``) never record a stop as one."""


def train_model(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    learning_rate: float,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    should_stop: Callable[[], bool] | None = None,
    loss: LossFn | None = None,
) -> TrainResult:
    """Train ``model`` in place with Adam and ``loss`` (cross-entropy by default); leaves it in eval mode.

    Args:
        model: the network (returns logits).
        loader: training batches (x, y).
        epochs: passes over the loader (0 leaves the model untouched).
        learning_rate: Adam's step size.
        device: where to train.
        seed: re-seeds torch and the loader's shuffle generator first, so training and fine-tuning
            give the same weights whatever ran before in the process.
        autocast_dtype: run forward passes under CPU autocast in this dtype (fp16/bf16 training).
        should_stop: checked before every batch; when it returns True, ``StopRequested`` is raised.
        loss: ``fn(outputs, targets) -> scalar tensor`` (``make_loss``); None: cross-entropy on class ids.
    Returns:
        A ``TrainResult``.
    """
    if seed is not None:
        torch.manual_seed(seed)
        # The shuffle order must not depend on what consumed the loader before (resume, cached baseline).
        gen = getattr(loader, "generator", None)
        if gen is not None:
            gen.manual_seed(seed)
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = loss if loss is not None else _cross_entropy
    losses, seconds = [], []
    correct = total = 0
    for _ in range(epochs):
        start = time.perf_counter()
        running, batches = 0.0, 0
        correct = total = 0
        for batch in loader:
            if should_stop is not None and should_stop():
                model.eval()
                raise StopRequested("training stopped")
            x, y = batch_map(batch[0], lambda t: t.to(device)), batch[1].to(device)
            value, out = _step(model, opt, loss_fn, x, y, autocast_dtype)
            running += value
            batches += 1
            hits, counted = _hits(out, y)
            correct += hits
            total += counted
        losses.append(running / max(batches, 1))
        seconds.append(time.perf_counter() - start)
    model.eval()
    return TrainResult(tuple(losses), tuple(seconds), correct / total if total else float("nan"))
