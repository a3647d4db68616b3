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
import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node, symbolic_trace
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..inputs import train_model
from .base import BuildContext, VariantBuildError
from .calibration import converged_calibration
from .onnx_tools import fp32_onnx_path

__all__ = ["EqualizedModel", "equalize", "recovered_parent"]

# Activations f with f(x / s) = f(x) / s for s > 0: a scale moves through them unchanged.
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.Identity)
_HOMOGENEOUS_FUNCTIONS = (torch.relu, torch.nn.functional.relu)
QAT_MAX_BATCH = 1 << 14  # the largest batch the QAT graph is exported for (training and calibration batches)
CLE_ITERATIONS = 50  # a chain's pairs are equalized in turn until the scales stop changing (3-10 rounds here)
# Recoveries the config accepts whose builds are not here yet: their points are error rows saying so, never a
# plain int8 build under their name.
NOT_BUILT: dict[str, str] = {}
# (precision, backend kind) whose builds apply NNCF's bias correction (``bias_correction``): ORT's int8 from NNCF's
# ONNX quantizer, OpenVINO's from nncf.quantize on the IR. torch.ao FX and ExecuTorch have none here.
BIAS_CORRECTED = {("int8", "onnx"), ("int8", "openvino")}
# (precision, backend kind) that run a QAT'd model's int8 kernels: ExecuTorch lowers the converted PT2E graph to
# XNNPACK's int8 kernels.
QAT_BUILDS = {("int8", "executorch")}
QAT_LEARNING_RATE_FACTOR = 0.1  # QAT fine-tunes a trained model: a tenth of the study's training step size
BIAS_ABSORPTION_SIGMAS = 3.0  # the paper's c = max(0, beta - 3 gamma): what an activation almost never falls under


@dataclass(frozen=True)
class EqualizedModel:
    """A recovered parent (the float model after cross-layer equalization, or the converted QAT model) and what
    was done to it (``metadata`` for the variant)."""

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
    if recovery == "qat":
        return _qat_parent(model, ctx, precision, kind)
    if recovery != "cle":
        return model, _calibrated(model, dataclasses.replace(ctx, recovered=True)), {"recovery": recovery}
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
        _calibrated(found.model, dataclasses.replace(ctx, parent_key=f"{ctx.parent_key}-cle", recovered=True)),
        dict(found.metadata),
    )


def _calibrated(model: nn.Module | None, ctx: BuildContext) -> BuildContext:
    """``ctx`` with the calibration samples ``model``'s ranges need (``calibration.converged_calibration``)."""
    return converged_calibration(model, ctx, lambda: fp32_onnx_path(model, ctx))


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


def _qat_parent(
    model: nn.Module | None, ctx: BuildContext, precision: str, kind: str | None
) -> tuple[nn.Module | None, BuildContext, dict[str, Any]]:
    """The QAT'd, converted PT2E int8 module of the parent (trained once per parent and option set) as the model a
    ``QAT_BUILDS`` backend lowers, under its own parent key."""
    if (precision, kind) not in QAT_BUILDS:
        raise VariantBuildError(
            f"recovery 'qat' (PT2E) is built for {sorted(QAT_BUILDS)} (precision, backend kind); not for {precision!r} "
            f"on a {kind!r} backend"
        )
    if model is None:
        raise VariantBuildError("recovery 'qat' trains the PyTorch model and this model has none")
    if ctx.train_loader is None:
        raise VariantBuildError("recovery 'qat' needs a training split (x_train, y_train) to train on")
    q = ctx.quantization
    slot = ("qat", ctx.parent_key, q.label)
    if slot not in ctx.cache:
        start = _qat_start(model, ctx)
        fresh = quantization_aware_training(start.model, ctx)
        fresh.metadata["qat"]["starts_from"] = start.metadata
        ctx.cache[slot] = fresh
    trained: EqualizedModel = ctx.cache[slot]
    tag = hashlib.sha256(q.model_dump_json().encode()).hexdigest()[:8]
    return (
        trained.model,
        dataclasses.replace(ctx, parent_key=f"{ctx.parent_key}-qat{tag}", recovered=True),
        dict(trained.metadata),
    )


