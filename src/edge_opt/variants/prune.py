"""Structured L1 channel pruning with Torch-Pruning's dependency graph.

Channels are physically removed (smaller tensors, fewer MACs). A pruned model is
saved as a plain state dict plus its layer shapes, so it reloads with
``torch.load(weights_only=True)`` by rebuilding the registry model and resizing
its layers, never by unpickling modules.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "PruningIneffective",
    "PruningReport",
    "apply_layer_shapes",
    "layer_shapes",
    "load_checkpoint",
    "prune_model",
    "pruning_report",
    "save_checkpoint",
]

_RESIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def _classifier(model: nn.Module) -> nn.Module:
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            last = m
    if last is None:
        raise ValueError("The model has no Conv or Linear layer to prune.")
    return last


def prune_model(model: nn.Module, level: float, example_input: torch.Tensor) -> nn.Module:
    """Remove the ``level`` fraction of channels with the smallest L1 norm in every prunable layer.

    The output layer keeps all its outputs. Depthwise convolutions follow their input channels.

    Args:
        model: float model (left untouched; a pruned copy is returned).
        level: fraction in [0, 1); 0.0 returns an equivalent copy.
        example_input: one batch, used to trace the dependency graph.
    Returns:
        The pruned copy, in eval mode.
    """
    if not (0.0 <= level < 1.0):
        raise ValueError(f"The 'pruning_level' parameter must be a float in [0, 1). Got {level!r} instead.")
    pruned = copy.deepcopy(model).eval()
    if level == 0.0:
        return pruned
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MagnitudePruner(
            pruned,
            example_input,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=level,
            ignored_layers=[_classifier(pruned)],
            round_to=1,
        )
        pruner.step()
    return pruned.eval()


class PruningIneffective(ValueError):
    """A pruning level that did not prune what it names (nothing removed, or a prunable layer left whole)."""


@dataclass(frozen=True)
class PruningReport:
    """What pruning really removed: kept / original output channels per layer and the kept parameter share."""

    level: float
    param_fraction: float
    kept_channels: dict[str, tuple[int, int]]
    untouched: tuple[str, ...]

    def problem(self) -> str | None:
        """Why a row labelled with ``level`` would be wrong (None when the level was applied)."""
        if self.level == 0.0:
            return None
        if self.param_fraction >= 1.0:
            return (
                f"pruning level {self.level:g} removed nothing (Torch-Pruning left every layer of this model "
                "whole at this level); no row is labelled with a level it did not get — use a lower level"
            )
        if self.untouched:
            return (
                f"pruning level {self.level:g} left the prunable layer(s) {list(self.untouched)[:8]} whole "
                f"({self.param_fraction:.1%} of the parameters kept); no row is labelled with a level it did not "
                "get — use a lower level for this model"
            )
        return None

    def label(self) -> str:
        """``conv1 24/32; conv2 48/64`` — kept/original output channels of the pruned layers."""
        return "; ".join(f"{name} {k}/{n}" for name, (k, n) in self.kept_channels.items())


def pruning_report(original: nn.Module, pruned: nn.Module, level: float) -> PruningReport:
    """Compare a pruned copy with its original: kept channels per prunable layer and the parameter share.

    Prunable layers are the Conv/Linear layers except the output layer (which keeps its outputs).
    """
    before, after = layer_shapes(original), layer_shapes(pruned)
    try:
        head = next(n for n, m in original.named_modules() if m is _classifier(original))
    except (StopIteration, ValueError):
        head = ""
    kept = {name: (after.get(name, s)["out"], s["out"]) for name, s in before.items() if "in" in s and name != head}
    untouched = tuple(name for name, (k, n) in kept.items() if k == n and level > 0)
    n_before = sum(p.numel() for p in original.parameters())
    n_after = sum(p.numel() for p in pruned.parameters())
    return PruningReport(level, n_after / n_before if n_before else 1.0, kept, untouched)


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel counts (and groups) of every resizable layer, keyed by module name."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            out[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.Linear):
            out[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out[name] = {"out": m.num_features}
    return out


def _resized(m: nn.Module, s: dict[str, int]) -> nn.Module:
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        conv: Any = type(m)  # the stubs type kernel/stride tuples per class; these come from the same class
        return conv(
            s["in"],
            s["out"],
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=s["groups"],
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
        )
    if isinstance(m, nn.Linear):
        return nn.Linear(s["in"], s["out"], bias=m.bias is not None)
    return type(m)(s["out"], eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats)


def apply_layer_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Resize the layers of a freshly built model to recorded shapes (in place; returns it)."""
    for name, s in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, _RESIZABLE):
            raise ValueError(f"Layer {name!r} of the checkpoint is not a resizable layer in the rebuilt model.")
        setattr(parent, child, _resized(old, s))
    return model


def save_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Save state dict + layer shapes (+ JSON-able ``extra``) atomically, loadable with weights_only=True."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), "layer_shapes": layer_shapes(model), "extra": extra or {}}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, fresh_model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint saved by ``save_checkpoint`` into a freshly built model of the same family.

    Returns:
        (model in eval mode, extra)
    """
    blob = torch.load(Path(path), weights_only=True, map_location="cpu")
    model = apply_layer_shapes(fresh_model, blob["layer_shapes"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob.get("extra", {})
