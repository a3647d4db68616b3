"""int8 accuracy recovery that keeps every layer int8 (``quantization.recovery``), applied to the float parent.

``cle`` is cross-layer equalization with bias absorption (Nagel et al. 2019, "Data-Free Quantization Through
Weight Equalization and Bias Correction"), written here by hand: the maintained implementation (AIMET) does not
import beside this torch (its import fails on the torchvision pip resolves), NNCF's torch CLE needs its own
model wrapping, and the method is a few dozen lines whose invariant a test checks (equalized per-channel ranges,
unchanged float outputs). It runs on the float torch model before any backend builds it, so every runtime
(torch, ONNX Runtime, OpenVINO, ExecuTorch) quantizes the same equalized model.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node, symbolic_trace
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .base import BuildContext, VariantBuildError

__all__ = ["EqualizedModel", "equalize", "recovered_parent"]

# Activations f with f(x / s) = f(x) / s for s > 0: a scale moves through them unchanged.
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.Identity)
_HOMOGENEOUS_FUNCTIONS = (torch.relu, torch.nn.functional.relu)
CLE_ITERATIONS = 50  # a chain's pairs are equalized in turn until the scales stop changing (3-10 rounds here)
# Recoveries the config accepts whose builds are not here yet: their points are error rows saying so, never a
# plain int8 build under their name.
NOT_BUILT = {
    "qat": "PT2E quantization-aware training is not wired into the int8 builds in this release",
}
# (precision, backend kind) whose builds apply NNCF's bias correction (``bias_correction``): ORT's int8 from NNCF's
# ONNX quantizer, OpenVINO's from nncf.quantize on the IR. torch.ao FX and ExecuTorch have none here.
BIAS_CORRECTED = {("int8", "onnx"), ("int8", "openvino")}
BIAS_ABSORPTION_SIGMAS = 3.0  # the paper's c = max(0, beta - 3 gamma): what an activation almost never falls under


@dataclass(frozen=True)
class EqualizedModel:
    """The float model after cross-layer equalization and what was done to it (``metadata`` for the variant)."""

    model: nn.Module
    metadata: dict[str, Any]


@dataclass
class _Pair:
    first: str  # conv whose output channels are scaled down by s
    second: str  # conv whose input channels are scaled up by s
    absorb: bool  # the second conv has no padding: a bias moved through it is exact


def _module(gm: GraphModule, node: Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _conv(gm: GraphModule, name: str) -> nn.Conv2d:
    m = gm.get_submodule(name)
    if not isinstance(m, nn.Conv2d):
        raise TypeError(f"{name} is a {type(m).__name__}, not a Conv2d")
    return m


def _fold_batchnorms(gm: GraphModule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fold every BatchNorm2d whose input is a Conv2d used by it alone into that conv (``fuse_conv_bn_eval``);
    returns, per folded conv, the BN's (beta, |gamma|): the per-channel mean and spread of its output, which bias
    absorption reads."""
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or len(node.args) != 1:
            continue
        prev = node.args[0]
        if not isinstance(prev, Node) or len(prev.users) != 1 or not bn.affine:
            continue
        conv = _module(gm, prev)
        if not isinstance(conv, nn.Conv2d):
            continue
        gm.add_submodule(str(prev.target), fuse_conv_bn_eval(conv.eval(), bn.eval()))
        stats[str(prev.target)] = (bn.bias.detach().clone(), bn.weight.detach().abs().clone())
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return stats


def _homogeneous(gm: GraphModule, node: Node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, _HOMOGENEOUS_MODULES)
    return node.op == "call_function" and node.target in _HOMOGENEOUS_FUNCTIONS


def _activation_name(gm: GraphModule, node: Node) -> str:
    m = _module(gm, node)
    return type(m).__name__ if m is not None else str(getattr(node.target, "__name__", node.target))


def _equalizable(first: nn.Module, second: nn.Module) -> bool:
    """A Conv2d feeding a dense (groups=1) or depthwise Conv2d over all of its output channels."""
    if not isinstance(first, nn.Conv2d) or not isinstance(second, nn.Conv2d):
        return False
    channels = first.out_channels
    return second.in_channels == channels and (second.groups == 1 or second.groups == channels == second.out_channels)