def _qat_start(model: nn.Module, ctx: BuildContext) -> EqualizedModel:
    """The float model QAT trains: the parent after cross-layer equalization (the same float function, with
    channel ranges one int8 scale can hold: AIMET's QAT guide equalizes first too; from the spread per-tensor
    case QAT alone reached 44-69 % of the fp32 98 % in 2-4 epochs), or the parent as it is when it does not
    trace for CLE or has no pair to equalize (the metadata says which)."""
    slot = ("cle", ctx.parent_key)
    try:
        found: EqualizedModel = ctx.cache[slot] if slot in ctx.cache else equalize(model)
    except VariantBuildError as exc:
        return EqualizedModel(model, {"cle": f"not applied: {exc}"})
    ctx.cache[slot] = found
    if not found.metadata["cle"]["pairs_equalized"]:
        return EqualizedModel(model, {"cle": "not applied: no conv pair to equalize"})
    return EqualizedModel(
        found.model, {"cle": "applied", "pairs_equalized": len(found.metadata["cle"]["pairs_equalized"])}
    )


def quantization_aware_training(model: nn.Module, ctx: BuildContext) -> EqualizedModel:
    """PT2E quantization-aware training (torchao's ``prepare_qat_pt2e`` with ExecuTorch's XNNPACK quantizer, per
    channel or per tensor as the point asks) for ``qat_epochs`` on ``ctx.train_loader`` with the study's loss, the
    study's training loop (``train_model``, seeded) at a tenth of its learning rate; returns the converted int8 PT2E
    module (quantize/dequantize around each int8 op, as ExecuTorch lowers it) and the training's metadata."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    q = ctx.quantization
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=q.channelwise, is_qat=True)
    )
    batch = torch.export.Dim("batch", min=1, max=QAT_MAX_BATCH)
    lr = ctx.learning_rate * QAT_LEARNING_RATE_FACTOR
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(ctx.seed)
        graph = torch.export.export(
            copy.deepcopy(model).float().eval(), (ctx.example_input[:2].float(),), dynamic_shapes=({0: batch},)
        ).module()
        prepared = prepare_qat_pt2e(graph, quantizer)
        allow_exported_model_train_eval(prepared)  # train_model's train()/eval() switch its BN and fake-quant modes
        result = train_model(
            prepared, ctx.train_loader, epochs=q.qat_epochs, learning_rate=lr, seed=ctx.seed, loss=ctx.loss
        )
        converted = convert_pt2e(prepared)
    meta = {
        "recovery": "qat",
        "qat": {
            "method": "PT2E quantization-aware training (torchao prepare_qat_pt2e, XNNPACKQuantizer)",
            "epochs": q.qat_epochs,
            "learning_rate": lr,
            "per_channel": q.channelwise,
            "losses": [round(v, 6) for v in result.epoch_losses],
            "train_s": round(time.perf_counter() - start, 3),
            **_scales_digest(converted),
        },
    }
    return EqualizedModel(converted, meta)


def _scales_digest(module: nn.Module) -> dict[str, Any]:
    """How many quantize ops the converted PT2E graph holds and the SHA-256 of every scale and zero point they
    read, in graph order (what a re-run of the same config must reproduce exactly)."""
    if not isinstance(module, GraphModule):
        return {}
    digest, count = hashlib.sha256(), 0
    for node in module.graph.nodes:
        if node.op != "call_function" or "quantize_per" not in str(node.target) or "dequantize" in str(node.target):
            continue
        count += 1
        for arg in node.args[1:3]:
            value = getattr(module, str(arg.target)) if isinstance(arg, Node) and arg.op == "get_attr" else arg
            digest.update(repr(value.tolist() if isinstance(value, torch.Tensor) else value).encode())
    return {"quantize_ops": count, "scales_sha256": digest.hexdigest()}
