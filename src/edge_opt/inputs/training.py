"""Training stage: deterministic set-up, device resolution, training and fine-tuning."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["StopRequested", "TrainResult", "resolve_device", "set_deterministic", "train_model"]


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


def _step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    autocast_dtype: torch.dtype | None,
) -> tuple[float, torch.Tensor]:
    """One optimiser step; returns (loss, logits)."""
    opt.zero_grad(set_to_none=True)
    if autocast_dtype is not None:
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
    else:
        logits = model(x)
        loss = loss_fn(logits, y)
    loss.backward()
    opt.step()
    return float(loss.detach()), logits


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
) -> TrainResult:
    """Train ``model`` in place with Adam and cross-entropy; leaves it in eval mode.

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
    loss_fn = nn.CrossEntropyLoss()
    losses, seconds = [], []
    correct = total = 0
    for _ in range(epochs):
        start = time.perf_counter()
        running, batches = 0.0, 0
        correct = total = 0
        for x, y in loader:
            if should_stop is not None and should_stop():
                model.eval()
                raise StopRequested("training stopped")
            x, y = x.to(device), y.to(device)
            loss, logits = _step(model, opt, loss_fn, x, y, autocast_dtype)
            running += loss
            batches += 1
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        losses.append(running / max(batches, 1))
        seconds.append(time.perf_counter() - start)
    model.eval()
    return TrainResult(tuple(losses), tuple(seconds), correct / total if total else float("nan"))