def _only_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_activation(gm: GraphModule, node: Node) -> bool:
    """A one-input elementwise step between two convs: a non-conv module, or relu as a function."""
    m = _module(gm, node)
    if m is not None:
        return not isinstance(m, nn.Conv2d) and len(node.args) == 1
    return node.op == "call_function" and node.target in _HOMOGENEOUS_FUNCTIONS


def _find_pairs(gm: GraphModule) -> tuple[list[_Pair], list[str]]:
    """Consecutive conv pairs with only a positively homogeneous activation between them (or none), each edge used
    by the next node alone; and why the conv → other activation → conv chains were left as they are."""
    pairs, skipped = [], []
    for node in gm.graph.nodes:
        first, act = _module(gm, node), _only_user(node)
        if not isinstance(first, nn.Conv2d) or act is None:
            continue
        nxt = act if isinstance(_module(gm, act), nn.Conv2d) else None
        if nxt is None and _is_activation(gm, act):
            nxt = _only_user(act)
        second = _module(gm, nxt) if nxt is not None else None
        if nxt is None or not isinstance(second, nn.Conv2d) or not _equalizable(first, second):
            continue
        if nxt is not act and not _homogeneous(gm, act):
            skipped.append(
                f"{node.target} → {_activation_name(gm, act)} → {nxt.target}: not positively homogeneous "
                "(f(x/s) ≠ f(x)/s), so equalizing would change the float function (DFQ replaces ReLU6 by ReLU; "
                "edge_opt keeps the model's function and leaves the pair as it is)"
            )
            continue
        pad = second.padding
        absorb = nxt is not act and (pad == "valid" or (not isinstance(pad, str) and not any(pad)))
        pairs.append(_Pair(str(node.target), str(nxt.target), absorb))
    return pairs, skipped


def _input_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """Per input channel, the largest |weight| that multiplies it."""
    w = conv.weight.detach().abs()
    if conv.groups == 1:
        return w.amax(dim=(0, 2, 3))
    return w.amax(dim=(1, 2, 3))  # depthwise: output channel i reads input channel i


def _scale_pair(first: nn.Conv2d, second: nn.Conv2d, s: torch.Tensor) -> None:
    with torch.no_grad():
        first.weight.div_(s.view(-1, 1, 1, 1))
        if first.bias is not None:
            first.bias.div_(s)
        second.weight.mul_(s.view(1, -1, 1, 1) if second.groups == 1 else s.view(-1, 1, 1, 1))


def _equalize_pairs(gm: GraphModule, pairs: list[_Pair], stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The paper's scales s_i = sqrt(r1_i / r2_i), pair after pair, until no scale moves by more than 1e-6;
    returns the rounds run. A channel with an all-zero range on either side keeps s = 1."""
    for rounds in range(1, CLE_ITERATIONS + 1):
        moved = 0.0
        for p in pairs:
            first, second = _conv(gm, p.first), _conv(gm, p.second)
            r1 = first.weight.detach().abs().amax(dim=(1, 2, 3))
            r2 = _input_ranges(second)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, 1.0)), torch.ones_like(r1))
            _scale_pair(first, second, s)
            if p.first in stats:
                beta, spread = stats[p.first]
                stats[p.first] = (beta / s, spread / s)
            moved = max(moved, float((s - 1).abs().max()))
        if moved < 1e-6:
            return rounds
    return CLE_ITERATIONS


def _absorb_biases(gm: GraphModule, pairs: list[_Pair], stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The paper's bias absorption: c = max(0, beta - 3|gamma|) leaves the first conv's bias and enters the
    second's as W2·c. Exact while the activation stays above c (BN's statistics say it almost always does) and
    only where the second conv has no padding (a padded border would see -c); returns the pairs absorbed."""
    done = 0
    for p in pairs:
        if not p.absorb or p.first not in stats:
            continue
        first, second = _conv(gm, p.first), _conv(gm, p.second)
        beta, spread = stats[p.first]
        c = torch.clamp(beta - BIAS_ABSORPTION_SIGMAS * spread, min=0)
        if not bool((c > 0).any()) or first.bias is None:
            continue
        with torch.no_grad():
            w = second.weight.detach()
            moved = (w.sum(dim=(2, 3)) @ c) if second.groups == 1 else w.sum(dim=(1, 2, 3)) * c
            if second.bias is None:
                second.bias = nn.Parameter(torch.zeros(second.out_channels, dtype=w.dtype))
            second.bias.add_(moved)
            first.bias.sub_(c)
        stats[p.first] = (beta - c, spread)
        done += 1
    return done


def equalize(model: nn.Module, absorb_bias: bool = True) -> EqualizedModel:
    """Cross-layer equalization of a float model (a copy; ``model`` is left as it is): BatchNorms folded into their
    convs, then every conv → ReLU → conv pair (dense or depthwise, ReLU or nothing between) rescaled so that each
    channel's weight range is the same on both sides, then bias absorption (``absorb_bias``).

    Raises:
        VariantBuildError: the model does not trace with torch.fx (CLE needs its graph).
    """
    try:
        gm = symbolic_trace(copy.deepcopy(model).float().eval())
    except Exception as exc:  # noqa: BLE001 — any tracing failure means CLE cannot read the graph
        raise VariantBuildError(
            f"recovery 'cle' needs a torch.fx-traceable model ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    stats = _fold_batchnorms(gm)
    pairs, skipped = _find_pairs(gm)
    rounds = _equalize_pairs(gm, pairs, stats) if pairs else 0
    absorbed = _absorb_biases(gm, pairs, stats) if absorb_bias else 0
    gm.recompile()
    meta = {
        "recovery": "cle",
        "cle": {
            "method": "cross-layer equalization + bias absorption (Nagel et al. 2019), on the float model",
            "batchnorms_folded": len(stats),
            "pairs_equalized": [f"{p.first} → {p.second}" for p in pairs],
            "rounds": rounds,
            "biases_absorbed": absorbed,
            "pairs_skipped": skipped,
        },
    }
    return EqualizedModel(gm.eval(), meta)


def recovered_parent(
    model: nn.Module | None, ctx: BuildContext, precision: str = "int8", kind: str | None = None
) -> tuple[nn.Module | None, BuildContext, dict[str, Any]]:
    """The float parent a quantized build starts from under the point's recovery, its build context and the
    metadata the variant records. ``cle`` gives the equalized parent (made once per parent) under its own parent key,
    so its ONNX export, calibration and sensitivity results are its own; the other recoveries act inside the
    precision's build hooks and leave the parent as it is. A context already ``recovered`` is returned as it is.

    Raises:
        VariantBuildError: a recovery that ``precision`` on a backend of ``kind`` does not build (named).
    """
    recovery = ctx.quantization.recovery_method
    if ctx.recovered:
        return model, ctx, {}
    if recovery in NOT_BUILT:
        raise VariantBuildError(f"recovery {recovery!r} is not built yet: {NOT_BUILT[recovery]}")
    if recovery == "bias_correction" and (precision, kind) not in BIAS_CORRECTED:
        raise VariantBuildError(
            f"recovery 'bias_correction' is NNCF's, built for {sorted(BIAS_CORRECTED)} (precision, backend kind); "
            f"not for {precision!r} on a {kind!r} backend"
        )
    if recovery != "cle":
        return model, dataclasses.replace(ctx, recovered=True), {"recovery": recovery}
    if model is None:
        raise VariantBuildError(
            "recovery 'cle' equalizes the PyTorch model and this model has none (an ONNX file that does not convert)"
        )
    slot = ("cle", ctx.parent_key)
    if slot not in ctx.cache:
        ctx.cache[slot] = equalize(model)
    found: EqualizedModel = ctx.cache[slot]
    return (
        found.model,
        dataclasses.replace(ctx, parent_key=f"{ctx.parent_key}-cle", recovered=True),
        dict(found.metadata),
    )


def channel_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """Per output channel, the largest |weight| (what per-tensor int8 must share one scale over)."""
    return conv.weight.detach().abs().amax(dim=tuple(range(1, conv.weight.dim())))


def range_spread(model: nn.Module) -> float:
    """The largest ratio of per-output-channel weight ranges within one conv of ``model`` (log10: orders of
    magnitude); what per-tensor int8 loses to."""
    worst = 0.0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            r = channel_ranges(m)
            r = r[r > 0]
            if len(r) > 1:
                worst = max(worst, math.log10(float(r.max() / r.min())))
    return worst
